"""Read raw rows from JSONL, JSON, Parquet, CSV, a saved `datasets` dataset or a hub id.

Example: ``for where, row in read_rows("pairs.jsonl"): ...`` (``where`` is a :class:`Location`)

Every row comes with its location (file and line, or row index) so that later errors can name it;
unreadable input raises :class:`DataError` at the exact line.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignlab.errors import DataError

FILE_KINDS = ("jsonl", "json", "csv", "parquet", "datasets", "hub")


@dataclass(frozen=True)
class Location:
    """Where a row came from: a file with a line number, or a row index."""

    file: str
    line: int | None = None
    row: int | None = None

    def __str__(self) -> str:
        return DataError("", file=self.file, line=self.line, row=self.row).where

    def error(self, message: str, field: str | None = None, hint: str = "", reason: str = "") -> DataError:
        return DataError(
            message, file=self.file, line=self.line, row=self.row, field=field, hint=hint, reason=reason
        )


Row = tuple[Location, Any]


def detect_file_kind(path: str | Path) -> str:
    """The reader for a path, from its suffix (``.gz`` allowed) or from what the directory holds."""
    p = Path(path)
    if p.is_dir():
        if (p / "dataset_info.json").exists() or (p / "dataset_dict.json").exists() or (p / "state.json").exists():
            return "datasets"
        raise DataError(
            "directory is not a saved `datasets` dataset",
            file=str(p),
            hint="point at a file (.jsonl, .json, .csv, .parquet) or a folder written by save_to_disk",
        )
    suffixes = [s.lower() for s in p.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    ext = suffixes[-1].lstrip(".") if suffixes else ""
    if ext in ("jsonl", "ndjson"):
        return "jsonl"
    if ext in ("json", "csv", "parquet"):
        return ext
    if ext == "tsv":
        return "csv"
    if not p.exists():
        if "/" in str(path) and not str(path).startswith((".", "/")) and not ext:
            return "hub"
        raise DataError("file not found", file=str(path), hint="check the path (relative paths start from the current directory)")
    raise DataError(
        f"unknown file type {ext or '(no suffix)'!r}",
        file=str(path),
        hint=f"use one of .jsonl, .json, .csv, .parquet (optionally .gz), or pass kind= one of {FILE_KINDS}",
    )


def read_rows(path: str | Path, kind: str | None = None, split: str = "train") -> Iterator[Row]:
    """Yield ``(Location, row)`` for every row of a data source, in order.

    A row that cannot be parsed on its own (a malformed JSONL line, a CSV row with extra cells)
    is yielded as a :class:`DataError` in place of the row, so that the caller can skip it and
    go on; a file that cannot be read at all raises.
    """
    kind = kind or detect_file_kind(path)
    readers = {
        "jsonl": _read_jsonl,
        "json": _read_json,
        "csv": _read_csv,
        "parquet": _read_parquet,
        "datasets": lambda p: _read_datasets_dir(p, split),
        "hub": lambda p: _read_hub(p, split),
    }
    if kind not in readers:
        raise DataError(f"unknown reader {kind!r}", file=str(path), hint=f"use one of {FILE_KINDS}")
    yield from readers[kind](str(path))


def _open_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise DataError("file not found", file=path, hint="check the path") from None
    except OSError as exc:
        raise DataError(f"cannot read file: {exc.strerror}", file=path) from None
    if path.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise DataError(f"not a valid gzip file ({exc})", file=path, hint="decompress it or fix the suffix") from None
    return data


def _decode_text(data: bytes, path: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(
            f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})",
            file=path,
            line=line,
            hint="re-encode the file as UTF-8, e.g. `iconv -f latin1 -t utf-8`",
            reason="non-UTF-8 bytes",
        ) from None


def _read_jsonl(path: str) -> Iterator[Row]:
    """One JSON object a line; a bad line yields a DataError in place of its row (see read_rows)."""
    data = _open_bytes(path)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    for number, raw in enumerate(data.split(b"\n"), start=1):
        where = Location(path, line=number)
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield where, where.error(
                f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})",
                hint="re-encode the file as UTF-8, e.g. `iconv -f latin1 -t utf-8`",
                reason="non-UTF-8 bytes",
            )
            continue
        if not line.strip():
            continue  # blank lines carry no row; JSONL writers often leave one at the end
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            row = where.error(
                f"malformed JSON: {exc.msg} (column {exc.colno})",
                hint="each line must be one complete JSON object",
                reason="malformed JSON",
            )
        yield where, row


def _read_json(path: str) -> Iterator[Row]:
    """A JSON array of objects (or ``{"data": [...]}``); each row located by its starting line."""
    text = _decode_text(_open_bytes(path), path)
    decoder = json.JSONDecoder()
    try:
        document, _ = decoder.raw_decode(text, _skip_space(text, 0))
    except json.JSONDecodeError as exc:
        raise DataError(
            f"malformed JSON: {exc.msg} (column {exc.colno})", file=path, line=exc.lineno, reason="malformed JSON",
            hint="check the file with `python -m json.tool FILE`",
        ) from None
    if isinstance(document, dict):
        lists = [key for key, value in document.items() if isinstance(value, list)]
        if len(lists) != 1:
            raise DataError(
                "expected a JSON array of rows (or an object holding exactly one array)",
                file=path,
                hint="for one row per line use .jsonl",
            )
        document = document[lists[0]]
    elif not isinstance(document, list):
        raise DataError(f"expected a JSON array of rows, got {type(document).__name__}", file=path)
    for index, (row, line) in enumerate(zip(document, _element_lines(text), strict=False)):
        yield Location(path, line=line, row=index), row


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _element_lines(text: str) -> Iterator[int | None]:
    """Line numbers where each element of the (first) top-level array starts; None once unsure."""
    decoder = json.JSONDecoder()
    pos = text.find("[")
    if pos < 0:
        return
    pos += 1
    line, counted = 1 + text.count("\n", 0, pos), pos
    while True:
        pos = _skip_space(text, pos)
        if pos >= len(text) or text[pos] == "]":
            return
        line += text.count("\n", counted, pos)
        counted = pos
        yield line
        try:
            _, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            while True:
                yield None
        pos = _skip_space(text, pos)
        if pos < len(text) and text[pos] == ",":
            pos += 1


def _read_csv(path: str) -> Iterator[Row]:
    text = _decode_text(_open_bytes(path), path)
    dialect = csv.excel_tab if ".tsv" in Path(path).suffixes else csv.excel
    reader = csv.DictReader(io.StringIO(text, newline=""), dialect=dialect)
    if not reader.fieldnames:
        raise DataError("empty CSV file (no header row)", file=path, hint="the first line must name the columns")
    start = 2  # first data row starts after the header; multi-line cells make line_num jump
    for index, row in enumerate(reader):
        where = Location(path, line=start, row=index)
        start = reader.line_num + 1
        if None in row:
            yield where, where.error(
                f"row has {len(reader.fieldnames) + len(row[None])} cells but the header names {len(reader.fieldnames)}",
                hint="quote cells that contain the delimiter",
                reason="malformed CSV",
            )
            continue
        yield where, {key: _csv_cell(value) for key, value in row.items()}


def _csv_cell(value: str | None) -> Any:
    """CSV has only strings: read JSON message lists (chat data) back as lists, the rest as is."""
    if value is None:
        return None
    stripped = value.strip()
    if stripped.startswith("[{") and stripped.endswith("}]"):
        try:
            parsed = json.loads(stripped)
        except json.JSONDecodeError:
            return value
        if all(isinstance(m, dict) and "role" in m for m in parsed):
            return parsed
    return value


def _read_parquet(path: str) -> Iterator[Row]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise DataError("file not found", file=path) from None
    except Exception as exc:  # pyarrow raises several unrelated types for corrupt files
        raise DataError(f"cannot read Parquet file: {exc}", file=path, hint="is it really Parquet?") from None
    for index, row in enumerate(table.to_pylist()):
        yield Location(path, row=index), row


def _read_datasets_dir(path: str, split: str) -> Iterator[Row]:
    import datasets

    loaded = datasets.load_from_disk(path)
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise DataError(
                f"split {split!r} not in the dataset", file=path, hint=f"choose split= one of {sorted(loaded)}"
            )
        loaded = loaded[split]
    for index, row in enumerate(loaded):
        yield Location(f"{path}[{split}]", row=index), row


def _read_hub(name: str, split: str) -> Iterator[Row]:
    import datasets

    try:
        loaded = datasets.load_dataset(name, split=split)
    except Exception as exc:  # offline, unknown id, gated: all surface as a readable DataError
        raise DataError(
            f"cannot load hub dataset: {type(exc).__name__}: {exc}".splitlines()[0],
            file=name,
            hint="hub datasets need network access; otherwise save it with save_to_disk and pass the folder",
        ) from None
    for index, row in enumerate(loaded):
        yield Location(f"{name}[{split}]", row=index), row
