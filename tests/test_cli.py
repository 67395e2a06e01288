"""The ``alignlab`` command line, called in-process through ``alignlab.cli.main``.

Rich and argparse wrap at ``COLUMNS``; the tests set it so that no line is folded.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

import alignlab.data.formats  # noqa: F401  (registers the adapters in FORMATS)
from alignlab.cli import main
from alignlab.data.load import load_records
from alignlab.data.records import PreferencePair
from alignlab.registry import FORMATS


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "500")


def write_rows(path: Path, rows: list[Any]) -> Path:
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


CLEAN = [
    {"prompt": "question number 1?", "chosen": "aaaaaa", "rejected": "bbbb"},
    {"prompt": "question number 2?", "chosen": "aaaa", "rejected": "bbbbbb"},
]
DIRTY = [*CLEAN, '{"prompt": "cut off', {"prompt": "Case?", "chosen": "Yes.", "rejected": "yes"}]


def test_help_lists_the_commands(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("data", "config", "demo"):
        assert re.search(rf"^\s+{command}\s+\S", out, re.MULTILINE), command


def test_group_without_subcommand_prints_its_help(capsys: pytest.CaptureFixture) -> None:
    assert main(["data"]) == 2
    out = capsys.readouterr().out
    for command in ("check", "convert", "formats"):
        assert re.search(rf"^\s+{command}\s+\S", out, re.MULTILINE), command
    assert main([]) == 0


def test_formats_lists_every_registered_format(capsys: pytest.CaptureFixture) -> None:
    assert main(["data", "formats"]) == 0
    out = capsys.readouterr().out
    assert len(FORMATS.names()) == 14
    assert [name for name in FORMATS.names() if not re.search(rf"\b{name}\b", out)] == []


def test_formats_fit_an_80_column_pipe(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["data", "formats"]) == 0
    out = capsys.readouterr().out
    assert [name for name in FORMATS.names() if not re.search(rf"\b{name}\b", out)] == []


def test_config_show_applies_overrides(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("train:\n  lr: 5.0e-07\n  batch_size: 4\n", encoding="utf-8")
    assert main(["config", "show", str(config), "train.lr=1e-6"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "  lr: 1.0e-06" in lines
    assert "  batch_size: 4" in lines
    assert main(["config", "show", str(config)]) == 0
    assert "  lr: 5.0e-07" in capsys.readouterr().out.splitlines()


def test_config_unknown_key_returns_2_with_a_suggestion(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("train:\n  lr: 5.0e-07\n", encoding="utf-8")
    assert main(["config", "show", str(config), "train.lrr=1e-6"]) == 2
    captured = capsys.readouterr()
    assert "Did you mean 'train.lr'?" in captured.err
    assert captured.out == ""


def finding_count(out: str, name: str) -> int:
    """The count in the doctor's findings table row for ``name``."""
    match = re.search(rf"{re.escape(name)}\W+(\d+)\W", out)
    assert match, name
    return int(match.group(1))


def test_data_check_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    clean = write_rows(tmp_path / "clean.jsonl", CLEAN)
    dirty = write_rows(tmp_path / "dirty.jsonl", DIRTY)
    assert main(["data", "check", str(clean)]) == 0
    out = capsys.readouterr().out
    assert "rows read: 2   records: 2" in out
    assert "verdict: clean" in out

    assert main(["data", "check", str(dirty)]) == 1
    out = capsys.readouterr().out
    assert finding_count(out, "error: malformed JSON") == 1
    assert finding_count(out, "near-identical chosen and rejected") == 1
    assert finding_count(out, "duplicate pairs") == 0
    assert "verdict: findings (exit 1)" in out

    assert main(["data", "check", str(tmp_path / "missing.jsonl")]) == 2
    assert "unreadable:" in capsys.readouterr().out


def test_data_check_json_of_an_unreadable_file(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    assert main(["data", "check", str(tmp_path / "missing.jsonl"), "--json", str(report)]) == 2
    data = json.loads(report.read_text(encoding="utf-8"))
    assert data["exit_code"] == 2
    assert "file not found" in data["fatal"]
    assert data["load"] is None and data["findings"] == []


@pytest.mark.parametrize(("rows", "code"), [(CLEAN, 0), (DIRTY, 1)])
def test_data_check_json_of_a_readable_file(tmp_path: Path, rows: list[Any], code: int) -> None:
    source, report = write_rows(tmp_path / "data.jsonl", rows), tmp_path / "report.json"
    assert main(["data", "check", str(source), "--json", str(report)]) == code
    data = json.loads(report.read_text(encoding="utf-8"))
    assert data["exit_code"] == code
    assert data["load"]["formats"] == {"preference": len(rows) - (code == 1)}


def test_data_check_with_a_tokenizer_folder(
    tmp_path: Path, bpe_tokenizer_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    # BOS+KK = 3 tokens leaves 5 of max length 8 for ZZZZZZ+EOS (7): cut; YYY+EOS fills 8 − 4.
    rows = [{"prompt": "KK", "chosen": "ZZZZZZ", "rejected": "YY"},
            {"prompt": "KKK", "chosen": "Z", "rejected": "YYY"}]
    path = write_rows(tmp_path / "t.jsonl", rows)
    argv = ["data", "check", str(path), "--tokenizer", str(bpe_tokenizer_dir), "--max-length", "8"]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "lengths (tokens)" in out
    # prompt row: n 2, min 3, median 4 (3.5 shown rounded), mean 4, p95 4, max 4
    assert re.search(r"prompt\W+2\W+3\W+4\W+4\W+4\W+4\W", out)
    assert finding_count(out, "completions cut by truncation") == 1
    assert finding_count(out, "records dropped as over-long") == 0
    assert finding_count(out, "EOS already in text") == 0


def test_bad_map_entry_returns_2_with_a_hint(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write_rows(tmp_path / "clean.jsonl", CLEAN)
    assert main(["data", "check", str(path), "--map", "x"]) == 2
    err = capsys.readouterr().err
    assert "bad --map entry 'x'" in err
    assert "hint: write TARGET=SOURCE" in err


CUSTOM = [{"question": "2+2?", "response_a": "4", "response_b": "5", "annotator": "kim"},
          {"question": "3+3?", "response_a": "6", "response_b": "7", "annotator": "lee"}]
MAP = ["--map", "chosen=response_a", "rejected=response_b", "prompt=question"]


def test_map_reads_a_custom_schema(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = write_rows(tmp_path / "custom.jsonl", CUSTOM)
    assert main(["data", "check", str(source)]) == 1  # unmapped: every row an unknown format
    assert finding_count(capsys.readouterr().out, "error: unknown format") == 2

    assert main(["data", "check", str(source), *MAP]) == 0
    out = capsys.readouterr().out
    assert "rows read: 2   records: 2   formats: preference (2)" in out
    assert "ignored columns: annotator" in out

    output = tmp_path / "out.jsonl"
    assert main(["data", "convert", str(source), str(output), *MAP]) == 0
    assert load_records(output).records == [
        PreferencePair("2+2?", "4", "5", source="custom"),
        PreferencePair("3+3?", "6", "7", source="custom"),
    ]


def test_convert_of_an_unreadable_row_returns_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = write_rows(tmp_path / "dirty.jsonl", DIRTY)
    output = tmp_path / "out.jsonl"
    assert main(["data", "convert", str(source), str(output)]) == 2
    assert f"{source}:3: malformed JSON" in capsys.readouterr().err
    assert not output.exists()
    assert main(["data", "convert", str(source), str(output), "--on-error", "skip"]) == 0
    assert "skipped: malformed JSON: 1" in capsys.readouterr().out
    assert len(load_records(output).records) == 3


def test_losses_list_and_show(capsys: pytest.CaptureFixture) -> None:
    from alignlab.losses import LOSSES

    assert main(["losses", "list"]) == 0
    listing = capsys.readouterr().out
    for entry in LOSSES.entries():
        assert entry.name in listing
    assert main(["losses", "show", "ipo"]) == 0
    shown = capsys.readouterr().out
    assert "Azar et al. 2023" in shown and "Eq. 17" in shown and "beta=0.1" in shown
    assert main(["losses", "show", "dpoo"]) == 2
    assert "Did you mean 'dpo'?" in capsys.readouterr().err


def test_rewards_list_and_show(capsys: pytest.CaptureFixture) -> None:
    from alignlab.rewards import REWARDS

    assert main(["rewards", "list"]) == 0
    listing = capsys.readouterr().out
    for entry in REWARDS.entries():
        assert entry.name in listing
    assert main(["rewards", "show", "length_penalty"]) == 0
    shown = capsys.readouterr().out
    assert "arXiv 2503.14476" in shown and "buffer=0" in shown and "columns it needs: none" in shown
    assert main(["rewards", "show", "numeric_answr"]) == 2
    assert "Did you mean 'numeric_answer'?" in capsys.readouterr().err


def test_config_show_checks_loss_hyperparameters(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("train:\n  loss: dpo\n  loss_kwargs: {beta: 0.2}\n", encoding="utf-8")
    assert main(["config", "show", str(config)]) == 0
    assert "beta: 0.2" in capsys.readouterr().out
    assert main(["config", "show", str(config), "train.loss_kwargs.bta=1"]) == 2
    err = capsys.readouterr().err
    assert "unknown hyperparameter 'bta' for loss 'dpo'" in err and "Did you mean 'beta'?" in err
    assert main(["config", "show", str(config), "train.loss=ipo", "train.loss_kwargs.label_smoothing=0.1"]) == 2
    assert "label_smoothing" in capsys.readouterr().err
