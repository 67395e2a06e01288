"""Answer verifiers: 1.0 when a completion's final answer matches the reference, 0.0 when it does not.

Example: ``build_reward("numeric_answer")(["6*7?"], ["It is 42."], {"answer": ["42"]})  # [1.0]``

The answer is read from the completion by :func:`extract_answer` (``\\boxed{}``, GSM8K's
``#### X``, ``<answer>`` tags, "the answer is X"). A completion with no answer to read is
unscorable (None), never wrong by default; a reference that cannot be read is an error naming its
row. The reference column may hold one answer or a list of acceptable ones.
"""

from __future__ import annotations

import math
import re
import string
import threading
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any, Literal

from alignlab.data.records import Text
from alignlab.errors import ConfigError
from alignlab.rewards.base import Columns, Reward, Scores, register_reward

Style = Literal["auto", "boxed", "gsm8k", "tag", "phrase", "none"]
STYLES: tuple[str, ...] = ("boxed", "gsm8k", "tag", "phrase")
"""The marked-answer styles, in the order ``auto`` tries them."""

_GSM8K = re.compile(r"####\s*([^\n]*)")
_TAG = re.compile(r"<answer>(.*?)</answer>", re.S | re.I)
_PHRASE = re.compile(r"answer\s+is\s*:?\s*([^\n]*)", re.I)


def extract_answer(text: str, style: Style = "auto") -> str | None:
    """The final answer marked in ``text``, or None when none is marked.

    ``boxed``: the last ``\\boxed{...}`` (or ``\\fbox{...}``), nested braces kept; ``gsm8k``: what
    follows the last ``####`` on its line; ``tag``: the last ``<answer>...</answer>``; ``phrase``:
    what follows the last "answer is" on its line, up to a sentence end; ``auto``: the first of
    these that finds one; ``none``: the whole text, stripped."""
    if style == "none":
        return text.strip()
    if style == "auto":
        for each in STYLES:
            found = extract_answer(text, each)  # type: ignore[arg-type]
            if found is not None:
                return found
        return None
    if style == "boxed":
        return _last_boxed(text)
    if style == "gsm8k":
        found = _GSM8K.findall(text)
        return found[-1].strip() if found else None
    if style == "tag":
        found = _TAG.findall(text)
        return found[-1].strip() if found else None
    if style == "phrase":
        found = _PHRASE.findall(text)
        # A sentence ends at ". " or a final "." — not at a decimal point.
        return re.split(r"\.(?:\s|$)", found[-1], maxsplit=1)[0].strip() if found else None
    raise ValueError(f"unknown answer style {style!r}; use auto, {', '.join(STYLES)} or none")


def _last_boxed(text: str) -> str | None:
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text)]
    if not starts:
        return None
    depth, start = 1, starts[-1]
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i].strip()
    return None  # unbalanced: the box was cut off


_NUMBER = r"[-+]?(?:\d{1,3}(?:,\d{3}(?!\d))+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+"
NUMBER = re.compile(rf"(?:{_NUMBER})(?:\s*/\s*(?:{_NUMBER}))?")
"""A number as written: integers with thousands commas, decimals, scientific notation, a/b."""
_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")


def numbers_in(text: str) -> list[float]:
    """The numbers written in ``text``, in order (``\\frac{a}{b}`` and ``a/b`` as a/b)."""
    text = _FRAC.sub(r"\1/\2", text)
    found = []
    for match in NUMBER.finditer(text):
        value = _number(match.group())
        if value is not None:
            found.append(value)
    return found


def _number(token: str) -> float | None:
    top, _, bottom = token.replace(",", "").replace(" ", "").partition("/")
    try:
        value = Fraction(top) / Fraction(bottom) if bottom else Fraction(top)
    except (ValueError, ZeroDivisionError):
        return None
    return float(value)


def completion_number(completion: str, style: Style = "auto") -> float | None:
    """The completion's numeric answer: the first number of its marked answer, or, when no answer
    is marked (or ``style="none"``), the last number it writes; None when it writes none."""
    marked = None if style == "none" else extract_answer(completion, style)
    if marked is not None:
        found = numbers_in(marked)
        return found[0] if found else None
    found = numbers_in(completion)
    return found[-1] if found else None


def reference_values(reference: Any, row: int, column: str, read: Callable[[Any], Any]) -> list[Any]:
    """A reference (one answer or a list of acceptable ones) read by ``read``; an unreadable one is
    an error naming its row."""
    values = list(reference) if isinstance(reference, (list, tuple)) else [reference]
    if not values:
        raise ValueError(f"row {row}: column {column!r} is an empty list; give at least one acceptable answer")
    out = []
    for value in values:
        read_value = read(value)
        if read_value is None:
            raise ValueError(f"row {row}: column {column!r} holds {value!r}, which is not a readable answer "
                             "for this verifier\n  hint: fix the reference, or choose a verifier that fits it "
                             "(exact_match compares text)")
        out.append(read_value)
    return out


@register_reward("exact_match", family="verifier", columns=("answer",),
                 summary="1 if the final answer equals a reference after normalisation (case, punctuation, articles)",
                 source="Rajpurkar et al. 2016, SQuAD, arXiv 1606.05250 (answer normalisation)")
class ExactMatch(Reward):
    """1.0 when the completion's answer equals one of the references after SQuAD normalisation
    (lower case, punctuation and the articles a/an/the removed, whitespace collapsed; an answer that
    is only an article, a multiple-choice "A", keeps it), else 0.0.

    The answer is the marked one (:func:`extract_answer` with ``style``); with none marked, the
    whole completion when ``fallback_whole=True`` (the default), else the completion is
    unscorable (None). A reference that normalises to nothing is an error."""

    def __init__(self, column: str = "answer", style: Style = "auto", fallback_whole: bool = True) -> None:
        extract_answer("", style)  # checks the style now
        self.column, self.style, self.fallback_whole = column, style, fallback_whole
        self.columns = (column,)

    def score(self, prompts: Sequence[Text], completions: Sequence[str], columns: Columns) -> Scores:
        scores: Scores = []
        for row, (completion, reference) in enumerate(zip(completions, columns[self.column], strict=True)):
            accepted = reference_values(reference, row, self.column, lambda v: normalize_answer(str(v)) or None)
            answer = extract_answer(completion, self.style)
            if answer is None and self.fallback_whole:
                answer = completion
            scores.append(None if answer is None else float(normalize_answer(answer) in accepted))
        return scores


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces. An answer
    that is nothing but an article keeps it: "(A)" is the choice "a", not the empty answer."""
    words = "".join(ch for ch in text.lower() if ch not in string.punctuation).split()
    return " ".join([w for w in words if w not in ("a", "an", "the")] or words)


@register_reward("numeric_answer", family="verifier", columns=("answer",),
                 summary="1 if the completion's number equals the reference within a tolerance; None if it states none")
class NumericAnswer(Reward):
    """1.0 when the completion's number (:func:`completion_number`) is within ``rel_tol`` /
    ``abs_tol`` of a reference number (``math.isclose``), 0.0 when it is not, None when the
    completion writes no number. Thousands commas, decimals, scientific notation and fractions
    (``3/4``, ``\\frac{3}{4}``) are read; a reference that is not a number is an error."""

    def __init__(self, column: str = "answer", style: Style = "auto", rel_tol: float = 1e-6,
                 abs_tol: float = 1e-9) -> None:
        extract_answer("", style)
        if rel_tol < 0 or abs_tol < 0:
            raise ValueError("rel_tol and abs_tol must be ≥ 0")
        self.column, self.style, self.rel_tol, self.abs_tol = column, style, rel_tol, abs_tol
        self.columns = (column,)

    def score(self, prompts: Sequence[Text], completions: Sequence[str], columns: Columns) -> Scores:
        scores: Scores = []
        for row, (completion, reference) in enumerate(zip(completions, columns[self.column], strict=True)):
            accepted = reference_values(reference, row, self.column, _reference_number)
            got = completion_number(completion, self.style)
            scores.append(None if got is None else
                          float(any(math.isclose(got, a, rel_tol=self.rel_tol, abs_tol=self.abs_tol)
                                    for a in accepted)))
        return scores


def _reference_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    text = _FRAC.sub(r"\1/\2", str(value)).strip().strip("$").strip()
    whole = NUMBER.fullmatch(text)
    return _number(whole.group()) if whole else None


@register_reward("math_answer", family="verifier", columns=("answer",),
                 summary="1 if math-verify finds the completion's answer equal to the reference (needs the math extra)",
                 source="Hugging Face math-verify (Kydlíček et al. 2025), the verifier of Open R1")
class MathAnswer(Reward):
    """1.0 when math-verify judges the completion's answer (LaTeX or plain expressions; sets,
    intervals, fractions, units) equal to the reference, 0.0 when not, None when it finds no
    answer in the completion. Needs the ``math`` extra: ``pip install 'alignlab[math]'``.

    math-verify's timeouts use signals, which work only in the main thread: elsewhere it runs
    without them."""

    def __init__(self, column: str = "answer", timeout: int = 5) -> None:
        try:
            import math_verify
        except ImportError:
            raise ConfigError("reward 'math_answer' needs math-verify\n  hint: pip install 'alignlab[math]'") from None
        self.parse, self.verify = math_verify.parse, math_verify.verify
        self.column, self.timeout = column, timeout
        self.columns = (column,)

    def score(self, prompts: Sequence[Text], completions: Sequence[str], columns: Columns) -> Scores:
        timeout = self.timeout if threading.current_thread() is threading.main_thread() else None
        scores: Scores = []
        for row, (completion, reference) in enumerate(zip(completions, columns[self.column], strict=True)):
            gold = reference_values(reference, row, self.column,
                                    lambda v: self.parse(_as_math(v), parsing_timeout=timeout) or None)
            found = self.parse(completion, parsing_timeout=timeout)
            if not found:
                scores.append(None)
                continue
            scores.append(float(any(self.verify(g, found, timeout_seconds=timeout) for g in gold)))
        return scores


def _as_math(value: Any) -> str:
    """A reference as math-verify reads it best: inside ``$...$`` unless it has its own delimiters."""
    text = str(value).strip()
    return text if "$" in text else f"${text}$"
