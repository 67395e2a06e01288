"""Write records back out as normalised JSONL that alignlab (and TRL) read directly.

Example: ``write_jsonl(load_records("pandalm.json").records, "pandalm.jsonl")``
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import fields
from pathlib import Path
from typing import Any

from alignlab.data.records import Record


def to_row(record: Record) -> dict[str, Any]:
    """A record as a plain JSON-ready dict in its generic format; unset optional fields left out."""
    row: dict[str, Any] = {}
    for f in fields(record):
        value = getattr(record, f.name)
        if value is None and f.name not in ALWAYS_WRITTEN:
            continue
        row[f.name] = _plain(value)
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
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    count = 0
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            for record in records:
                out.write(json.dumps(to_row(record), ensure_ascii=False) + "\n")
                count += 1
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp creates 0600; a data file is shared
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return count


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
