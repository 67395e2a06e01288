"""Load a data source into validated records, with a report that accounts for every row.

Example: ``result = load_records("hh.jsonl.gz", on_error="skip"); result.records, result.report``

Nothing is lost silently: each row ends up as record(s), a rule-based drop (counted by reason),
a skipped error (counted by reason, only with ``on_error="skip"``), or a raised :class:`DataError`.
A source that gives no records at all raises :class:`NoRecordsError`: zero records is never a
result, since a trainer or a check would otherwise run on nothing and report it as fine.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from alignlab.data.formats import Drop, Note, detect_format, finegrained_ranked
from alignlab.data.readers import InMemory, Location, detect_file_kind, read_rows
from alignlab.data.records import (
    RECORD_KINDS,
    Judged,
    PreferencePair,
    RankedResponses,
    Record,
    StepwiseExample,
    is_chat,
    pairs_to_feedback,
    ranked_to_pairs,
)
from alignlab.errors import ConfigError, DataError, FieldError
from alignlab.registry import FORMATS, suggest

Policy = Literal["error", "skip", "keep"]
MAX_EXAMPLES = 5


@dataclass(frozen=True)
class LoadOptions:
    format: str = "auto"
    """A format name from ``alignlab data formats``, or "auto" to detect it from the columns."""
    mapping: dict[str, str] = field(default_factory=dict)
    """Column renames, target field → source column (``{"chosen": "response_a"}``)."""
    on_error: Literal["raise", "skip"] = "raise"
    """Stop at the first bad row, or skip bad rows and count them by reason."""
    identical_pairs: Literal["auto", "error", "skip", "keep"] = "auto"
    """A pair whose chosen equals its rejected. "auto": an error in your own data, kept (and
    reported) in a published benchmark, which is read as published."""
    empty_completions: Policy = "keep"
    """An empty response is real model behaviour (published sets hold some): kept and reported."""
    kind: str | None = None
    """Convert to this record kind: "paired" (from ranked), "unpaired" (pairs split into thumbs
    up/down), "ranked" (FineGrainedRLHF rows as ranked lists). None keeps what the format gives."""
    split: str = "train"
    """Split of a saved `datasets` DatasetDict or a hub dataset."""


@dataclass
class LoadReport:
    """What happened to every row of a source."""

    source: str
    rows: int = 0
    records: int = 0
    formats: Counter = field(default_factory=Counter)
    dropped: Counter = field(default_factory=Counter)
    """Removed by the format's own rule (a rater tie), by reason."""
    skipped: Counter = field(default_factory=Counter)
    """Bad rows skipped with on_error="skip", by reason."""
    warnings: Counter = field(default_factory=Counter)
    """Rows kept but worth a look (empty completion, identical pair in a benchmark), by reason."""
    examples: dict[str, list[str]] = field(default_factory=dict)
    """Up to a few locations (with messages) per skipped or warned reason."""
    ignored_columns: set[str] = field(default_factory=set)

    def note(self, counter: Counter, reason: str, example: str) -> None:
        counter[reason] += 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < MAX_EXAMPLES:
            shown.append(example)

    @property
    def clean(self) -> bool:
        return not (self.skipped or self.warnings)


@dataclass
class LoadResult:
    records: list[Record]
    report: LoadReport
    locations: list[Location] = field(default_factory=list)
    """Where each record came from (parallel to ``records``), for messages about it later."""


class NoRecordsError(DataError):
    """A source that gives no records; ``report`` still accounts for every row it had.

    Reasons: "empty file" (no rows at all), "empty folder" (a folder with no data files) and
    "all rows dropped" (rows were read, but each one was skipped or dropped by a format's rule).
    """

    def __init__(self, message: str, report: LoadReport, *, hint: str, reason: str) -> None:
        self.report = report
        super().__init__(message, file=report.source, hint=hint, reason=reason)


def load_records(source: str | Path | InMemory, options: LoadOptions | None = None, **overrides: Any) -> LoadResult:
    """Read a file, a folder of files, a saved dataset, a hub id or rows in memory
    (:func:`~alignlab.data.readers.in_memory`) into validated records.

    Raises :class:`NoRecordsError` when the source gives not a single record.
    """
    options = options or LoadOptions()
    if overrides:
        options = with_options(options, **overrides)
    _check_options(options)
    report = LoadReport(str(source))
    files = _sources(source)
    located = _convert_kind(list(_records(files, options, report)), options.kind, report)
    report.records = len(located)
    if not located:
        raise _no_records(files, options, report)
    return LoadResult([record for _, record in located], report, [where for where, _ in located])


def with_options(options: LoadOptions, **changes: Any) -> LoadOptions:
    """A copy of ``options`` with some fields changed; an unknown field name is a ConfigError."""
    names = [f.name for f in fields(options)]
    for key in changes:
        if key not in names:
            raise ConfigError(f"unknown load option {key!r}.{suggest(key, names)} Options: {', '.join(names)}")
    return replace(options, **changes)


def _check_options(options: LoadOptions) -> None:
    if options.format != "auto" and options.format not in FORMATS:
        FORMATS.get(options.format)  # raises ConfigError with a did-you-mean
    if options.kind is not None and options.kind not in RECORD_KINDS:
        raise DataError(f"unknown record kind {options.kind!r}", hint=f"use one of {sorted(RECORD_KINDS)}")


def _sources(source: str | Path | InMemory) -> list[Any]:
    """A folder of data files (not a saved dataset) reads every file in it, in name order; a
    folder with none gives no files (reported as an empty folder once the report exists)."""
    if isinstance(source, InMemory):
        return [source]
    path = Path(source)
    if path.is_dir() and detect_file_kind_safe(path) != "datasets":
        files = sorted(p for p in path.iterdir() if p.is_file() and detect_file_kind_safe(p) not in (None, "hub"))
        return [str(p) for p in files]
    return [str(source)]


def detect_file_kind_safe(path: Path) -> str | None:
    try:
        return detect_file_kind(path)
    except DataError:
        return None


def _records(
    files: list[str], options: LoadOptions, report: LoadReport
) -> Iterator[tuple[Location, Record]]:
    for file in files:
        if isinstance(file, InMemory):
            source_name = file.name
        else:
            source_name = Path(file).name.split(".")[0] if Path(file).exists() else file
        for where, row in read_rows(file, split=options.split):
            report.rows += 1
            try:
                if isinstance(row, DataError):
                    raise row
                for record in _convert_row(where, row, options, report, source_name):
                    yield where, record
            except DataError as error:
                if options.on_error == "raise":
                    raise
                report.note(report.skipped, error.reason, str(error).splitlines()[0])


def _no_records(files: list[str], options: LoadOptions, report: LoadReport) -> NoRecordsError:
    """Why a source gave no records: no data files, no rows, or every row skipped or dropped."""
    if not files:
        return NoRecordsError("empty folder: it holds no data files", report, reason="empty folder",
                              hint="check the path; expected .jsonl/.json/.csv/.parquet files (optionally .gz)")
    if report.rows == 0:
        if [str(f) for f in files] != [report.source]:  # a folder of data files, each of them empty
            names = ", ".join(Path(f).name for f in files[:MAX_EXAMPLES])
            return NoRecordsError(f"empty folder: no rows in its {_plural(len(files), 'data file')}", report,
                                  reason="empty file", hint=f"check the path; {names}: 0 rows")
        return NoRecordsError("empty file: it holds no rows", report, reason="empty file",
                              hint="check the path; the file has 0 rows (blank lines and a CSV header are not rows)")
    rows = "its one row was" if report.rows == 1 else f"all {report.rows} rows were"
    return NoRecordsError(f"no records: {rows} dropped or skipped{_causes(report)}", report,
                          reason="all rows dropped", hint=_no_records_hint(options, report))


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _causes(report: LoadReport) -> str:
    """`` (skipped: malformed JSON: 2; dropped by the format's rule: tie between raters: 1)``."""
    parts = [f"{label}: " + ", ".join(f"{reason}: {n}" for reason, n in sorted(counter.items()))
             for label, counter in (("skipped", report.skipped), ("dropped by the format's rule", report.dropped))
             if counter]
    return f" ({'; '.join(parts)})" if parts else ""


def _no_records_hint(options: LoadOptions, report: LoadReport) -> str:
    if report.skipped:
        # Reasons enter ``examples`` as they first occur: the first skipped one holds the first bad row.
        first = next(reason for reason in report.examples if reason in report.skipped)
        return f"fix the rows, starting with {report.examples[first][0]} (`alignlab data check` lists them all)"
    if report.dropped:
        return "every row was removed by its format's rule (a tie, no preference): there is nothing to learn from"
    if options.kind is not None:
        return f"no row gave a {options.kind!r} record; check the kind against the file's format"
    return "no row gave a record; `alignlab data check` shows what was read"


def _convert_row(
    where: Location, row: Any, options: LoadOptions, report: LoadReport, source_name: str
) -> Iterator[Record]:
    try:
        if not isinstance(row, Mapping):
            raise FieldError(None, f"a row must be an object, got {type(row).__name__}",
                             "each row is one JSON object (or one CSV line) with named fields",
                             "row not an object")
        row = _apply_mapping(row, options.mapping)
        entry = detect_format(row) if options.format == "auto" else FORMATS.get(options.format)
        missing = [c for c in entry.contract.columns if c not in row]
        if missing:
            raise FieldError(missing[0], f"missing field (format {entry.name!r})", "", "missing field")
        if options.kind == "ranked" and entry.name == "finegrained":
            converted: list[Any] = finegrained_ranked(row, source_name)
        else:
            converted = entry.obj(row, source_name)
        used = _used_columns(entry, options.mapping)
        if used is not None:
            report.ignored_columns.update(set(row) - used)
    except FieldError as exc:
        raise where.error(exc.message, field=exc.field, hint=exc.hint, reason=exc.reason) from None
    report.formats[entry.name] += 1
    for item in converted:
        if isinstance(item, Drop):
            report.dropped[item.reason] += 1
        elif isinstance(item, Note):
            report.note(report.warnings, item.reason, str(where))
        elif _passes_content_checks(where, item, entry.contract.published, options, report):
            yield item


def _apply_mapping(row: Any, mapping: Mapping[str, str]) -> Any:
    if not mapping or not isinstance(row, Mapping):
        return row
    missing = [src for src in mapping.values() if src not in row]
    if missing:
        target = next(t for t, s in mapping.items() if s == missing[0])
        raise FieldError(missing[0], f"mapped column missing (mapping {target}={missing[0]})",
                         f"the row has columns {sorted(row)}", "missing field")
    renamed = {k: v for k, v in row.items() if k not in mapping.values()}
    renamed.update({target: row[src] for target, src in mapping.items()})
    return renamed


OPTIONAL_COLUMNS = {"margin", "rater_share", "chosen_token_weights", "rejected_token_weights", "source", "id",
                    "score", "scores", "ranks"}


def _used_columns(entry: Any, mapping: Mapping[str, str]) -> set[str] | None:
    """Columns a generic format reads; published formats read their fixed schema (None: skip)."""
    if entry.contract.published:
        return None
    return set(entry.contract.columns) | OPTIONAL_COLUMNS | set(mapping)


def _passes_content_checks(
    where: Location, record: Record, published: bool, options: LoadOptions, report: LoadReport
) -> bool:
    """Identical pairs and empty completions: error, skip (counted) or keep (reported)."""
    if isinstance(record, PreferencePair) and record.chosen == record.rejected:
        policy = options.identical_pairs
        if policy == "auto":
            policy = "keep" if published else "error"
        if not _apply_policy(where, policy, "rejected", "identical chosen and rejected", report,
                             "a pair with no difference teaches nothing; fix the row, or pass "
                             "identical_pairs='skip' (or --on-error skip)"):
            return False
    for name, text in _completions(record):
        if _is_empty(text) and not _apply_policy(
            where, options.empty_completions, name, "empty completion", report,
            "an empty answer is kept by default; pass empty_completions='error' to reject it",
        ):
            return False
    return True


def _apply_policy(where: Location, policy: str, field_name: str, reason: str, report: LoadReport, hint: str) -> bool:
    error = where.error(reason, field=field_name, hint=hint, reason=reason)
    if policy == "error":
        raise error
    report.note(report.skipped if policy == "skip" else report.warnings, reason, str(error).splitlines()[0])
    return policy == "keep"


def _completions(record: Record) -> Iterable[tuple[str, Any]]:
    if isinstance(record, PreferencePair):
        return (("chosen", record.chosen), ("rejected", record.rejected))
    if isinstance(record, RankedResponses):
        return ((f"responses[{i}]", r) for i, r in enumerate(record.responses))
    if isinstance(record, Judged):
        return (("response", record.response),)
    if isinstance(record, StepwiseExample):
        return ((f"completions[{i}]", step) for i, step in enumerate(record.steps))
    return (("completion", record.completion),)  # Feedback, SFTExample


def _is_empty(text: Any) -> bool:
    if is_chat(text):
        return not any(m["content"].strip() for m in text)
    return not str(text).strip()


def _convert_kind(
    located: list[tuple[Location, Record]], kind: str | None, report: LoadReport
) -> list[tuple[Location, Record]]:
    if kind is None:
        return located
    target = RECORD_KINDS[kind]
    out: list[tuple[Location, Record]] = []
    for where, record in located:
        if isinstance(record, target):
            out.append((where, record))
        elif kind == "paired" and isinstance(record, RankedResponses):
            out.extend((where, pair) for pair in ranked_to_pairs(record))
        elif kind == "unpaired" and isinstance(record, PreferencePair):
            out.extend((where, item) for item in pairs_to_feedback([record]))
        else:
            raise DataError(
                f"cannot turn {type(record).__name__} records into {kind!r} records",
                file=report.source, reason="kind conversion",
                hint="conversions: ranked→paired, paired→unpaired, FineGrainedRLHF→ranked",
            )
    return out
