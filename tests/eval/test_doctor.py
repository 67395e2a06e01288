"""The data doctor (``check_data``) on small files written by the tests: exact counts per finding.

Token counts rely on the session tokenizer of ``tests/conftest.py``: its corpus is lower case, so
an upper-case text like ``"KKK"`` is one token per letter, and the tokenizer adds BOS to a prompt.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from alignlab.eval.doctor import DoctorReport, check_data
from alignlab.eval.doctor_view import to_json


def write_rows(path: Path, rows: list[Any]) -> Path:
    """One JSON object a line; a ``str`` row is written verbatim (a malformed line)."""
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def counts(report: DoctorReport) -> dict[str, int]:
    return {finding.name: finding.count for finding in report.findings}


def balanced_pairs(n: int = 4) -> list[dict[str, str]]:
    """Distinct pairs; chosen (6 chars) is longer than rejected (4 chars) in exactly half."""
    return [
        {"prompt": f"question number {i}?", "chosen": "a" * (6 if i % 2 else 4),
         "rejected": "b" * (4 if i % 2 else 6)}
        for i in range(n)
    ]


def test_clean_file_has_exit_code_0_and_no_findings(tmp_path: Path) -> None:
    report = check_data(str(write_rows(tmp_path / "clean.jsonl", balanced_pairs())))
    assert report.fatal is None
    assert report.exit_code == 0
    assert counts(report) == {"duplicate pairs": 0, "near-identical chosen and rejected": 0}
    assert report.load is not None
    assert (report.load.rows, report.load.records) == (4, 4)
    assert report.length_unit == "chars"
    # "question number 0?" is 18 characters, every prompt is.
    assert report.lengths["prompt"] == {"n": 4, "min": 18, "median": 18, "mean": 18.0, "p95": 18,
                                        "max": 18}
    assert report.lengths["chosen/completion"]["min"] == 4
    assert report.lengths["chosen/completion"]["max"] == 6
    assert report.length_bias == {"pairs": 4, "chosen_longer": 0.5, "mean_difference": 0.0}


def test_each_problem_is_counted_under_its_finding(tmp_path: Path) -> None:
    good = balanced_pairs(4)
    rows: list[Any] = [
        *good,
        '{"prompt": "cut off", "chosen": ',  # (a) malformed JSON
        {"prompt": "Empty?", "chosen": "", "rejected": "something"},  # (b) empty completion
        good[0],  # (c) the first pair again
        {"prompt": "Case?", "chosen": "Yes, it is.", "rejected": "yes it is"},  # (d) near-identical
        {"prompt": "Same?", "chosen": "same", "rejected": "same"},  # identical: counted, not fatal
    ]
    report = check_data(str(write_rows(tmp_path / "dirty.jsonl", rows)))
    assert report.fatal is None
    assert report.exit_code == 1
    assert counts(report) == {
        "error: identical chosen and rejected": 1,
        "error: malformed JSON": 1,
        "empty completion": 1,
        "duplicate pairs": 1,
        "near-identical chosen and rejected": 1,
    }
    assert report.load is not None
    assert (report.load.rows, report.load.records) == (9, 7)
    examples = {finding.name: finding.examples for finding in report.findings}
    assert examples["error: malformed JSON"][0].startswith(f"{tmp_path / 'dirty.jsonl'}:5: ")
    assert examples["near-identical chosen and rejected"] == [
        f"{tmp_path / 'dirty.jsonl'}:8: 'Yes, it is.' vs 'yes it is'"
    ]


def test_a_pair_three_times_counts_two_duplicates_ignoring_case(tmp_path: Path) -> None:
    pair = {"prompt": "Hi?", "chosen": "Hello there.", "rejected": "Go away."}
    shouted = {"prompt": "HI", "chosen": "HELLO THERE", "rejected": "go away"}
    report = check_data(str(write_rows(tmp_path / "dup.jsonl", [pair, pair, shouted])))
    assert counts(report)["duplicate pairs"] == 2
    assert report.exit_code == 1


def test_identical_pair_in_user_data_is_a_finding_not_fatal(tmp_path: Path) -> None:
    rows = [*balanced_pairs(2), {"prompt": "Same?", "chosen": "same", "rejected": "same"}]
    report = check_data(str(write_rows(tmp_path / "same.jsonl", rows)))
    assert report.fatal is None
    assert counts(report)["error: identical chosen and rejected"] == 1
    assert report.exit_code == 1


@pytest.mark.parametrize(
    ("longer", "finding"),
    [(8, True), (7, True), (6, False), (5, False), (4, False), (3, True), (2, True)],
)
def test_length_bias_beyond_60_or_below_40_percent(tmp_path: Path, longer: int, finding: bool) -> None:
    """10 pairs, chosen 6 chars vs 4 in ``longer`` of them, 4 vs 6 in the rest.

    chosen_longer = longer / 10; mean difference = (2·longer − 2·(10 − longer)) / 10.
    """
    rows = [
        {"prompt": f"question number {i}?", "chosen": "a" * (6 if i < longer else 4),
         "rejected": "b" * (4 if i < longer else 6)}
        for i in range(10)
    ]
    report = check_data(str(write_rows(tmp_path / "bias.jsonl", rows)))
    assert report.length_bias == {
        "pairs": 10, "chosen_longer": longer / 10, "mean_difference": (4 * longer - 20) / 10,
    }
    assert counts(report).get("length bias") == (10 if finding else None)
    assert report.exit_code == (1 if finding else 0)


def test_length_bias_leaves_ties_out_of_the_share(tmp_path: Path) -> None:
    # 4 longer, 2 shorter, 4 of equal length: chosen is longer in 4 of the 6 decided pairs.
    sizes = [(6, 4)] * 4 + [(4, 6)] * 2 + [(5, 5)] * 4
    rows = [{"prompt": f"question number {i}?", "chosen": "a" * c, "rejected": "b" * r}
            for i, (c, r) in enumerate(sizes)]
    report = check_data(str(write_rows(tmp_path / "ties.jsonl", rows)))
    assert report.length_bias["chosen_longer"] == 4 / 6
    assert report.length_bias["mean_difference"] == 0.4  # (4·2 − 2·2) / 10
    assert counts(report)["length bias"] == 10


TOKEN_ROWS = [
    # prompt BOS+KK = 3 tokens; room 8 − 3 = 5 < 7 (6 Z + EOS): chosen is cut.
    {"prompt": "KK", "chosen": "ZZZZZZ", "rejected": "YY"},
    # prompt BOS + 8 K = 9 tokens >= max_length 8: no room, the record is dropped.
    {"prompt": "KKKKKKKK", "chosen": "ZZZ", "rejected": "Y"},
    # the completion carries its own EOS.
    {"prompt": "K", "chosen": "ZZ<|im_end|>", "rejected": "YYYY"},
    {"prompt": "KKK", "chosen": "Z", "rejected": "YY"},
]


def test_tokenizer_findings_count_truncation_drops_and_eos(tmp_path: Path, bpe_tokenizer: Any) -> None:
    path = write_rows(tmp_path / "tokens.jsonl", TOKEN_ROWS)
    report = check_data(str(path), tokenizer=bpe_tokenizer, max_length=8)
    assert report.length_unit == "tokens"
    assert counts(report) == {
        "duplicate pairs": 0,
        "near-identical chosen and rejected": 0,
        "completions cut by truncation": 1,
        "records dropped as over-long": 1,
        "prompts truncated": 0,
        "empty completions (tokens)": 0,
        "EOS already in text": 1,
        "BOS already in text": 0,
    }
    assert report.exit_code == 1
    # Kept prompts: BOS+K, BOS+KK, BOS+KKK; the dropped one is not measured.
    assert report.lengths["prompt"] == {"n": 3, "min": 2, "median": 3, "mean": 3.0, "p95": 4, "max": 4}
    # chosen: ZZZZZ (cut to the room of 5, no EOS), ZZ+EOS (the text's EOS kept once), Z+EOS.
    assert (report.lengths["chosen/completion"]["min"], report.lengths["chosen/completion"]["max"]) == (2, 5)
    # rejected: YY+EOS, YYYY+EOS, YY+EOS.
    assert report.lengths["rejected"]["max"] == 5
    assert report.lengths["rejected"]["median"] == 3
    # Bias is measured on the raw texts in tokens (no BOS/EOS added): +4, +2, −1 (3 vs 4), −1.
    assert report.length_bias == {"pairs": 4, "chosen_longer": 0.5, "mean_difference": 1.0}


def test_tokenizer_clean_file_has_no_findings(tmp_path: Path, bpe_tokenizer: Any) -> None:
    path = write_rows(tmp_path / "clean.jsonl", balanced_pairs())
    report = check_data(str(path), tokenizer=bpe_tokenizer, max_length=512)
    assert report.exit_code == 0
    assert len(report.findings) == 8
    assert all(finding.count == 0 for finding in report.findings)


def test_tokenizer_counts_empty_completion_and_bos_in_text(tmp_path: Path, bpe_tokenizer: Any) -> None:
    rows = [
        {"prompt": "KK", "chosen": "", "rejected": "YY"},
        {"prompt": "<|bos|>KK", "chosen": "ZZ", "rejected": "Y"},
    ]
    report = check_data(str(write_rows(tmp_path / "x.jsonl", rows)), tokenizer=bpe_tokenizer)
    found = counts(report)
    assert found["empty completion"] == 1  # the loader's warning (row kept)
    assert found["empty completions (tokens)"] == 1  # only the EOS token
    assert found["BOS already in text"] == 1
    # BOS once in front either way: both prompts are BOS K K.
    assert report.lengths["prompt"]["min"] == report.lengths["prompt"]["max"] == 3


def test_missing_file_is_fatal_with_exit_code_2(tmp_path: Path) -> None:
    report = check_data(str(tmp_path / "nowhere.jsonl"))
    assert report.exit_code == 2
    assert report.fatal is not None and "file not found" in report.fatal
    assert report.load is None and report.findings == []
    assert to_json(report)["exit_code"] == 2


def test_file_that_is_not_gzip_is_fatal(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl.gz"
    path.write_text(json.dumps(balanced_pairs(1)[0]) + "\n", encoding="utf-8")
    report = check_data(str(path))
    assert report.exit_code == 2
    assert report.fatal is not None and "not a valid gzip file" in report.fatal


def test_real_gzip_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl.gz"
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in balanced_pairs()).encode()))
    report = check_data(str(path))
    assert report.exit_code == 0
    assert report.load is not None and report.load.records == 4


@pytest.mark.parametrize("row", [
    {"prompt": "Hi?", "completion": "", "label": False},
    {"prompt": "Hi?", "completion": ""},
])
def test_empty_unpaired_or_sft_completion_is_reported(tmp_path: Path, row: dict) -> None:
    report = check_data(str(write_rows(tmp_path / "x.jsonl", [row])))
    assert counts(report)["empty completion"] == 1
    assert report.lengths["chosen/completion"]["max"] == 0
