"""``alignlab.data_tour`` end to end on its embedded data: exact outputs, and the same bytes twice."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console
from transformers import AutoTokenizer

from alignlab.data.load import load_records
from alignlab.data.records import Feedback, PreferencePair
from alignlab.data_tour import run_demo


def demo(out: Path) -> str:
    console = Console(file=io.StringIO(), width=500)
    assert run_demo(console, out=out) == 0
    return console.file.getvalue()  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("demo") / "run"
    return out, demo(out)


def test_summary_counts_the_three_broken_rows(run: tuple[Path, str]) -> None:
    out, _ = run
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    dpo = summary.pop("dpo")
    assert summary == {
        "records": 64,
        "skipped_in_broken_copy": {
            "malformed JSON": 1, "empty completion": 1, "identical chosen and rejected": 1,
        },
        "doctor_exit_code": 1,
    }
    # DPO starts at log 2 (policy = reference) and learns; margins against the untouched reference
    assert dpo["first_loss"] == pytest.approx(0.6931, abs=1e-3)
    assert dpo["last_loss"] < dpo["first_loss"] - 0.05
    assert dpo["eval_reward_accuracy"] > 0.5 and dpo["eval_margin"] > 0


def test_normalised_output_reloads_to_the_embedded_records(run: tuple[Path, str]) -> None:
    out, _ = run
    assert len((out / "normalised.jsonl").read_text(encoding="utf-8").splitlines()) == 64
    records = load_records(out / "normalised.jsonl").records
    assert len(records) == 64
    # 40 arithmetic pairs, 8 chat pairs about capitals, 16 thumbs up/down (2 per capital).
    assert sum(isinstance(r, PreferencePair) for r in records) == 48
    assert sum(isinstance(r, Feedback) for r in records) == 16
    originals = [r for name in ("pairs", "chat_pairs", "feedback")
                 for r in load_records(out / "data" / f"{name}.jsonl").records]
    assert records == originals


def test_saved_tokenizer_loads_with_auto_tokenizer(run: tuple[Path, str]) -> None:
    out, _ = run
    tokenizer = AutoTokenizer.from_pretrained(out / "tokenizer")
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == (
        "<|bos|>", "<|im_end|>", "<|pad|>")
    assert tokenizer("What is 2 plus 3?")["input_ids"][0] == tokenizer.bos_token_id
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert rendered == "<|bos|><|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_console_names_the_broken_line(run: tuple[Path, str]) -> None:
    out, text = run
    # The fourth line of broken.jsonl is cut off mid-write.
    assert f"DataError {out / 'data' / 'broken.jsonl'}:4: malformed JSON" in text
    assert 'on_error="skip": 7 of 10 rows kept' in text
    assert "verdict: findings (exit 1)" in text


def test_second_run_writes_identical_files(run: tuple[Path, str], tmp_path: Path) -> None:
    first, _ = run
    demo(tmp_path / "again")
    for name in ("summary.json", "normalised.jsonl", "data/broken.jsonl", "tokenizer/tokenizer.json"):
        assert (tmp_path / "again" / name).read_bytes() == (first / name).read_bytes(), name
