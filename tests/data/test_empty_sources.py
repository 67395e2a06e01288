"""Sources that give no records: an empty file is an error naming it, never zero records in silence.

Two cases stay apart: a source with no rows at all (reason "empty file", or "empty folder" for a
folder with no data files in it), and one whose rows were all skipped or dropped (reason "all rows
dropped", with the count per cause). The data doctor reports both as the finding "no records"
(exit 1), and ``alignlab train`` stops on them before it loads a model.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from alignlab.cli import main
from alignlab.data import load_records
from alignlab.errors import DataError
from alignlab.eval.doctor import check_data
from alignlab.eval.doctor_view import to_json
from alignlab.models.tiny import init_tiny_model

GOOD = {"prompt": "2+2?", "chosen": "4", "rejected": "5"}


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "500")  # rich folds long lines at COLUMNS


def write_parquet_without_rows(path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([(name, pa.string()) for name in GOOD])
    pq.write_table(pa.Table.from_pylist([], schema=schema), path)


def write_folder_of_empty_files(path: Path) -> None:
    path.mkdir()
    (path / "a.jsonl").write_bytes(b"")
    (path / "b.csv").write_text("prompt,chosen,rejected\n", encoding="utf-8")


def writer(name: str, content: str | bytes) -> tuple[str, Callable[[Path], None]]:
    def write(path: Path) -> None:
        path.write_bytes(content.encode() if isinstance(content, str) else content)

    return name, write


# Each source holds no row at all: (file name, how to write it).
EMPTY_SOURCES = [
    writer("zero_bytes.jsonl", b""),
    writer("blank_lines.jsonl", "\n   \n\t\n\n"),
    writer("zero_bytes.json", b""),
    writer("empty_array.json", "[]\n"),
    writer("empty_data_array.json", '{"data": []}'),
    writer("header_only.csv", "prompt,chosen,rejected\n"),
    writer("zero_bytes.csv", b""),
    ("zero_rows.parquet", write_parquet_without_rows),
    ("folder_of_empty_files", write_folder_of_empty_files),
]
EMPTY_IDS = [name for name, _ in EMPTY_SOURCES]


@pytest.fixture(params=EMPTY_SOURCES, ids=EMPTY_IDS)
def empty_source(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    name, write = request.param
    path = tmp_path / name
    write(path)
    return path


def all_bad_rows(path: Path) -> Path:
    """Three rows, none usable: two malformed JSON lines and one empty prompt."""
    lines = ['{"prompt": "cut off', json.dumps({**GOOD, "prompt": " "}), '{"chosen": ']
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def pandalm_tie(idx: int) -> dict:
    """A PandaLM row whose three raters give one vote each: dropped by the format's rule."""
    return {"idx": idx, "instruction": "Add.", "input": "2 and 3", "response1": "5", "response2": "6",
            "annotator1": 1, "annotator2": 2, "annotator3": 0}


# ---- load_records ------------------------------------------------------------------------------


def test_empty_source_raises_an_error_naming_it(empty_source: Path) -> None:
    with pytest.raises(DataError) as info:
        load_records(empty_source)
    error = info.value
    assert error.reason == "empty file"
    assert error.file == str(empty_source)
    assert str(error).startswith(f"{empty_source}: ")
    assert "empty" in error.message and "no rows" in error.message
    assert "check the path" in error.hint and "0 rows" in error.hint


def test_empty_source_raises_even_when_bad_rows_are_skipped(empty_source: Path) -> None:
    with pytest.raises(DataError, match="no rows") as info:
        load_records(empty_source, on_error="skip")
    assert info.value.reason == "empty file"


def test_folder_without_data_files_is_an_empty_folder(tmp_path: Path) -> None:
    folder = tmp_path / "nothing"
    folder.mkdir()
    (folder / "README.md").write_text("no data here\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_records(folder)
    assert info.value.reason == "empty folder"
    assert info.value.file == str(folder)
    assert "no data files" in info.value.message


def test_every_row_skipped_is_an_error_counting_each_reason(tmp_path: Path) -> None:
    path = all_bad_rows(tmp_path / "bad.jsonl")
    with pytest.raises(DataError) as info:
        load_records(path, on_error="skip")
    error = info.value
    assert error.reason == "all rows dropped"
    assert error.file == str(path)
    assert "no records" in error.message and "all 3 rows" in error.message
    assert "malformed JSON: 2" in error.message and "empty text: 1" in error.message
    # the hint points at the first bad row, so that the user can open it
    assert f"{path}:1: malformed JSON" in error.hint


def test_every_row_dropped_by_the_format_rule_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "ties.jsonl"
    path.write_text("".join(json.dumps(pandalm_tie(i)) + "\n" for i in range(2)), encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_records(path)
    error = info.value
    assert error.reason == "all rows dropped"
    assert "all 2 rows" in error.message and "tie between raters: 2" in error.message


# ---- the data doctor ---------------------------------------------------------------------------


def no_records(report_json: dict) -> list[dict]:
    return [f for f in report_json["findings"] if f["name"] == "no records"]


def test_doctor_reports_an_empty_source_as_no_records(empty_source: Path) -> None:
    report = check_data(str(empty_source))
    assert report.fatal is None
    assert report.exit_code == 1
    assert report.load is not None and (report.load.rows, report.load.records) == (0, 0)
    [finding] = no_records(to_json(report))
    assert finding["count"] == 1 and "empty" in finding["detail"]


def test_doctor_with_a_tokenizer_reports_an_empty_source(tmp_path: Path, bpe_tokenizer) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    report = check_data(str(path), tokenizer=bpe_tokenizer, max_length=64)
    assert report.exit_code == 1
    assert no_records(to_json(report))


def test_doctor_reports_all_rows_skipped_with_their_reasons(tmp_path: Path) -> None:
    report = check_data(str(all_bad_rows(tmp_path / "bad.jsonl")))
    assert report.exit_code == 1
    found = {finding.name: finding.count for finding in report.findings}
    assert found["error: malformed JSON"] == 2 and found["error: empty text"] == 1
    [finding] = no_records(to_json(report))
    assert "all 3 rows" in finding["detail"]


def test_doctor_reports_a_folder_without_data_files(tmp_path: Path) -> None:
    folder = tmp_path / "nothing"
    folder.mkdir()
    report = check_data(str(folder))
    assert report.exit_code == 1
    assert no_records(to_json(report))


def test_cli_data_check_on_an_empty_source_exits_1(empty_source: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    out_json = tmp_path / "report.json"
    assert main(["data", "check", str(empty_source), "--json", str(out_json)]) == 1
    out = capsys.readouterr().out
    assert "no records" in out
    assert "verdict: clean" not in out
    assert "verdict: no records (exit 1)" in out
    data = json.loads(out_json.read_text(encoding="utf-8"))
    assert data["exit_code"] == 1
    assert data["fatal"] is None
    assert no_records(data)


def test_cli_data_check_on_all_rows_skipped_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = all_bad_rows(tmp_path / "bad.jsonl")
    assert main(["data", "check", str(path)]) == 1
    out = capsys.readouterr().out
    assert "no records" in out and "all 3 rows" in out
    assert "verdict: no records (exit 1)" in out


# ---- training ----------------------------------------------------------------------------------

TRAIN_CONFIG = """\
data:
  path: {data}
tokenize:
  max_length: 64
model:
  name_or_path: {model}
train:
  loss: dpo
  loss_kwargs: {{beta: 0.1}}
  reference: copy
  batch_size: 2
  max_steps: 1
  precision: fp32
  device: cpu
  output_dir: {out}
"""


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return init_tiny_model(tmp_path_factory.mktemp("tiny") / "model", hidden_size=32, intermediate=64, heads=4)


@pytest.fixture
def nothing_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a model or tokenizer fails the test: an empty file must stop the run first."""
    import alignlab.models as models
    import alignlab.train.run as run  # imported before the patch, so that its own names stay real

    def refuse(*args, **kwargs):
        raise AssertionError("a model or tokenizer was loaded before the empty file was reported")

    for name in ("load_policy", "load_reward_model", "load_tokenizer"):
        monkeypatch.setattr(models, name, refuse)
        if hasattr(run, name):  # run.py imported the names: patch them where they are called
            monkeypatch.setattr(run, name, refuse)


def test_train_on_an_empty_file_names_it_before_loading_a_model(
    tmp_path: Path, tiny_model: Path, nothing_loads: None, capsys: pytest.CaptureFixture
) -> None:
    data = tmp_path / "empty.jsonl"
    data.write_bytes(b"")
    config = tmp_path / "run.yaml"
    config.write_text(TRAIN_CONFIG.format(data=data, model=tiny_model, out=tmp_path / "run"), encoding="utf-8")
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err
    assert str(data) in err and "empty file" in err
    assert "after tokenization" not in err
