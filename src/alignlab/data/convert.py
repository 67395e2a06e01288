"""Write records back out as normalised JSONL that alignlab (and TRL) read directly.

Example: ``write_jsonl(load_records("pandalm.json").records, "pandalm.jsonl")``
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import fields
from pathlib import Path
from typing import Any

from alignlab.data.records import Record
from alignlab.files import atomic_write, shared_file_mode


def to_row(record: Record) -> dict[str, Any]:
    """A record as a plain JSON-ready dict in its generic format; unset optional fields left out."""
    row: dict[str, Any] = {}
    columns = getattr(record, "COLUMNS", {})
    for f in fields(record):
        value = getattr(record, f.name)
        if value is None and f.name not in ALWAYS_WRITTEN:
            continue
        row[columns.get(f.name, f.name)] = _plain(value)
    return row


ALWAYS_WRITTEN = frozenset({"judgment"})
"""Optional fields that the generic format needs as a column even when null (no judgment)."""


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def write_jsonl(records: Iterable[Record], path: str | Path) -> int:
    """Write one record a line, atomically (a temporary file, then a rename). Returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0

    def write(temporary: Path) -> None:
        nonlocal count
        with open(temporary, "w", encoding="utf-8") as out:
            for record in records:
                out.write(json.dumps(to_row(record), ensure_ascii=False) + "\n")
                count += 1

    # mkstemp creates 0600; a data file is shared like any file the user writes.
    atomic_write(path, write, mode=shared_file_mode())
    return count
