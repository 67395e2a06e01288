"""Prompts to generate from, with their extra columns (a reference answer), from any data file.

Example: ``prompts = load_prompts("questions.jsonl"); prompts.texts[0], prompts.columns["answer"][0]``

A row's prompt is its ``prompt`` field (text or chat), else a chat's turns before its last
assistant reply (``messages``), else ``question``, ``instruction`` (with ``input``) or ``query``,
else the prompt of whatever preference or SFT format the row is in. Every other scalar field is
kept as a column, one value per prompt (None where a row lacks it), so that a verifier can read
the reference ``answer``. A row without a prompt is an error naming file, line and field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignlab.data.formats import detect_format
from alignlab.data.readers import Location, read_rows
from alignlab.data.records import Text, check_prompt
from alignlab.errors import DataError, FieldError

PROMPT_FIELDS = ("prompt", "messages", "question", "instruction", "query")
"""Where a prompt is looked for, in this order (before any preference or SFT format)."""


@dataclass(frozen=True)
class PromptSet:
    """Prompts in file order, their columns and where each came from."""

    texts: tuple[Text, ...]
    columns: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    """Extra fields by name, one value per prompt (None where a row lacks the field)."""
    locations: tuple[Location, ...] = ()

    def __len__(self) -> int:
        return len(self.texts)


def load_prompts(source: str | Path, prompt_field: str | None = None, limit: int | None = None) -> PromptSet:
    """Every row's prompt (see the module docstring); ``prompt_field`` names the field to read
    instead. An unreadable row, or one without a prompt, raises a :class:`DataError` at its line."""
    texts, rows, locations = [], [], []
    for where, row in read_rows(source):
        if isinstance(row, DataError):
            raise row
        if limit is not None and len(texts) >= limit:
            break
        try:
            if not isinstance(row, Mapping):
                raise FieldError(None, f"a row must be an object, got {type(row).__name__}",
                                 "one JSON object (or CSV line) per prompt, e.g. {\"prompt\": \"...\"}")
            prompt, used = prompt_of(row, prompt_field)
        except FieldError as exc:
            raise where.error(exc.message, field=exc.field, hint=exc.hint, reason=exc.reason) from None
        texts.append(prompt)
        rows.append({k: v for k, v in row.items() if k not in used and _is_scalar(v)})
        locations.append(where)
    if not texts:
        raise DataError("no prompts", file=str(source), hint="the file has no rows")
    names = sorted({k for row in rows for k in row})
    columns = {name: tuple(row.get(name) for row in rows) for name in names}
    return PromptSet(tuple(texts), columns, tuple(locations))


def prompt_of(row: Mapping[str, Any], prompt_field: str | None = None) -> tuple[Text, set[str]]:
    """A row's prompt and the fields it was read from."""
    if prompt_field is not None:
        if prompt_field not in row:
            raise FieldError(prompt_field, "missing field (named as the prompt field)",
                             f"the row has {sorted(row)}")
        return _chat_prompt(row[prompt_field], prompt_field), {prompt_field}
    if "prompt" in row:
        return check_prompt(row["prompt"]), {"prompt"}
    if "messages" in row:
        return _chat_prompt(row["messages"], "messages"), {"messages"}
    for name in ("question", "query"):
        if name in row:
            return check_prompt(row[name], name), {name}
    if "instruction" in row:
        extra = row.get("input")
        text = row["instruction"] if not extra else f"{row['instruction']}\n\n{extra}"
        return check_prompt(text, "instruction"), {"instruction", "input"}
    no_prompt = FieldError(None, f"no prompt among the fields {sorted(row)}",
                           f"name it with a field {', '.join(repr(f) for f in PROMPT_FIELDS)} "
                           "(or choose one with --prompt-field)", "no prompt")
    try:
        entry = detect_format(row)
    except FieldError:
        raise no_prompt from None
    if entry.name == "text":  # plain text is modelled whole: nothing in it is a prompt
        raise no_prompt
    records = [r for r in entry.obj(row, "prompts") if hasattr(r, "prompt")]
    if not records:
        raise FieldError(None, f"the row (format {entry.name!r}) holds no prompt", "", "no prompt")
    return records[0].prompt, set(entry.contract.columns)


def _chat_prompt(value: Any, name: str) -> Text:
    """A prompt from a field: a chat keeps its turns before its last assistant reply."""
    if isinstance(value, list) and value and all(isinstance(m, Mapping) for m in value):
        turns = list(value)
        while turns and turns[-1].get("role") == "assistant":
            turns.pop()
        if not turns:
            raise FieldError(name, "the chat has no turn before the assistant's reply", "", "empty prompt")
        return check_prompt(turns, name)
    return check_prompt(value, name)


def _is_scalar(value: Any) -> bool:
    """A column value a reward can read: a number, a string, or a list of them (acceptable answers)."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return True
    return isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value)
