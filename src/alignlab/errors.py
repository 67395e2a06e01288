"""The exceptions alignlab raises, each carrying what went wrong, where, and what to do.

Example: ``raise DataError("empty text", file="a.jsonl", line=3, field="chosen", hint="...")``
"""

from __future__ import annotations


class AlignlabError(Exception):
    """Base class: every error alignlab raises on purpose derives from it."""


class FieldError(AlignlabError):
    """A problem with one field of one record, before its location in a file is known.

    Record constructors and format adapters raise it; the loader adds file and line and re-raises
    it as a :class:`DataError`.
    """

    def __init__(self, field: str | None, message: str, hint: str = "", reason: str = "") -> None:
        self.field = field
        self.message = message
        self.hint = hint
        # A short stable key used to count skipped rows by cause ("empty text", "missing field").
        self.reason = reason or message
        super().__init__(f"{field}: {message}" if field else message)


def describe_location(file: str | None, line: int | None = None, row: int | None = None) -> str:
    """``a.jsonl:3``, ``a.json:17 (row 4)`` or ``a.parquet: row 4``."""
    place = file or "<data>"
    if line is not None:
        place += f":{line}"
    if row is not None:
        place += f" (row {row})" if line is not None else f": row {row}"
    return place


class DataError(AlignlabError):
    """A bad row or file, located as precisely as the source allows (file, line or row, field)."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        row: int | None = None,
        field: str | None = None,
        hint: str = "",
        reason: str = "",
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.row = row
        self.field = field
        self.hint = hint
        self.reason = reason or message
        super().__init__(self._render())

    @property
    def where(self) -> str:
        """``file:line`` (or ``file: row N`` where the source has no lines), then the field."""
        place = describe_location(self.file, self.line, self.row)
        return f"{place}, field '{self.field}'" if self.field else place

    def _render(self) -> str:
        text = f"{self.where}: {self.message}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class ConfigError(AlignlabError):
    """An invalid configuration: unknown key, wrong type, or options that cannot work together."""


class ConfigValueError(ConfigError):
    """A value of the right type that cannot work, raised by an options class's own checks.

    It carries the bare key, so that the config loader can prefix the section ("tokenize.").
    """

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"config key '{key}' {problem}")


def require(ok: bool, key: str, problem: str) -> None:
    """Raise :class:`ConfigValueError` for ``key`` unless ``ok``."""
    if not ok:
        raise ConfigValueError(key, problem)


class TokenizationError(AlignlabError):
    """A record could not be turned into token ids with an exact prompt/completion boundary."""
