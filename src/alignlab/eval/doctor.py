"""The data doctor: counts and findings about a preference data file before any training.

Example: ``report = check_data("pairs.jsonl", tokenizer=tok, max_length=1024); report.exit_code``

Exit codes: 0 clean, 1 findings, 2 unreadable. A readable source that gives no records (an empty
file, or every row skipped) is the finding "no records". Length statistics are in tokens when a
tokenizer is given, otherwise in characters.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from alignlab.data.load import (
    MAX_EXAMPLES,
    LoadOptions,
    LoadReport,
    LoadResult,
    NoRecordsError,
    load_records,
    with_options,
)
from alignlab.data.readers import Location
from alignlab.data.records import (
    Judged,
    PreferencePair,
    RankedResponses,
    Record,
    StepwiseExample,
    is_chat,
)
from alignlab.data.tokenize import RecordTokenizer, TokenizeOptions
from alignlab.errors import DataError
from alignlab.eval.ranking import length_bias

NO_RECORDS = "no records"
"""The finding for a source that gives no record at all: empty, or every row skipped or dropped."""

LENGTH_BIAS_THRESHOLD = 0.10
"""A finding when chosen is the longer response in more than 60% (or under 40%) of pairs."""


@dataclass
class Finding:
    name: str
    count: int
    detail: str = ""
    examples: list[str] = field(default_factory=list)


@dataclass
class DoctorReport:
    source: str
    load: LoadReport | None = None
    fatal: str | None = None
    """Why the source could not be read at all (exit code 2)."""
    findings: list[Finding] = field(default_factory=list)
    lengths: dict[str, dict[str, float]] = field(default_factory=dict)
    length_unit: str = "chars"
    length_bias: dict[str, float] = field(default_factory=dict)

    @property
    def no_records(self) -> bool:
        return any(f.name == NO_RECORDS and f.count for f in self.findings)

    @property
    def exit_code(self) -> int:
        if self.fatal is not None:
            return 2
        return 1 if any(f.count for f in self.findings) else 0


def check_data(
    source: str,
    options: LoadOptions | None = None,
    tokenizer: Any = None,
    max_length: int | None = None,
) -> DoctorReport:
    """Load every row (skipping and counting bad ones), then look for problems a trainer would hit."""
    options = options or LoadOptions()
    # The doctor reads everything it can: bad rows and identical pairs are counted, not fatal.
    identical = "skip" if options.identical_pairs in ("auto", "error") else options.identical_pairs
    options = with_options(options, on_error="skip", identical_pairs=identical)
    report = DoctorReport(source)
    try:
        result = load_records(source, options)
    except NoRecordsError as error:
        # Readable but empty: a finding (exit 1), with the report of what each row became.
        result = LoadResult([], error.report)
        report.findings.append(Finding(NO_RECORDS, 1, _no_records_detail(error)))
    except DataError as error:
        report.fatal = str(error)
        return report
    report.load = result.report
    records = result.records
    for reason, count in sorted(result.report.skipped.items()):
        report.findings.append(Finding(f"error: {reason}", count, "rows skipped", result.report.examples[reason]))
    for reason, count in sorted(result.report.warnings.items()):
        report.findings.append(Finding(reason, count, "rows kept", result.report.examples[reason]))
    report.findings.extend(_duplicates(records, result.locations))
    if tokenizer is not None:
        report.length_unit = "tokens"
        report.findings.extend(_tokenizer_findings(records, tokenizer, max_length, report))
    else:
        report.lengths = _length_table(records, lambda text: len(_flatten(text)))
    bias = _length_bias(records, report.length_unit, tokenizer)
    if bias:
        report.length_bias = bias
        skew = bias["chosen_longer"] - 0.5
        if abs(skew) > LENGTH_BIAS_THRESHOLD:
            report.findings.append(Finding(
                "length bias", bias["pairs"],
                f"chosen is the longer response in {bias['chosen_longer']:.0%} of pairs; a policy can "
                "learn length instead of quality (consider LN-DPO/SimPO or length-controlled eval)",
            ))
    return report


def _no_records_detail(error: NoRecordsError) -> str:
    # Skipped rows get their own findings below, with examples; the loader's hint for them
    # (fix the first, run `alignlab data check`) would point back here.
    if error.reason == "all rows dropped":
        return error.message
    return f"{error.message}; hint: {error.hint}"


def _flatten(text: Any) -> str:
    return "\n".join(m["content"] for m in text) if is_chat(text) else text


def _normalise(text: Any) -> str:
    flat = _flatten(text)
    # Punctuation-only texts ("^^" vs "^") would all normalise to "": keep them as they are.
    return re.sub(r"\W+", " ", flat.lower()).strip() or flat.strip()


def _duplicates(records: Sequence[Record], locations: Sequence[Location]) -> list[Finding]:
    """Pairs that occur twice, and pairs whose two responses differ only in case/punctuation."""
    seen: Counter = Counter()
    near: list[str] = []
    for index, record in enumerate(records):
        if not isinstance(record, PreferencePair):
            continue
        key = (_normalise(record.prompt), _normalise(record.chosen), _normalise(record.rejected))
        seen[key] += 1
        if key[1] == key[2] and record.chosen != record.rejected:
            near.append(f"{locations[index]}: {_flatten(record.chosen)[:60]!r} vs "
                        f"{_flatten(record.rejected)[:60]!r}")
    repeats = sum(count - 1 for count in seen.values() if count > 1)
    return [
        Finding("duplicate pairs", repeats, "same prompt, chosen and rejected (ignoring case and punctuation)"),
        Finding("near-identical chosen and rejected", len(near), "differ only in case, spacing or punctuation",
                near[:MAX_EXAMPLES]),
    ]


def _tokenizer_findings(records: Sequence[Record], tokenizer: Any, max_length: int | None,
                        report: DoctorReport) -> list[Finding]:
    encoder = RecordTokenizer(tokenizer, TokenizeOptions(max_length=max_length))
    result = encoder.map(records)
    stats = result.stats
    prompts, chosen, rejected, empty = [], [], [], 0
    for item in result.items:
        prompts.append(len(item.prompt_ids))
        for name, ids in _completion_ids(item):
            (chosen if name != "rejected" else rejected).append(len(ids))
            empty += int(len(ids) <= 1)  # only the EOS: nothing was said
    report.lengths = {name: _summary(values) for name, values in
                      (("prompt", prompts), ("chosen/completion", chosen), ("rejected", rejected)) if values}
    limit = f" (max_length {max_length})" if max_length else ""
    return [
        Finding("completions cut by truncation", stats["completions_truncated"], f"lose their ending{limit}"),
        Finding("records dropped as over-long", stats["dropped_overlong"] + stats["dropped_prompt_too_long"], limit.strip()),
        Finding("prompts truncated", stats["prompts_truncated"], "kept their end"),
        Finding("empty completions (tokens)", empty, "only the EOS token"),
        Finding("EOS already in text", stats["eos_in_text"], "the completion text carries its own EOS; kept once"),
        Finding("BOS already in text", stats["bos_in_text"], "the prompt text carries its own BOS; kept once"),
    ]


def _completion_ids(item: Any) -> list[tuple[str, Sequence[int]]]:
    if hasattr(item, "chosen_ids"):
        return [("chosen", item.chosen_ids), ("rejected", item.rejected_ids)]
    if hasattr(item, "responses_ids"):
        return [("completion", ids) for ids in item.responses_ids]
    return [("completion", getattr(item, "completion_ids", None) or item.response_ids)]


def _length_table(records: Sequence[Record], measure: Any) -> dict[str, dict[str, float]]:
    columns: dict[str, list[int]] = {"prompt": [], "chosen/completion": [], "rejected": []}
    for record in records:
        columns["prompt"].append(measure(record.instruction if isinstance(record, Judged) else record.prompt))
        if isinstance(record, PreferencePair):
            columns["chosen/completion"].append(measure(record.chosen))
            columns["rejected"].append(measure(record.rejected))
        elif isinstance(record, RankedResponses):
            columns["chosen/completion"].extend(measure(text) for text in record.responses)
        elif isinstance(record, StepwiseExample):  # the solution, its steps as one text
            columns["chosen/completion"].append(measure("".join(record.steps)))
        else:
            columns["chosen/completion"].append(measure(record.response if isinstance(record, Judged)
                                                        else record.completion))
    return {name: _summary(values) for name, values in columns.items() if values}


def _summary(values: list[int]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "min": ordered[0],
        "median": statistics.median(ordered),
        "mean": statistics.fmean(ordered),
        "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        "max": ordered[-1],
    }


def _length_bias(records: Sequence[Record], unit: str, tokenizer: Any) -> dict[str, float]:
    """Share of pairs whose chosen response is longer, and the mean length difference."""
    pairs = [r for r in records if isinstance(r, PreferencePair)]
    if not pairs:
        return {}
    if tokenizer is not None:
        def measure(text: Any) -> int:
            return len(tokenizer(_flatten(text), add_special_tokens=False)["input_ids"])
    else:
        def measure(text: Any) -> int:
            return len(_flatten(text))
    bias = length_bias([measure(p.chosen) for p in pairs], [measure(p.rejected) for p in pairs])
    return {
        "pairs": len(pairs),
        # All lengths equal: no length preference at all, reported as an even split.
        "chosen_longer": bias.chosen_longer_share if bias.chosen_longer_share is not None else 0.5,
        "mean_difference": bias.mean_length_difference,
    }
