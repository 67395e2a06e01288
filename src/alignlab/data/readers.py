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

from alignlab.errors import DataError, describe_location

FILE_KINDS = ("jsonl", "json", "csv", "parquet", "datasets", "hub")


@dataclass(frozen=True)
class Location:
    """Where a row came from: a file with a line number, or a row index."""

    file: str
    line: int | None = None
    row: int | None = None

    def __str__(self) -> str:
        return describe_location(self.file, self.line, self.row)

    def error(self, message: str, field: str | None = None, hint: str = "", reason: str = "") -> DataError:
        return DataError(
            message, file=self.file, line=self.line, row=self.row, field=field, hint=hint, reason=reason
        )


Row = tuple[Location, Any]


@dataclass(frozen=True)
class InMemory:
    """Rows already in memory (a list of dicts, a ``datasets.Dataset``), read like a file: each
    row's location is ``NAME: row N`` (1-based), so errors point at the row as they do in files."""

    rows: Any
    """A sequence of mappings, or anything iterable of them (a ``datasets.Dataset``)."""
    name: str = "data"
    """What errors call the source, e.g. "train_data"."""

    def __str__(self) -> str:
        return self.name


def in_memory(data: Any, name: str = "data") -> InMemory:
    """``data`` (a list of dicts or a ``datasets.Dataset``) as a source for :func:`read_rows`.

    A string or path is not in memory: pass it as the path itself."""
    if isinstance(data, str | Path):
        raise TypeError(f"{name}: {data!r} is a path; pass it as data.path (or the path itself)")
    if isinstance(data, InMemory):
        return data
    if not hasattr(data, "__iter__"):
        raise DataError(f"expected a list of rows (dicts) or a datasets.Dataset, got {type(data).__name__}",
                        file=name, hint="e.g. train_data=[{\"prompt\": ..., \"chosen\": ..., \"rejected\": ...}]")
    return InMemory(data, name)


def _read_memory(source: InMemory) -> Iterator[Row]:
    for index, row in enumerate(source.rows, start=1):
        yield Location(source.name, row=index), row


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
        raise DataError("file not found", file=str(path), reason="file not found",
                        hint="check the path (relative paths start from the current directory)")
    raise DataError(
        f"unknown file type {ext or '(no suffix)'!r}",
        file=str(path),
        reason="unknown file type",
        hint=f"use one of .jsonl, .json, .csv, .parquet (optionally .gz), or pass kind= one of {FILE_KINDS}",
    )


def read_rows(path: str | Path | InMemory, kind: str | None = None, split: str = "train") -> Iterator[Row]:
    """Yield ``(Location, row)`` for every row of a data source, in order.

    A row that cannot be parsed on its own (a malformed JSONL line, a CSV row with extra cells)
    is yielded as a :class:`DataError` in place of the row, so that the caller can skip it and
    go on; a file that cannot be read at all raises.
    """
    if isinstance(path, InMemory):
        yield from _read_memory(path)
        return
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
        raise DataError("file not found", file=path, hint="check the path", reason="file not found") from None
    except OSError as exc:
        raise DataError(f"cannot read file: {exc.strerror}", file=path, reason="unreadable file") from None
    if path.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise DataError(f"not a valid gzip file ({exc})", file=path, reason="not gzip",
                            hint="decompress it or fix the suffix") from None
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
    if not text.strip():  # an empty file holds no rows (the loader says so), not broken JSON
        return
    try:
        rows, lines = _json_rows(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"malformed JSON: {exc.msg} (column {exc.colno})", file=path, line=exc.lineno,
            reason="malformed JSON", hint="check the file with `python -m json.tool FILE`",
        ) from None
    except ValueError as exc:
        raise DataError(str(exc), file=path, reason="not an array of rows",
                        hint="a .json file holds an array of objects; for one row per line use .jsonl") from None
    for index, (row, line) in enumerate(zip(rows, lines, strict=True)):
        yield Location(path, line=line, row=index), row


class _Cursor:
    """A position in JSON text that knows its line number (counted incrementally)."""

    def __init__(self, text: str) -> None:
        self.text, self.pos, self.line, self._counted = text, 0, 1, 0

    def skip_space(self) -> str:
        while self.pos < len(self.text) and self.text[self.pos] in " \t\r\n":
            self.pos += 1
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def line_here(self) -> int:
        self.line += self.text.count("\n", self._counted, self.pos)
        self._counted = self.pos
        return self.line

    def value(self) -> Any:
        value, self.pos = _DECODER.raw_decode(self.text, self.pos)
        return value

    def expect(self, closing: str) -> bool:
        """After a member: True at the closing bracket (consumed), False after a comma."""
        char = self.skip_space()
        self.pos += 1
        if char == closing:
            return True
        if char != ",":
            raise json.JSONDecodeError(f"Expecting ',' or '{closing}'", self.text, self.pos - 1)
        return False


_DECODER = json.JSONDecoder()


def _json_rows(text: str) -> tuple[list[Any], list[int]]:
    """The rows of a top-level array (or of the one array inside a top-level object) and the
    line where each row starts. Parses the document once, element by element."""
    cursor = _Cursor(text)
    first = cursor.skip_space()
    if first == "[":
        rows, lines = _json_array(cursor)
    elif first == "{":
        arrays: list[tuple[list[Any], list[int]]] = []
        cursor.pos += 1
        closed = cursor.skip_space() == "}"
        cursor.pos += int(closed)
        while not closed:
            cursor.skip_space()
            cursor.value()  # the key
            if cursor.skip_space() != ":":
                raise json.JSONDecodeError("Expecting ':' delimiter", text, cursor.pos)
            cursor.pos += 1
            if cursor.skip_space() == "[":
                arrays.append(_json_array(cursor))
            else:
                cursor.value()
            closed = cursor.expect("}")
        if len(arrays) != 1:
            raise ValueError("expected a JSON array of rows, or an object holding exactly one array")
        rows, lines = arrays[0]
    else:
        document = cursor.value()
        raise ValueError(f"expected a JSON array of rows, got {type(document).__name__}")
    if cursor.skip_space():
        raise json.JSONDecodeError("Extra data", text, cursor.pos)
    return rows, lines


def _json_array(cursor: _Cursor) -> tuple[list[Any], list[int]]:
    rows, lines = [], []
    cursor.pos += 1  # "["
    if cursor.skip_space() == "]":
        cursor.pos += 1
        return rows, lines
    while True:
        cursor.skip_space()
        lines.append(cursor.line_here())
        rows.append(cursor.value())
        if cursor.expect("]"):
            return rows, lines


def _read_csv(path: str) -> Iterator[Row]:
    text = _decode_text(_open_bytes(path), path)
    dialect = csv.excel_tab if ".tsv" in Path(path).suffixes else csv.excel
    reader = csv.reader(io.StringIO(text, newline=""), dialect=dialect)
    header = next((cells for cells in reader if cells), None)  # blank lines before it are no header
    if header is None:
        return  # only blank lines, or none: no rows, which the loader reports as an empty file
    index, start = 0, reader.line_num + 1
    for cells in reader:
        where = Location(path, line=start, row=index)
        start = reader.line_num + 1  # a quoted cell may span lines: the next row starts after it
        if not cells:
            continue  # a blank line
        index += 1
        if len(cells) > len(header):
            yield where, where.error(
                f"row has {len(cells)} cells but the header names {len(header)}",
                hint="quote cells that contain the delimiter",
                reason="malformed CSV",
            )
            continue
        row = {name: _csv_cell(name, value) for name, value in zip(header, cells, strict=False)}
        yield where, row  # missing trailing cells stay absent: reported as missing fields


NUMBER_COLUMNS = frozenset({"margin", "rater_share", "score"})
"""CSV has only text; these columns hold numbers in every format alignlab reads."""


def _csv_cell(column: str, value: str) -> Any:
    """CSV has only text: numbers in number columns, JSON lists (chats, scores) back as lists."""
    stripped = value.strip()
    if column in NUMBER_COLUMNS:
        if not stripped:
            return None  # an empty optional cell
        try:
            return float(stripped)
        except ValueError:
            return value  # left as text: the record names the field and says a number is needed
    if stripped.startswith("[") and stripped.endswith("]"):
        try:
            parsed = json.loads(stripped)
        except json.JSONDecodeError:
            return value
        if isinstance(parsed, list) and parsed and all(isinstance(x, dict | int | float | str) for x in parsed):
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
        path = f"{path}[{split}]"
    for index, row in enumerate(loaded):
        yield Location(path, row=index), row


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
