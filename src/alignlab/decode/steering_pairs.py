"""Contrastive prompt pairs for reading steering vectors, from JSONL with errors at file:line.

Example: ``pairs = load_steering_pairs("pairs.jsonl"); read_steering_vectors(model, pairs.positive, pairs.negative)``

One ``{"positive": "...", "negative": "..."}`` object a line: the same request answered (or
phrased) the desired way and the undesired way, as the reading of Wolf et al. 2024 (arXiv
2401.16332) and Zou et al. 2023 (arXiv 2310.01405) contrasts them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignlab.data.readers import Location, read_rows
from alignlab.errors import DataError

SIDES = ("positive", "negative")
EXAMPLE = '{"positive": "I am glad to help.", "negative": "I refuse to help."}'


@dataclass(frozen=True)
class SteeringPairs:
    """Paired texts in file order: ``positive[i]`` is contrasted with ``negative[i]``."""

    positive: tuple[str, ...]
    negative: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.positive)


def load_steering_pairs(path: str | Path) -> SteeringPairs:
    """The pairs of a JSONL file; blank lines are skipped and other keys ignored.

    Any bad line raises :class:`DataError` naming the file, the line, the field and a hint: a
    malformed line, a row that is not an object, a missing, non-string or empty side, a pair whose
    sides are the same text (it has no direction), and a file with no pairs at all.
    """
    positive: list[str] = []
    negative: list[str] = []
    for where, row in read_rows(path, kind="jsonl"):
        if isinstance(row, DataError):
            raise row
        good, bad = _pair_of(where, row)
        positive.append(good)
        negative.append(bad)
    if not positive:
        raise DataError("no pairs in the file", file=str(path), reason="empty file",
                        hint=f"add one pair a line, like {EXAMPLE}")
    return SteeringPairs(tuple(positive), tuple(negative))


def _pair_of(where: Location, row: Any) -> tuple[str, str]:
    if not isinstance(row, dict):
        raise where.error(f"expected a JSON object, got {type(row).__name__}", reason="not an object",
                          hint=f"write one object per line, like {EXAMPLE}")
    for side in SIDES:
        if side not in row:
            found = ", ".join(repr(key) for key in row) or "none"
            raise where.error("missing field", field=side, reason="missing field",
                              hint=f'each line needs "positive" and "negative"; this one has {found}')
        if not isinstance(row[side], str):
            raise where.error(f"{side} must be a string, got {type(row[side]).__name__}", field=side,
                              reason="mistyped field", hint="write the text as one JSON string")
        if not row[side].strip():
            raise where.error(f"empty {side} text", field=side, reason="empty text",
                              hint="fill in the text or remove the line")
    if row["positive"] == row["negative"]:
        raise where.error("positive and negative are the same text, so the pair has no direction",
                          field="negative", reason="identical pair",
                          hint="make the negative the undesired version of the positive")
    return row["positive"], row["negative"]
