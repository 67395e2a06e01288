"""Rule rewards: length target and penalty, regex/format match, a keyword and blocklist score.

Example: ``build_reward("length_penalty(max_length=100, buffer=20)")(prompts, completions)``

Rules read the completion alone (never the prompt) and score every completion: they have no
unscorable case. Length is counted in whitespace-separated words or in characters, the unit a
user can check by eye; a token count would tie the reward to one tokenizer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

from alignlab.data.records import Text
from alignlab.rewards.base import Columns, Reward, Scores, register_reward

Unit = Literal["words", "chars"]


def length_of(text: str, unit: Unit) -> int:
    """The length of ``text`` in words (whitespace-separated) or characters."""
    if unit == "words":
        return len(text.split())
    if unit == "chars":
        return len(text)
    raise ValueError(f"unit must be 'words' or 'chars', got {unit!r}")


@register_reward("length_target", family="rule", summary="−scale·|length − target|: 0 at the target length")
class LengthTarget(Reward):
    """``−scale · |L − target|``, with L the completion's length in ``unit`` (words or chars)."""

    def __init__(self, target: int, unit: Unit = "words", scale: float = 1.0) -> None:
        if target < 0:
            raise ValueError(f"target must be ≥ 0, got {target}")
        length_of("", unit)  # checks the unit now, not at the first batch
        self.target, self.unit, self.scale = target, unit, scale

    def score(self, prompts: Sequence[Text], completions: Sequence[str], columns: Columns) -> Scores:
        return [-self.scale * abs(length_of(c, self.unit) - self.target) for c in completions]


@register_reward("length_penalty", family="rule",
                 summary="0 up to a length, then a penalty: linear, or DAPO's soft overlong punishment (buffer > 0)",
                 source="Yu et al. 2025, DAPO: An Open-Source LLM Reinforcement Learning System at Scale, "
                        "arXiv 2503.14476, Eq. 13 (soft overlong punishment)")
class LengthPenalty(Reward):
    """A penalty for length beyond a limit.

    With ``buffer = 0``: ``−scale · max(0, L − max_length)`` (linear in the excess).
    With ``buffer > 0``, DAPO's soft overlong punishment (Yu et al. 2025, arXiv 2503.14476, Eq. 13)
    scaled by ``scale``: 0 for ``L ≤ max_length − buffer``, then ``(max_length − buffer − L) / buffer``
    falling linearly to −1 at ``L = max_length``, and −1 beyond."""

    def __init__(self, max_length: int, buffer: int = 0, unit: Unit = "words", scale: float = 1.0) -> None:
        if max_length <= 0:
            raise ValueError(f"max_length must be > 0, got {max_length}")
        if not 0 <= buffer <= max_length:
            raise ValueError(f"buffer must be in [0, max_length={max_length}], got {buffer}")
        length_of("", unit)
        self.max_length, self.buffer, self.unit, self.scale = max_length, buffer, unit, scale

    def score(self, prompts: Sequence[Text], completions: Sequence[str], columns: Columns) -> Scores:
        return [self.scale * self.penalty(length_of(c, self.unit)) for c in completions]

    def penalty(self, length: int) -> float:
        if self.buffer == 0:
            return -float(max(0, length - self.max_length))
        free = self.max_length - self.buffer
        if length <= free:
            return 0.0
        return max(-1.0, (free - length) / self.buffer)


_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}


@register_reward("regex_match", family="rule",
                 summary="score_match if the completion matches a regular expression (search or full match), else score_miss")
class RegexMatch(Reward):
    """A format check: ``score_match`` when ``pattern`` is found in the completion (anywhere, or
    the whole completion with ``full=True``), else ``score_miss``. ``flags`` is a string of
    ``i`` (ignore case), ``m`` (multiline), ``s`` (dot matches newline), ``x`` (verbose)."""

    def __init__(self, pattern: str, flags: str = "", full: bool = False, score_match: float = 1.0,
                 score_miss: float = 0.0) -> None:
        unknown = sorted(set(flags) - set(_FLAGS))
        if unknown:
            raise ValueError(f"unknown regex flag(s) {unknown}; use any of {''.join(_FLAGS)}")
        bits = 0
        for flag in flags:
            bits |= _FLAGS[flag]
        try:
            self.regex = re.compile(pattern, bits)
        except re.error as exc:
            raise ValueError(f"pattern {pattern!r} is not a valid regular expression: {exc}") from None
        self.full, self.score_match, self.score_miss = full, score_match, score_miss

    def score(self, prompts: Sequence[Text], completions: Sequence[str], columns: Columns) -> Scores:
        find = self.regex.fullmatch if self.full else self.regex.search
        return [self.score_match if find(c) else self.score_miss for c in completions]


@register_reward("keyword_score", family="rule",
                 summary="share of the keywords present, minus a penalty per blocklisted term present")
class KeywordScore(Reward):
    """``hits / len(keywords) − penalty · blocked``: hits counts the ``keywords`` present in the
    completion, blocked the ``blocklist`` terms present (each term once, however often it
    occurs). Terms match as whole words by default and ignore case unless ``case_sensitive``."""

    def __init__(self, keywords: Sequence[str] = (), blocklist: Sequence[str] = (), penalty: float = 1.0,
                 case_sensitive: bool = False, whole_word: bool = True) -> None:
        if isinstance(keywords, str) or isinstance(blocklist, str):
            raise ValueError("keywords and blocklist are lists of terms, e.g. keywords=['please', 'thanks']")
        if not keywords and not blocklist:
            raise ValueError("give keywords, a blocklist or both")
        flags = 0 if case_sensitive else re.IGNORECASE

        def compile_term(term: str) -> re.Pattern[str]:
            if not term.strip():
                raise ValueError("an empty keyword or blocklist term matches everything")
            body = re.escape(term)
            return re.compile(rf"(?<!\w){body}(?!\w)" if whole_word else body, flags)

        self.keywords = [compile_term(t) for t in keywords]
        self.blocklist = [compile_term(t) for t in blocklist]
        self.penalty = penalty

    def score(self, prompts: Sequence[Text], completions: Sequence[str], columns: Columns) -> Scores:
        scores: Scores = []
        for c in completions:
            share = sum(bool(k.search(c)) for k in self.keywords) / len(self.keywords) if self.keywords else 0.0
            scores.append(share - self.penalty * sum(bool(b.search(c)) for b in self.blocklist))
        return scores
