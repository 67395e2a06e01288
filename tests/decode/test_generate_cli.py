"""`alignlab generate` as a user runs it, on a tiny model: every strategy writes one row per
prompt with its candidates, scores and cost; the same seed repeats the file; best-of-N pairs load
as preference data; a malformed prompt file, an unknown reward and a strategy without the
reward it needs are specific errors.

Example: ``pytest tests/decode/test_generate_cli.py``
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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
])
def test_every_strategy_writes_a_row_per_prompt(tiny: Path, prompts: Path, tmp_path: Path, steering: Path,
                                                strategy: str, extra: list[str], n: int) -> None:
    out = tmp_path / "out.jsonl"
    extra = [str(steering) if a == "STEERING" else a for a in extra]
    assert generate(tiny, prompts, out, "--strategy", strategy, "--n", str(n), *extra) == 0
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
        if scored and strategy in ("urial", "steer"):
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
