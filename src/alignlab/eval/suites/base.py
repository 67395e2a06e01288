"""The shape every evaluation suite has: items, a responder, metrics with their definitions.

Example: ``result = get_suite("honesty").evaluate(Responder(model, tokenizer), items=None)``

A suite is a protocol: which items (an embedded set that runs in seconds on a tiny model, or the
user's file in the format the suite documents), how a response is judged, and the metrics, each
stated with its definition and, where it has one, a standard error or confidence interval. It
returns a :class:`SuiteResult`: JSON-ready, printed as tables, and one section of the HTML report.
Suites register in :data:`SUITES` with :func:`register_suite`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from alignlab.data.readers import Location, read_rows
from alignlab.errors import ConfigError, DataError
from alignlab.registry import Registry, import_named

SUITES = Registry("evaluation suite")


@dataclass(frozen=True)
class Metric:
    name: str
    value: float | None
    definition: str
    """What is counted over what, in words (and the paper's name for it)."""
    stderr: float | None = None
    interval: tuple[float, float] | None = None
    """A confidence interval (e.g. Wilson 95%) where the metric reports one."""


@dataclass
class SuiteResult:
    suite: str
    metrics: list[Metric]
    rows: list[dict[str, Any]] = field(default_factory=list)
    """One per item: the item, the response(s) and how each was judged."""
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Breakdowns (per category, per constraint ...), each a list of rows."""
    notes: list[str] = field(default_factory=list)
    inputs: dict[str, Any] = field(default_factory=dict)

    def metric(self, name: str) -> Metric:
        return next(m for m in self.metrics if m.name == name)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ResponseOptions:
    max_new_tokens: int = 64
    temperature: float = 0.0
    """0: greedy (one response per prompt); above 0 samples, seeded."""
    seed: int = 0
    batch_size: int = 16


class Responder:
    """A model (and tokenizer) answering text prompts: ``respond(prompts, n) -> n texts each``.

    Plain-string prompts go through the chat template where the tokenizer has one
    (:class:`alignlab.decode.TextSampler`); sampling is seeded per prompt and sample."""

    def __init__(self, model: Any, tokenizer: Any, options: ResponseOptions = ResponseOptions(),  # noqa: B008
                 name: str = "model") -> None:
        from alignlab.decode import SamplingOptions, TextSampler

        self.model, self.tokenizer, self.options, self.name = model, tokenizer, options, name
        self.sampler = TextSampler(model, tokenizer, SamplingOptions(
            max_new_tokens=options.max_new_tokens, temperature=options.temperature, seed=options.seed,
            batch_size=options.batch_size))

    def respond(self, prompts: Sequence[Any], n: int = 1) -> list[list[str]]:
        if not prompts:
            return []
        if self.options.temperature == 0 and n > 1:
            raise ValueError("greedy decoding gives one response per prompt; set a temperature for n > 1")
        return [[c.text for c in row] for row in self.sampler.sample(list(prompts), n)]


class FixedResponder:
    """Responses given in advance (tests, or responses a user generated elsewhere): prompt → texts."""

    def __init__(self, answers: Mapping[str, Sequence[str]] | Callable[[Any], Sequence[str]], name: str = "fixed"):
        self.answers, self.name = answers, name

    def respond(self, prompts: Sequence[Any], n: int = 1) -> list[list[str]]:
        out = []
        for prompt in prompts:
            texts = self.answers(prompt) if callable(self.answers) else self.answers[prompt]
            out.append(list(texts)[:n] if n > 1 else [list(texts)[0]])
        return out


class Suite:
    """Subclass with :attr:`name`, :attr:`summary`, :attr:`item_format`, :meth:`embedded_items`,
    :meth:`parse_item` and :meth:`run`; :meth:`evaluate` reads items and calls :meth:`run`."""

    name: ClassVar[str]
    summary: ClassVar[str]
    """One line: what it measures, after which paper."""
    item_format: ClassVar[str]
    """The documented item format: the fields of one JSONL row and what they mean."""
    needs_reference: ClassVar[bool] = False
    """Whether it compares the model with a reference model (``--ref``)."""
    trains: ClassVar[bool] = False
    """Whether it trains models itself (weak-to-strong): it takes model paths through
    ``train_and_evaluate(items, out, console, strong=..., weak=...)``, not a responder."""

    def embedded_items(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def parse_item(self, row: Mapping[str, Any], where: Location) -> Any:
        """One validated item from a row; errors through ``where.error(message, field, hint)``."""
        raise NotImplementedError

    def run(self, items: Sequence[Any], responder: Any, reference: Any = None, **options: Any) -> SuiteResult:
        raise NotImplementedError

    def items(self, path: str | Path | None = None) -> list[Any]:
        """The user's items from ``path`` (JSONL, JSON, CSV, Parquet), else the embedded set."""
        if path is None:
            return [self.parse_item(row, Location(f"<embedded {self.name} items>", row=i + 1))
                    for i, row in enumerate(self.embedded_items())]
        items = []
        for where, row in read_rows(path):
            if isinstance(row, DataError):
                raise row
            if not isinstance(row, Mapping):
                raise where.error(f"an item must be an object, got {type(row).__name__}",
                                  hint=f"{self.name} items: {self.item_format}")
            items.append(self.parse_item(row, where))
        if not items:
            raise DataError(f"no items in {path}", file=str(path), hint=f"{self.name} items: {self.item_format}")
        return items

    def evaluate(self, responder: Any, items: str | Path | Sequence[Any] | None = None, reference: Any = None,
                 **options: Any) -> SuiteResult:
        if self.needs_reference and reference is None:
            raise DataError(f"the {self.name} suite compares the model with a reference\n  hint: pass --ref")
        parsed = self.items(items) if items is None or isinstance(items, (str, Path)) else list(items)
        result = self.run(parsed, responder, reference, **options)
        result.inputs.setdefault("items", str(items) if isinstance(items, (str, Path)) else "embedded")
        result.inputs.setdefault("model", getattr(responder, "name", "model"))
        return result


def suite_section(result: SuiteResult) -> str:
    """The result as one section of the HTML report: metrics with definitions, its tables, the
    first 50 item rows (lists and mappings flattened to text), its notes."""
    from alignlab.eval.report import html_section

    metrics = [{"metric": m.name, "value": "–" if m.value is None else round(m.value, 4),
                "± s.e.": "" if m.stderr is None else round(m.stderr, 4),
                "interval": "" if m.interval is None else f"[{m.interval[0]:.3f}, {m.interval[1]:.3f}]",
                "definition": m.definition} for m in result.metrics]
    tables = {"Metrics": metrics, **result.tables}
    rows = [{k: _flat_cell(v) for k, v in r.items()} for r in result.rows[:50]]
    tables["Items (first 50)"] = rows
    return html_section(f"{result.suite}: {result.inputs.get('model')} on {result.inputs.get('items')} items",
                        {"tables": tables, "notes": result.notes})


def _flat_cell(value: Any) -> Any:
    """A row's value as a table shows it: a list as its items one per line, a mapping as
    ``key: value`` lines, numbers rounded; scalars as they are."""
    if isinstance(value, Mapping):
        return "\n".join(f"{k}: {_flat_cell(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "\n".join(str(_flat_cell(v)) for v in value)
    if isinstance(value, float):
        return round(value, 4)
    return value


def load_judge(judge: Any, default: Callable, default_name: str, call: str) -> tuple[Callable, str]:
    """A suite's judge and its name: ``default`` for None or ``default_name``, a callable as it is,
    or the user's ``"module:function"`` (imported because they named it); ``call`` says how the
    suite calls it and what it returns, for the errors."""
    if judge is None or judge == default_name:
        return default, default_name
    if callable(judge):
        return judge, getattr(judge, "__name__", "custom")
    hint = f"use '{default_name}', a function, or module:function; {call}"
    target = import_named(judge, "judge", hint)
    if not callable(target):
        raise ConfigError(f"judge {judge} is not callable\n  hint: {call}")
    return target, judge


def register_suite(cls: type[Suite]) -> type[Suite]:
    SUITES.register(cls.name, {"summary": cls.summary, "item_format": cls.item_format})(cls)
    return cls


def get_suite(name: str) -> Suite:
    return SUITES.get(name).obj()


def require(row: Mapping[str, Any], key: str, where: Location, kind: type | tuple[type, ...] = str,
            hint: str = "") -> Any:
    """``row[key]``, present and of type ``kind`` (a non-empty string for str), else a DataError."""
    if key not in row or row[key] is None:
        raise where.error(f"missing field {key!r}", field=key, hint=hint)
    value = row[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind in (int, float, (int, float)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise where.error(f"{key!r} must be {names}, got {type(value).__name__}", field=key, hint=hint)
    if isinstance(value, str) and not value.strip():
        raise where.error(f"{key!r} is empty", field=key, hint=hint)
    return value


def contains_answer(response: str, answers: Sequence[str]) -> bool:
    """Whether a normalised answer (SQuAD normalisation) occurs in the normalised response as
    consecutive whole words: "no" is not found inside "not", as a plain substring test would."""
    from alignlab.rewards.verifiers import normalize_answer

    words = normalize_answer(response).split()
    for answer in answers:
        gold = normalize_answer(answer).split()
        if gold and any(words[i:i + len(gold)] == gold for i in range(len(words) - len(gold) + 1)):
            return True
    return False


def proportion(hits: Iterable[bool]) -> tuple[float | None, float | None]:
    """(share, its binomial standard error) of a list of booleans; (None, None) for none."""
    values = [bool(h) for h in hits]
    if not values:
        return None, None
    p = sum(values) / len(values)
    return p, (p * (1 - p) / len(values)) ** 0.5
