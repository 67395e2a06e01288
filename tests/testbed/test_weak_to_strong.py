"""The weak_to_strong suite's protocol: gold pairs, weak labels, the three reward models, the CLI.

Example: ``pytest tests/testbed/test_weak_to_strong.py``
"""

from __future__ import annotations

import json
import re

import pytest
from rich.console import Console

from alignlab.cli import main
from alignlab.data.load import load_records
from alignlab.errors import AlignlabError, ConfigError, DataError
from alignlab.eval.suites import get_suite
from alignlab.testbed import weak_to_strong as w2s
from alignlab.testbed.world import all_prompts, true_reward

TINY = ["--option", "seeds=1", "--option", "pairs=48", "--option", "steps=4", "--option", "weak_sft_steps=3",
        "--option", "strong_sft_steps=4", "--option", "resamples=50"]


def _prompt_of(chat):
    text = chat[0]["content"]
    return next(p for p in all_prompts() if p.text == text)


@pytest.mark.parametrize("task", ["knowledge", "all"])
def test_gold_pairs_are_labelled_by_the_true_reward(task):
    pairs, ties = w2s.gold_pairs(200, seed=3, task=task)
    assert len(pairs) == 200 and ties >= 0
    for pair in pairs:
        prompt = _prompt_of(pair.prompt)
        assert true_reward(prompt, w2s.plain(pair.chosen)) > true_reward(prompt, w2s.plain(pair.rejected))
    assert [p.chosen for p in w2s.gold_pairs(200, seed=3, task=task)[0]] == [p.chosen for p in pairs]  # seeded


def test_knowledge_pairs_differ_only_in_the_answer():
    pairs, ties = w2s.gold_pairs(100, seed=0, task="knowledge")
    assert ties == 0
    for pair in pairs:
        prompt = _prompt_of(pair.prompt)
        chosen, rejected = w2s.plain(pair.chosen).split(), w2s.plain(pair.rejected).split()
        assert len(chosen) == len(rejected)
        differing = [(a, b) for a, b in zip(chosen, rejected, strict=True) if a != b]
        assert len(differing) == 1 and differing[0][0] == prompt.answer
    assert len({w2s.plain(p.chosen) == min(w2s.plain(p.chosen), w2s.plain(p.rejected)) for p in pairs}) == 2
    with pytest.raises(ValueError, match="unknown weak_to_strong task"):
        w2s.gold_pairs(3, 0, task="trivia")


class _Scorer:
    """A stand-in reward model: a function of the completion."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, prompts, completions, columns=None):
        return [self.fn(p, c) for p, c in zip(prompts, completions, strict=True)]


def test_protocol_wiring_with_known_scorers(tmp_path, monkeypatch):
    """Weak = prefers the longer response, student and ceiling = the true reward: the ceiling is
    right on every test pair, the weak model where the longer one is chosen, and the student's
    training file holds the transfer pairs flipped exactly where the weak model disagrees."""
    pairs, _ = w2s.gold_pairs(90, seed=0)
    trained = []

    def fake_reward_model(settings, out, name, base, data, seed, console, loss="bradley_terry", kwargs=None):
        trained.append((name, base, list(data)))
        assert (loss, kwargs or {}) == ("bradley_terry", {})
        if name.startswith("weak"):
            return _Scorer(lambda p, c: len(c))
        return _Scorer(lambda p, c: true_reward(_prompt_of(p), c))

    monkeypatch.setattr(w2s, "_reward_model", fake_reward_model)
    result = w2s.run_weak_to_strong(w2s.WeakToStrongSettings(seeds=2, resamples=100), tmp_path, Console(quiet=True),
                                    pairs=pairs, strong="STRONG", weak="WEAK")
    assert [(n, b) for n, b, _ in trained] == [("weak-0", "WEAK"), ("student-0", "STRONG"), ("ceiling-0", "STRONG"),
                                               ("weak-1", "WEAK"), ("student-1", "STRONG"), ("ceiling-1", "STRONG")]
    weak_train, transfer_weak, transfer_gold = trained[0][2], trained[1][2], trained[2][2]
    assert len(weak_train) == len(transfer_gold) == 30
    used = {p.id for p in weak_train} | {p.id for p in transfer_gold}
    test = [p for p in pairs if p.id not in used]
    assert len(test) == 30 and len(result.rows) == 30
    for gold, labelled in zip(transfer_gold, transfer_weak, strict=True):
        longer_chosen = len(w2s.plain(gold.chosen)) > len(w2s.plain(gold.rejected))
        assert (labelled.chosen, labelled.rejected) == ((gold.chosen, gold.rejected) if longer_chosen
                                                        else (gold.rejected, gold.chosen))
    def longer_is_chosen(pair):
        return len(w2s.plain(pair.chosen)) > len(w2s.plain(pair.rejected))

    weak_right = sum(map(longer_is_chosen, test)) / 30
    label_right = sum(map(longer_is_chosen, transfer_gold)) / 30
    assert result.metric("ceiling_accuracy").value == pytest.approx(1.0)
    assert result.metric("weak_accuracy").value == pytest.approx(weak_right)
    assert result.metric("student_accuracy").value == pytest.approx(1.0)
    assert result.metric("pgr").value == pytest.approx(1.0)
    assert result.metric("weak_label_accuracy").value == pytest.approx(label_right)
    assert result.metric("student_weak_agreement").value == pytest.approx(weak_right)


def test_the_confidence_loss_trains_the_student_only(tmp_path, monkeypatch):
    pairs, _ = w2s.gold_pairs(30, seed=0)
    losses = {}

    def fake_reward_model(settings, out, name, base, data, seed, console, loss="bradley_terry", kwargs=None):
        losses[name] = (loss, dict(kwargs or {}))
        return _Scorer(lambda p, c: len(c))

    monkeypatch.setattr(w2s, "_reward_model", fake_reward_model)
    settings = w2s.WeakToStrongSettings(seeds=1, resamples=10, steps=96, student_loss="bradley_terry_confidence",
                                        aux_coef=0.75)
    result = w2s.run_weak_to_strong(settings, tmp_path, Console(quiet=True), pairs=pairs, strong="S", weak="W")
    assert losses == {"weak-0": ("bradley_terry", {}), "ceiling-0": ("bradley_terry", {}),
                      "student-0": ("bradley_terry_confidence", {"aux_coef": 0.75, "warmup_steps": 10})}
    assert any("auxiliary confidence loss" in note for note in result.notes)
    with pytest.raises(ConfigError, match="student_loss must be one of"):
        w2s.WeakToStrongSettings(student_loss="mse")
    with pytest.raises(ConfigError, match="option aux_coef='abc' should be of type float"):
        w2s.WeakToStrongSettings(aux_coef="abc")
    with pytest.raises(ConfigError, match="option seeds=2.5 should be of type int"):
        w2s.WeakToStrongSettings(seeds=2.5)
    with pytest.raises(ConfigError, match=r"aux_coef must be in \[0, 1\]"):
        w2s.WeakToStrongSettings(aux_coef=2)


def test_a_real_tiny_run_through_the_cli(tmp_path, capsys):
    out = tmp_path / "w2s"
    assert main(["eval", "--suite", "weak_to_strong", "--out", str(out), *TINY]) == 0
    saved = json.loads((out / "weak_to_strong.json").read_text(encoding="utf-8"))
    metrics = {m["name"]: m for m in saved["metrics"]}
    for name in ("weak_accuracy", "student_accuracy", "ceiling_accuracy", "weak_label_accuracy"):
        assert 0.0 <= metrics[name]["value"] <= 1.0
    assert saved["inputs"]["settings"]["pairs"] == 48 and len(saved["rows"]) == 16
    assert len(load_records(out / "data" / "student-0.jsonl").records) == 16  # the middle third, all kept
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "pgr" in html and "Per training seed" in html
    assert (out / "runs" / "weak-base" / "model" / "weak_to_strong.json").is_file()
    assert json.loads((out / "runs" / "strong-base" / "model" / "config.json").read_text())["hidden_size"] == 64
    assert json.loads((out / "runs" / "weak-base" / "model" / "config.json").read_text())["hidden_size"] == 32


def _refused(capsys, args, match):
    assert main(["eval", "--suite", "weak_to_strong", *args]) != 0
    assert re.search(match, capsys.readouterr().err, re.S)


def test_cli_refusals(tmp_path, capsys):
    _refused(capsys, [], "needs a folder for them.*--out DIR")
    _refused(capsys, ["--out", str(tmp_path), "--option", "seed_count=2"], "no option 'seed_count'.*its options: .*seeds")
    _refused(capsys, ["--out", str(tmp_path), "--option", "seeds"], "not KEY=VALUE")
    items = tmp_path / "pairs.jsonl"
    items.write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\n', encoding="utf-8")
    _refused(capsys, ["--out", str(tmp_path), "--items", str(items)], "needs your own bases")
    assert not (tmp_path / "runs").exists()  # refused before anything trains


def test_responder_suites_take_their_run_options_and_refuse_others(tmp_path):
    from alignlab.cli import suite_options

    assert suite_options(get_suite("consistency"), ["scorer=lexical", "threshold=0.4"]) == {
        "scorer": "lexical", "threshold": 0.4}
    with pytest.raises(AlignlabError, match="no option 'scorrer'"):
        suite_options(get_suite("consistency"), ["scorrer=lexical"])


@pytest.mark.parametrize("line, field, message", [
    ('{"chosen": "a", "rejected": "b"}', "prompt", "missing field 'prompt'"),
    ('{"prompt": "q", "rejected": "b"}', "chosen", "missing field 'chosen'"),
    ('{"prompt": "q", "chosen": "a", "rejected": 3}', "rejected", "rejected"),
    ('{"prompt": "q", "chosen": "a", "rejected": "a"}', "rejected", "identical"),
    ('{"prompt": [{"content": "q"}], "chosen": "a", "rejected": "b"}', "prompt[0]", "role"),
])
def test_malformed_items_name_file_line_and_field(tmp_path, line, field, message):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"prompt": "fine", "chosen": "x", "rejected": "y"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=message) as raised:
        get_suite("weak_to_strong").items(path)
    assert raised.value.line == 2 and raised.value.field == field and str(path) in str(raised.value)


def test_user_items_parse_with_chats():
    suite = get_suite("weak_to_strong")
    items = suite.items(None)
    assert len(items) == w2s.WeakToStrongSettings.pairs
    assert items[0].prompt[0]["role"] == "user"


def test_an_exponent_without_a_dot_is_a_number_not_a_string():
    """YAML 1.1 reads 2e-5 as a string; --option takes it as the float it means."""
    from alignlab.cli import suite_options

    settings = suite_options(get_suite("weak_to_strong"), ["lr=2e-5", "seeds=1"])["settings"]
    assert settings.lr == 2e-5 and settings.seeds == 1
