"""``write_jsonl`` and ``alignlab data convert``: every record kind survives a round trip.

Each record sets ``source``: the loader fills an unset source with the file's stem, so only a
record that names its source reloads equal to itself.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from alignlab.cli import main
from alignlab.data.convert import to_row, write_jsonl
from alignlab.data.load import load_records
from alignlab.data.records import (
    Feedback,
    Judged,
    PreferencePair,
    RankedResponses,
    Record,
    SFTExample,
)

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}]

RECORDS: list[Record] = [
    PreferencePair(CHAT, "Paris.", "Lyon.", margin=2, rater_share=0.75,
                   chosen_token_weights=[1, 0.5], rejected_token_weights=(0.25,), source="mine", id=7),
    PreferencePair("2+2?", "4", "5", source="mine"),
    Feedback(CHAT, "Paris.", True, source="mine", id="f1"),
    Feedback("2+2?", "5", False, source="mine", id="f2"),
    RankedResponses("Pick one.", ["a", "b", "c"], scores=[3, 1, 2.5], source="mine", id="r1"),
    RankedResponses(CHAT, ["Paris.", "Lyon."], ranks=[1, 2], source="mine", id="r2"),
    Judged("Write a haiku.", "Leaves fall.", "Too short for a haiku.", score=2, source="mine", id="j1"),
    SFTExample(CHAT, [{"role": "assistant", "content": "Paris."}], source="mine", id="s1"),
    SFTExample("Say hi.", "Hi!", source="mine"),
]
JUDGED_WITHOUT_JUDGMENT = Judged("Write a haiku.", "Autumn moonlight", None, score=None,
                                 source="mine", id="j0")


def test_to_row_leaves_unset_fields_out() -> None:
    assert to_row(PreferencePair("2+2?", "4", "5", source="mine")) == {
        "prompt": "2+2?", "chosen": "4", "rejected": "5", "source": "mine",
    }
    assert to_row(RECORDS[0]) == {
        "prompt": CHAT,
        "chosen": [{"role": "assistant", "content": "Paris."}],
        "rejected": [{"role": "assistant", "content": "Lyon."}],
        "margin": 2.0, "rater_share": 0.75, "chosen_token_weights": [1.0, 0.5],
        "rejected_token_weights": [0.25], "source": "mine", "id": "7",
    }


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_each_record_kind_round_trips(tmp_path: Path, record: Record) -> None:
    path = tmp_path / "one.jsonl"
    assert write_jsonl([record], path) == 1
    assert load_records(path).records == [record]


def test_a_mixed_file_round_trips_in_order(tmp_path: Path) -> None:
    path = tmp_path / "all.jsonl"
    assert write_jsonl(RECORDS, path) == len(RECORDS) == 9
    assert len(path.read_text(encoding="utf-8").splitlines()) == 9
    result = load_records(path)
    assert result.records == RECORDS
    assert result.report.clean


def test_round_trip_through_the_convert_command(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "500")  # rich folds long paths at the default 80 columns
    source, output = tmp_path / "in.jsonl", tmp_path / "out" / "normalised.jsonl"
    write_jsonl(RECORDS, source)
    assert main(["data", "convert", str(source), str(output)]) == 0
    assert f"wrote 9 records to {output} (from 9 rows)" in capsys.readouterr().out
    assert load_records(output).records == RECORDS


def test_judged_without_judgment_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "judged.jsonl"
    write_jsonl([JUDGED_WITHOUT_JUDGMENT], path)
    assert load_records(path).records == [JUDGED_WITHOUT_JUDGMENT]


def test_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    write_jsonl(RECORDS, tmp_path / "out.jsonl")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


def failing(records: list[Record], after: int) -> Iterator[Record]:
    yield from records[:after]
    raise RuntimeError("source broke mid-way")


def test_failure_mid_iteration_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="mid-way"):
        write_jsonl(failing(RECORDS, 3), tmp_path / "out.jsonl")
    assert list(tmp_path.iterdir()) == []


def test_failure_mid_iteration_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    write_jsonl(RECORDS[:2], path)
    before = path.read_bytes()
    with pytest.raises(RuntimeError):
        write_jsonl(failing(RECORDS, 5), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_output_file_mode_follows_the_umask(tmp_path: Path) -> None:
    write_jsonl(RECORDS[:1], tmp_path / "out.jsonl")
    (tmp_path / "plain.jsonl").write_text("", encoding="utf-8")
    mode = os.stat(tmp_path / "out.jsonl").st_mode & 0o777
    assert mode == os.stat(tmp_path / "plain.jsonl").st_mode & 0o777
