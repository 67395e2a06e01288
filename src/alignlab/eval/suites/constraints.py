"""Verifiable constraints (Wang, Shang, Jain, Wang, Ning, Min, Castelli, Benajiba, Roth 2024, "From
Instructions to Constraints: Language Model Alignment with Automatic Constraint Verification", arXiv
2403.06326, the ACT method): how often a response satisfies the checkable constraints of its prompt.

Example: ``alignlab eval --suite constraints --model runs/sft/model --items my_prompts.jsonl --out runs/eval``

Protocol. Each item is a prompt x with a set C(x) of constraints, each checked by a cheap rule
(a *verifier*, :data:`CONSTRAINTS`). The model answers every prompt once (greedy unless a
temperature is set); each constraint is satisfied or not, and the response's **constraint
satisfaction rate** is ``CSR(x, y) = (1/|C(x)|) Σ_{c∈C(x)} 1[verifier_c(x, y) = satisfied]`` (the
paper's CSR). The prompt is sent as written (it should state its constraints in words); the run
option ``append_constraints=True`` adds one line per constraint in words.

The paper groups constraints by the arguments of their verifier: (i) the response alone (label
set, length, format), (ii) the response and the input (e.g. a summary extracted from its source),
(iii) several responses jointly (e.g. mutually consistent temporal answers). The verifiers here
are of class (i), and ``extractive`` of class (ii); class (iii) needs several responses per
verifier call and is not implemented.

Metrics:

- ``csr``: mean over items of CSR(x, y); s.e. = s.d./√n over items;
- ``all_satisfied``: share of items whose response satisfies every constraint (CSR = 1), binomial s.e.;
- the table ``per_constraint_type``: for each constraint type, the share of its instances (over
  all items) that are satisfied, with a binomial s.e. (instances of one item are not independent).

:func:`act_pairs` is ACT's data construction: with K sampled responses per prompt, each scored by
its CSR, every pair with CSR_i > CSR_j gives a preference (y_i ≻ y_j); ties give none. It returns
paired rows ``{"prompt", "chosen", "rejected"}`` and ranked rows ``{"prompt", "responses",
"scores"}`` (the responses sorted by CSR, the CSRs as scores: alignlab's ranked format), ready for
``alignlab train``. The paper trains with a ranking loss over the CSR-ordered list; its exact
loss, K and sampling temperature were not checked here (only the abstract and a summary of the
paper were read), so the choice of loss is left to the user (any paired loss on the pairs, or a
ranked loss on the ranked rows).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from alignlab.data.readers import Location
from alignlab.eval.suites.base import (
    Metric,
    Suite,
    SuiteResult,
    proportion,
    register_suite,
    require,
)
from alignlab.registry import suggest
from alignlab.rewards.rules import length_of

# ---- verifiers -----------------------------------------------------------------------------


class Constraint:
    """One checkable constraint: its ``type`` name, the paper's verifier class and a value.

    Subclasses define :meth:`check` (the verifier), :meth:`describe` (the constraint in words) and,
    where they take a value, :meth:`parse_value` (raises ``ValueError`` with the problem)."""

    type: ClassVar[str]
    verifier_class: ClassVar[str] = "i"
    """The paper's class: "i" (the response alone) or "ii" (the response and the prompt)."""
    value_format: ClassVar[str] = "no value (or true)"

    def __init__(self, value: Any = None) -> None:
        self.value = self.parse_value(value)

    @classmethod
    def parse_value(cls, value: Any) -> Any:
        if value is not None and value is not True:
            raise ValueError(f"{cls.type} takes no value, got {value!r}")
        return None

    def check(self, response: str, prompt: str = "") -> bool:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:
        return {"type": self.type} if self.value is None else {"type": self.type, "value": self.value}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.value!r})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.value == other.value  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((self.type, json.dumps(self.value, sort_keys=True)))


CONSTRAINTS: dict[str, type[Constraint]] = {}
"""Every constraint type by name."""


def _constraint(cls: type[Constraint]) -> type[Constraint]:
    CONSTRAINTS[cls.type] = cls
    return cls


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} needs an integer ≥ 0, got {value!r}")
    return value


def _words(value: Any, name: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError(f"{name} needs a non-empty list of non-empty strings, got {value!r}")
    return tuple(v.strip() for v in value)


def sentences_of(text: str) -> list[str]:
    """Sentences: pieces ending in ``.``, ``!`` or ``?`` followed by white space (or the end), each
    with at least one letter or digit; text without final punctuation is one sentence.
    Abbreviations ("e.g. this") split sentences."""
    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if re.search(r"\w", s)]


def _unit_length(text: str, unit: str) -> int:
    return len(sentences_of(text)) if unit == "sentences" else length_of(text, unit)  # type: ignore[arg-type]


class _Bound(Constraint):
    unit: ClassVar[str]
    upper: ClassVar[bool]
    value_format = "an integer ≥ 0"

    @classmethod
    def parse_value(cls, value: Any) -> int:
        return _count(value, cls.type)

    def check(self, response: str, prompt: str = "") -> bool:
        n = _unit_length(response, self.unit)
        return n <= self.value if self.upper else n >= self.value

    def describe(self) -> str:
        unit = {"chars": "characters"}.get(self.unit, self.unit)
        return f"Use {'at most' if self.upper else 'at least'} {self.value} {unit}."


@_constraint
class MaxWords(_Bound):
    """At most ``value`` words (whitespace-separated)."""
    type, unit, upper = "max_words", "words", True


@_constraint
class MinWords(_Bound):
    """At least ``value`` words (whitespace-separated)."""
    type, unit, upper = "min_words", "words", False


@_constraint
class MaxSentences(_Bound):
    """At most ``value`` sentences (:func:`sentences_of`)."""
    type, unit, upper = "max_sentences", "sentences", True


@_constraint
class MinSentences(_Bound):
    """At least ``value`` sentences (:func:`sentences_of`)."""
    type, unit, upper = "min_sentences", "sentences", False


@_constraint
class MaxChars(_Bound):
    """At most ``value`` characters (all of them, white space included)."""
    type, unit, upper = "max_chars", "chars", True


@_constraint
class MinChars(_Bound):
    """At least ``value`` characters (all of them, white space included)."""
    type, unit, upper = "min_chars", "chars", False


def _occurs(phrase: str, text: str) -> bool:
    """``phrase`` in ``text``, case-insensitively, not inside a longer word ("cat" is not in "catalog")."""
    left = r"(?<!\w)" if phrase[0].isalnum() or phrase[0] == "_" else ""
    right = r"(?!\w)" if phrase[-1].isalnum() or phrase[-1] == "_" else ""
    return re.search(left + re.escape(phrase) + right, text, re.IGNORECASE) is not None


@_constraint
class IncludeKeywords(Constraint):
    """Every keyword occurs (case-insensitive, as whole words)."""
    type = "include_keywords"
    value_format = "a list of keywords (or one keyword)"

    @classmethod
    def parse_value(cls, value: Any) -> tuple[str, ...]:
        return _words(value, cls.type)

    def check(self, response: str, prompt: str = "") -> bool:
        return all(_occurs(k, response) for k in self.value)

    def describe(self) -> str:
        return "Include the words " + ", ".join(f"'{k}'" for k in self.value) + "."


@_constraint
class ForbiddenWords(Constraint):
    """No forbidden word occurs (case-insensitive, as whole words)."""
    type = "forbidden_words"
    value_format = "a list of words (or one word)"

    @classmethod
    def parse_value(cls, value: Any) -> tuple[str, ...]:
        return _words(value, cls.type)

    def check(self, response: str, prompt: str = "") -> bool:
        return not any(_occurs(k, response) for k in self.value)

    def describe(self) -> str:
        return "Do not use the words " + ", ".join(f"'{k}'" for k in self.value) + "."


FENCE = re.compile(r"^```[A-Za-z]*\s*\n?(.*?)\n?```$", re.S)


@_constraint
class JsonFormat(Constraint):
    """The whole response (inside a Markdown code fence, if it has one) parses as JSON; with
    ``value`` (a list of keys) it is an object that has every key."""
    type = "json_format"
    value_format = "nothing, or a list of keys the JSON object must have"

    @classmethod
    def parse_value(cls, value: Any) -> tuple[str, ...] | None:
        return None if value is None or value is True else _words(value, cls.type)

    def check(self, response: str, prompt: str = "") -> bool:
        text = response.strip()
        fenced = FENCE.match(text)
        try:
            parsed = json.loads(fenced.group(1) if fenced else text)
        except ValueError:
            return False
        if self.value is None:
            return True
        return isinstance(parsed, dict) and all(k in parsed for k in self.value)

    def describe(self) -> str:
        keys = "" if self.value is None else " object with the keys " + ", ".join(f'"{k}"' for k in self.value)
        return f"Answer in JSON{keys}."


def _phrase(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} needs a non-empty string, got {value!r}")
    return value.strip()


@_constraint
class StartsWith(Constraint):
    """The response, stripped of surrounding white space, starts with ``value`` (case-insensitive)."""
    type = "starts_with"
    value_format = "a non-empty string"

    @classmethod
    def parse_value(cls, value: Any) -> str:
        return _phrase(value, cls.type)

    def check(self, response: str, prompt: str = "") -> bool:
        return response.strip().lower().startswith(self.value.lower())

    def describe(self) -> str:
        return f"Start your answer with '{self.value}'."


@_constraint
class EndsWith(Constraint):
    """The response, stripped of surrounding white space, ends with ``value`` (case-insensitive)."""
    type = "ends_with"
    value_format = "a non-empty string"

    @classmethod
    def parse_value(cls, value: Any) -> str:
        return _phrase(value, cls.type)

    def check(self, response: str, prompt: str = "") -> bool:
        return response.strip().lower().endswith(self.value.lower())

    def describe(self) -> str:
        return f"End your answer with '{self.value}'."


@_constraint
class Lowercase(Constraint):
    """No upper-case letter, and at least one letter (an empty response does not count)."""
    type = "lowercase"

    def check(self, response: str, prompt: str = "") -> bool:
        return response == response.lower() and any(c.isalpha() for c in response)

    def describe(self) -> str:
        return "Write in lowercase letters only."


@_constraint
class Uppercase(Constraint):
    """No lower-case letter, and at least one letter (an empty response does not count)."""
    type = "uppercase"

    def check(self, response: str, prompt: str = "") -> bool:
        return response == response.upper() and any(c.isalpha() for c in response)

    def describe(self) -> str:
        return "Write in capital letters only."


BULLET = re.compile(r"^\s*[-*•+]\s+\S", re.M)


@_constraint
class BulletCount(Constraint):
    """Exactly ``value`` bullet lines (lines starting with ``-``, ``*``, ``+`` or ``•`` and a space)."""
    type = "bullet_count"
    value_format = "an integer ≥ 0 (exactly that many bullet points)"

    @classmethod
    def parse_value(cls, value: Any) -> int:
        return _count(value, cls.type)

    def check(self, response: str, prompt: str = "") -> bool:
        return len(BULLET.findall(response)) == self.value

    def describe(self) -> str:
        return f"Use exactly {self.value} bullet points ('- ...')."


def paragraphs_of(text: str) -> list[str]:
    """Paragraphs: blocks of text separated by one or more blank lines (empty blocks not counted)."""
    return [p for p in re.split(r"\n\s*\n", text) if p.strip()]


@_constraint
class Paragraphs(Constraint):
    """Exactly ``value`` paragraphs (:func:`paragraphs_of`)."""
    type = "paragraphs"
    value_format = "an integer ≥ 1 (exactly that many paragraphs)"

    @classmethod
    def parse_value(cls, value: Any) -> int:
        if _count(value, cls.type) < 1:
            raise ValueError(f"{cls.type} needs an integer ≥ 1, got {value!r}")
        return value

    def check(self, response: str, prompt: str = "") -> bool:
        return len(paragraphs_of(response)) == self.value

    def describe(self) -> str:
        return f"Write exactly {self.value} paragraphs, separated by blank lines."


@_constraint
class EnglishAscii(Constraint):
    """Every character is ASCII and there is at least one letter: a cheap proxy for "answer in
    English" (it is no language identifier: ASCII French passes, English with "café" fails)."""
    type = "english_ascii"

    def check(self, response: str, prompt: str = "") -> bool:
        return response.isascii() and any(c.isalpha() for c in response)

    def describe(self) -> str:
        return "Answer in English, with plain ASCII characters only."


@_constraint
class OneOf(Constraint):
    """The response, stripped of white space, quotes and a final ``.`` or ``!``, equals one of the
    options (case-insensitive): the label-set constraint of the paper's entity typing."""
    type = "one_of"
    value_format = "a list of allowed answers"

    @classmethod
    def parse_value(cls, value: Any) -> tuple[str, ...]:
        return _words(value, cls.type)

    def check(self, response: str, prompt: str = "") -> bool:
        answer = response.strip().strip("\"'").rstrip(".!").strip().lower()
        return answer in {v.lower() for v in self.value}

    def describe(self) -> str:
        return "Answer with exactly one of: " + ", ".join(self.value) + "."


WORD = re.compile(r"\w+")


@_constraint
class Extractive(Constraint):
    """At least the share ``value`` of the response's words (lower-cased ``\\w+`` tokens) occur in
    the prompt: a class (ii) verifier, reading the response and the input (an empty response fails)."""
    type = "extractive"
    verifier_class = "ii"
    value_format = "a share in (0, 1]"

    @classmethod
    def parse_value(cls, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
            raise ValueError(f"{cls.type} needs a share in (0, 1], got {value!r}")
        return float(value)

    def check(self, response: str, prompt: str = "") -> bool:
        words = WORD.findall(response.lower())
        source = set(WORD.findall(prompt.lower()))
        return bool(words) and sum(w in source for w in words) / len(words) >= self.value

    def describe(self) -> str:
        return f"Use words from the text: at least {self.value:.0%} of your words must come from it."


def known_types() -> str:
    return ", ".join(f"{name} ({cls.value_format})" for name, cls in CONSTRAINTS.items())


def build_constraint(spec: Mapping[str, Any] | str) -> Constraint:
    """A constraint from ``{"type": ..., "value": ...}`` (or a type name); ``ValueError`` if invalid."""
    if isinstance(spec, str):
        spec = {"type": spec}
    name = spec.get("type")
    if name not in CONSTRAINTS:
        raise ValueError(f"unknown constraint type {name!r}.{suggest(str(name), CONSTRAINTS)} "
                         f"Known types: {', '.join(CONSTRAINTS)}")
    return CONSTRAINTS[name](spec.get("value"))


def csr(constraints: Sequence[Constraint], response: str, prompt: str = "") -> tuple[float, list[bool]]:
    """CSR(x, y) = (1/|C(x)|) Σ 1[satisfied], and each constraint's verdict."""
    if not constraints:
        raise ValueError("CSR needs at least one constraint")
    verdicts = [bool(c.check(response, prompt)) for c in constraints]
    return sum(verdicts) / len(verdicts), verdicts


# ---- items and the suite -------------------------------------------------------------------


@dataclass(frozen=True)
class ConstraintItem:
    prompt: str
    constraints: tuple[Constraint, ...]
    id: str = ""

    def text(self, append_constraints: bool = False) -> str:
        """The prompt sent to the model; with ``append_constraints`` each constraint in words after it."""
        if not append_constraints:
            return self.prompt
        return self.prompt + "\n\nConstraints:\n" + "\n".join(f"- {c.describe()}" for c in self.constraints)


def _mean_se(values: Sequence[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values))


def constraint_metrics(rates: Sequence[float]) -> list[Metric]:
    """``csr`` (mean, s.e. = s.d./√n) and ``all_satisfied`` from each item's CSR."""
    mean, se = _mean_se(rates)
    share, share_se = proportion(r == 1.0 for r in rates)
    return [
        Metric("csr", mean, "mean over items of CSR(x, y) = (1/|C(x)|) Σ_c 1[verifier_c(x, y) satisfied] (the "
               "paper's constraint satisfaction rate); s.e. = s.d./√n", se),
        Metric("all_satisfied", share, "share of items whose response satisfies every constraint (CSR = 1)",
               share_se),
    ]


def per_type_table(items: Sequence[ConstraintItem], verdicts: Sequence[Sequence[bool]]) -> list[dict[str, Any]]:
    """For each constraint type: instances, satisfied, share (binomial s.e.)."""
    by_type: dict[str, list[bool]] = {}
    for item, item_verdicts in zip(items, verdicts, strict=True):
        for c, v in zip(item.constraints, item_verdicts, strict=True):
            by_type.setdefault(c.type, []).append(v)
    table = []
    for name in sorted(by_type):
        share, se = proportion(by_type[name])
        table.append({"constraint type": name, "verifier class": CONSTRAINTS[name].verifier_class,
                      "instances": len(by_type[name]), "satisfied": sum(by_type[name]),
                      "share": round(share, 4) if share is not None else None,
                      "± s.e.": round(se, 4) if se is not None else None})
    return table


@register_suite
class Constraints(Suite):
    name = "constraints"
    summary = "constraint satisfaction rate on verifiable constraints (ACT, Wang et al. 2024, arXiv 2403.06326)"
    item_format = ('{"prompt": str, "constraints": [{"type": TYPE, "value": ...}, ...] (at least one), '
                   '"id": str (optional)}; TYPE: ' + ", ".join(CONSTRAINTS))

    def embedded_items(self) -> list[dict]:
        return [
            {"id": "fruit-bullets", "prompt": "List three fruits as a bulleted list with exactly three bullets, "
             "in at most 20 words.", "constraints": [{"type": "bullet_count", "value": 3},
                                                     {"type": "max_words", "value": 20}]},
            {"id": "person-json", "prompt": 'Describe a fictional person as a JSON object with the keys "name" '
             'and "age", and nothing else.', "constraints": [{"type": "json_format", "value": ["name", "age"]}]},
            {"id": "sky-lowercase", "prompt": "In at most two sentences and in lowercase letters only: why is the "
             "sky blue?", "constraints": [{"type": "lowercase"}, {"type": "max_sentences", "value": 2}]},
            {"id": "ocean-words", "prompt": "Write one sentence about the ocean that uses the words 'blue' and "
             "'deep' but not the word 'water'.", "constraints": [
                 {"type": "include_keywords", "value": ["blue", "deep"]},
                 {"type": "forbidden_words", "value": ["water"]}, {"type": "max_sentences", "value": 1}]},
            {"id": "yes-thanks", "prompt": "Can cats see in the dark? Start your answer with 'Yes' and end it "
             "with 'Thank you.'", "constraints": [{"type": "starts_with", "value": "Yes"},
                                                  {"type": "ends_with", "value": "Thank you."}]},
            {"id": "tomato-label", "prompt": "Is a tomato botanically a fruit or a vegetable? Answer with one "
             "word: fruit or vegetable.", "constraints": [{"type": "one_of", "value": ["fruit", "vegetable"]}]},
            {"id": "autumn-paragraphs", "prompt": "Write two short paragraphs about autumn in plain English, "
             "separated by a blank line, at least 20 words in all.", "constraints": [
                 {"type": "paragraphs", "value": 2}, {"type": "english_ascii"},
                 {"type": "min_words", "value": 20}]},
            {"id": "greeting-caps", "prompt": "WRITE A SHORT GREETING IN CAPITAL LETTERS, UNDER 40 CHARACTERS.",
             "constraints": [{"type": "uppercase"}, {"type": "max_chars", "value": 40},
                             {"type": "min_chars", "value": 2}]},
            {"id": "committee-extract", "prompt": "Summarise in at most 15 words, using only words from the "
             "text: 'The committee met on Monday and approved the new budget for the city library, which "
             "will open two more branches next year.'", "constraints": [
                 {"type": "extractive", "value": 0.8}, {"type": "max_words", "value": 15},
                 {"type": "min_sentences", "value": 1}]},
        ]

    def parse_item(self, row: Mapping, where: Location) -> ConstraintItem:
        hint = f"constraints items: {self.item_format}"
        prompt = require(row, "prompt", where, hint=hint)
        specs = require(row, "constraints", where, list, hint=hint)
        if not specs:
            raise where.error("'constraints' is empty: an item needs at least one", field="constraints", hint=hint)
        unknown = sorted(set(row) - {"prompt", "constraints", "id"})
        if unknown:
            raise where.error(f"unknown fields {unknown}", field=unknown[0], hint=hint)
        constraints = []
        for i, spec in enumerate(specs):
            at = f"constraints[{i}]"
            if isinstance(spec, str):
                spec = {"type": spec}
            if not isinstance(spec, Mapping):
                raise where.error(f"a constraint must be an object, got {type(spec).__name__}", field=at, hint=hint)
            extra = sorted(set(spec) - {"type", "value"})
            if extra:
                raise where.error(f"unknown keys {extra} in a constraint (it has 'type' and 'value')",
                                  field=f"{at}.{extra[0]}", hint=hint)
            name = spec.get("type")
            if not isinstance(name, str) or name not in CONSTRAINTS:
                raise where.error(f"unknown constraint type {name!r}.{suggest(str(name), CONSTRAINTS)}",
                                  field=f"{at}.type", hint=f"known types: {known_types()}")
            try:
                constraints.append(CONSTRAINTS[name](spec.get("value")))
            except ValueError as error:
                raise where.error(str(error), field=f"{at}.value",
                                  hint=f"{name}: {CONSTRAINTS[name].value_format}") from None
        item_id = row.get("id")
        return ConstraintItem(prompt, tuple(constraints), str(item_id) if item_id is not None else str(where))

    def run(self, items: Sequence[ConstraintItem], responder, reference=None, *, append_constraints: bool = False,
            **_: object) -> SuiteResult:
        prompts = [i.text(append_constraints) for i in items]
        responses = [r[0] for r in responder.respond(prompts)]
        scored = [csr(i.constraints, r, p) for i, r, p in zip(items, responses, prompts, strict=True)]
        rows = [{"id": i.id, "prompt": p, "response": r, "csr": rate,
                 "constraints": [{**c.spec(), "satisfied": v} for c, v in zip(i.constraints, verdicts, strict=True)]}
                for i, p, r, (rate, verdicts) in zip(items, prompts, responses, scored, strict=True)]
        notes = ["CSR counts each constraint as satisfied or not by a rule (its verifier); the paper's class (iii) "
                 "verifiers (several responses judged jointly) are not implemented.",
                 "Prompts are sent as written" + (", each followed by its constraints in words." if append_constraints
                                                  else "; append_constraints=True adds the constraints in words.")]
        return SuiteResult(self.name, constraint_metrics([s[0] for s in scored]), rows,
                           {"per_constraint_type": per_type_table(items, [s[1] for s in scored])}, notes,
                           inputs={"append_constraints": append_constraints})


# ---- ACT's preference data -----------------------------------------------------------------


@dataclass
class ActData:
    """ACT's training data from sampled responses: paired rows, ranked rows and counts."""

    pairs: list[dict[str, Any]] = field(default_factory=list)
    """``{"prompt", "chosen", "rejected"}``: every pair of one prompt's samples with CSR_i > CSR_j."""
    ranked: list[dict[str, Any]] = field(default_factory=list)
    """``{"prompt", "responses", "scores"}``: one prompt's samples sorted by CSR, the CSRs as scores."""
    counts: dict[str, int] = field(default_factory=dict)

    def write(self, directory: str | Path) -> dict[str, Path]:
        """``pairs.jsonl`` and ``ranked.jsonl`` in ``directory`` (each row checked as alignlab reads it)."""
        from alignlab.data.convert import write_jsonl
        from alignlab.data.records import PreferencePair, RankedResponses

        directory = Path(directory)
        paths = {"pairs": directory / "pairs.jsonl", "ranked": directory / "ranked.jsonl"}
        write_jsonl((PreferencePair(**row) for row in self.pairs), paths["pairs"])
        write_jsonl((RankedResponses(r["prompt"], tuple(r["responses"]), scores=tuple(r["scores"]))
                     for r in self.ranked), paths["ranked"])
        return paths


def act_pairs(items: Sequence[ConstraintItem], samples: Sequence[Sequence[str]], *,
              append_constraints: bool = False) -> ActData:
    """ACT's preference data from K sampled responses per item (``samples[i]`` answers ``items[i]``).

    Each response is scored by its CSR; the responses are sorted by CSR (highest first, sampling
    order among ties), and every pair (y_i, y_j) with CSR_i > CSR_j gives a row (y_i chosen, y_j
    rejected): K(K−1)/2 rows at most, none between equal CSRs. The ranked row keeps all K
    responses with their CSRs as scores; a prompt whose samples all tie (or with fewer than two
    samples) gives neither a pair nor a ranked row (counted in ``counts["all_tied"]``). The prompt
    in the rows is the text the model was asked (:meth:`ConstraintItem.text`)."""
    data = ActData(counts={"prompts": len(items), "pairs": 0, "ranked": 0, "all_tied": 0})
    for item, responses in zip(items, samples, strict=True):
        prompt = item.text(append_constraints)
        scored = sorted(((csr(item.constraints, r, prompt)[0], k, r) for k, r in enumerate(responses)),
                        key=lambda s: (-s[0], s[1]))
        pairs = [{"prompt": prompt, "chosen": a[2], "rejected": b[2]}
                 for i, a in enumerate(scored) for b in scored[i + 1:] if a[0] > b[0]]
        if not pairs:
            data.counts["all_tied"] += 1
            continue
        data.pairs += pairs
        data.ranked.append({"prompt": prompt, "responses": [s[2] for s in scored], "scores": [s[0] for s in scored]})
    data.counts["pairs"], data.counts["ranked"] = len(data.pairs), len(data.ranked)
    return data
