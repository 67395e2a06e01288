"""Choosing one of N sampled solutions: majority and reward-weighted voting, ORM/PRM best-of-N.

Example: ``majority_vote([canonical_answer(c) for c in completions]).index``

Everything here takes strings and floats (answers already sampled, scores already computed), so
it runs without a model. Sources:

- Majority voting is self-consistency (Wang et al. 2023, "Self-Consistency Improves Chain of
  Thought Reasoning in Language Models", arXiv 2203.11171, Sec. 2): the answer that most sampled
  reasoning paths reach, ``argmax_a Σ_i 1[a_i = a]``.
- Weighted voting, best-of-N and the PRM's step aggregation follow Sun et al. 2024, "Easy-to-Hard
  Generalization: Scalable Alignment Beyond Human Supervision" (arXiv 2403.09472), who re-rank N
  solutions of hard MATH problems with a reward model trained on easy ones: best-of-N takes the
  highest-scored solution; weighted voting groups solutions by final answer and takes the answer
  whose solutions' scores sum highest; a solution's PRM score is the minimum of its step scores
  (their default; the product of Lightman et al. 2023, arXiv 2305.20050, is their alternative;
  the step helpers live in :mod:`alignlab.rewards.steps`, where the ``prm`` reward uses them).

Answers are compared after :func:`canonical_answer`, so that "The answer is 42.", "#### 42" and
``\\boxed{42.0}`` are one vote. A completion with no answer abstains: it is counted, never a vote.
Every tie goes to the earliest completion, so a selection is a pure function of its input order.
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from alignlab.rewards.steps import (  # noqa: F401  (the PRM's step helpers, re-exported beside rerank)
    AGGREGATES,
    ANSWER_STEP,
    STEP_SEPARATOR,
    Aggregate,
    aggregate_step_scores,
    aggregate_steps,
    split_steps,
)
from alignlab.rewards.verifiers import (
    NUMBER,
    Style,
    completion_number,
    extract_answer,
    normalize_answer,
    numbers_in,
)

Match = Literal["auto", "numeric", "exact"]
MATCHES: tuple[str, ...] = ("auto", "numeric", "exact")
"""How :func:`canonical_answer` makes answers comparable (see there)."""



_LATEX_FRAC = re.compile(r"\\[dt]?frac\s*\{[^{}]*\}\s*\{[^{}]*\}")
_SIGNIFICANT = 12
"""Numeric answers are compared to this many significant digits, so that float noise
(0.30000000000000004 against 0.3) does not split one answer into two."""


@dataclass(frozen=True)
class Vote:
    """The outcome of a vote among the N completions of one prompt."""

    answer: Hashable | None
    """The winning answer; None when no completion cast a vote."""
    index: int | None
    """The chosen completion: the first one carrying ``answer``; None when ``answer`` is."""
    totals: Mapping[Hashable, float]
    """Each answer's score, answers in order of first appearance: its vote count (majority) or
    the sum of its completions' weights (weighted)."""
    counts: Mapping[Hashable, int]
    """The completions that voted for each answer, in the same order."""
    abstained: int
    """Completions with no answer (None): counted here, not votes."""
    unscored: int = 0
    """Completions with an answer but no weight (None), which cast no vote; 0 in a majority vote."""


@dataclass(frozen=True)
class Ranked:
    """The best-scored of N solutions (best-of-N re-ranking)."""

    index: int | None
    """The chosen solution: the highest score, the lowest index among equals; None when no
    solution has a score."""
    score: float | None
    """The chosen solution's score; None when ``index`` is."""
    scores: tuple[float | None, ...]
    """Every solution's score (for a PRM, its aggregated step scores), None where it has none."""
    unscored: int
    """Solutions without a score, skipped."""


def canonical_answer(completion: str, match: Match = "auto", style: Style = "auto") -> Hashable | None:
    """The answer of ``completion`` as a voting key, or None when it states none.

    ``numeric``: the number :func:`~alignlab.rewards.verifiers.completion_number` reads (the first
    number of the marked answer, else the last number written), so ``42``, ``42.0`` and
    ``\\frac{84}{2}`` agree; "42 apples" is 42 too. ``exact``: the marked answer
    (:func:`~alignlab.rewards.verifiers.extract_answer` with ``style``), normalised with
    :func:`~alignlab.rewards.verifiers.normalize_answer` (case, punctuation, articles), which
    is for text answers: it drops the point of "42.0", making it "420".
    ``auto``: the number when the marked answer is one number and nothing else, else its
    normalised text, so "(1, 2)" and "(1, 3)" stay apart where ``numeric`` would merge them at 1;
    with no marked answer, the last number written, as in ``numeric``.

    Numbers are floats rounded to 12 significant digits; texts are strings, so a number never
    equals a text."""
    if match not in MATCHES:
        raise ValueError(f"unknown match {match!r}; use {', '.join(MATCHES)}")
    if match == "numeric":
        return _number_key(completion_number(completion, style))
    marked = extract_answer(completion, style)
    if match == "exact":
        return None if marked is None else normalize_answer(marked) or None
    if marked is None or style == "none":  # nothing marked: fall back to the last number written
        return _number_key(completion_number(completion, style))
    sole = _sole_number(marked)
    if sole is not None:
        return _number_key(sole)
    return normalize_answer(marked) or None


def _sole_number(answer: str) -> float | None:
    """The value of ``answer`` when it is one number (math dollars and a final period allowed)."""
    text = answer.strip().strip("$").strip().removesuffix(".").strip()
    if not (NUMBER.fullmatch(text) or _LATEX_FRAC.fullmatch(text)):
        return None
    found = numbers_in(text)
    return found[0] if len(found) == 1 else None


def _number_key(value: float | None) -> float | None:
    # "+ 0.0" turns -0.0 into 0.0, which already compare equal but would print apart.
    return None if value is None else float(f"{value:.{_SIGNIFICANT}g}") + 0.0


def majority_vote(answers: Sequence[Hashable | None]) -> Vote:
    """Self-consistency: the answer most completions reach (Wang et al. 2023, arXiv 2203.11171).

    ``answers`` holds one answer per completion, None where none was extracted (an abstention,
    counted in ``abstained``); pass them through :func:`canonical_answer` first so that one answer
    written two ways is one vote. A tie goes to the answer that appears first in ``answers``, and
    the chosen completion is the first carrying the winning answer."""
    _check_answers(answers, "majority_vote")
    return _tally(answers, [1.0] * len(answers))


def weighted_vote(answers: Sequence[Hashable | None], weights: Sequence[float | None], *,
                  exponentiate: bool = False) -> Vote:
    """Reward-weighted voting: the answer whose completions' weights sum highest.

    As in Sun et al. 2024 (arXiv 2403.09472), an answer's score is the plain sum of its solutions'
    reward scores (for a PRM, the aggregated score of :func:`aggregate_steps`), which should be
    probabilities of correctness, so weights must be ≥ 0. The paper does not say that it
    exponentiates; ``exponentiate=True`` is an option beyond it, for scores on a log scale (logits,
    log-probs): each weight becomes exp(w − max w), the shift keeping large scores from
    overflowing without changing the winner.

    A None answer abstains (``abstained``). A None weight is skipped and counted: that completion
    casts no vote (``unscored``) and is never chosen, as a reward that could not score a
    completion says nothing for its answer. Ties go to the answer that appears first; with all
    weights equal this is :func:`majority_vote`."""
    _check_answers(answers, "weighted_vote")
    if len(weights) != len(answers):
        raise ValueError(f"weighted_vote: {len(answers)} answers but {len(weights)} weights\n"
                         "  hint: give one weight per completion, None where it has no score")
    for i, weight in enumerate(weights):
        if weight is None:
            continue
        if not math.isfinite(weight):
            raise ValueError(f"weighted_vote: weight {i} is {weight!r}; weights are finite numbers "
                             "(None where a completion has no score)")
        if weight < 0 and not exponentiate:
            raise ValueError(f"weighted_vote: weight {i} is {weight!r}, but weights are summed as "
                             "given and must be >= 0 (probabilities of correctness)\n  hint: pass "
                             "logits through a sigmoid, or set exponentiate=True for log-scale scores")
    if exponentiate:
        top = max((w for w in weights if w is not None), default=0.0)
        weights = [None if w is None else math.exp(w - top) for w in weights]
    return _tally(answers, weights)


def _check_answers(answers: Sequence[Hashable | None], caller: str) -> None:
    if len(answers) == 0:
        raise ValueError(f"{caller}: no answers to vote on\n  hint: pass the answers of the N "
                         "sampled completions, None where none was extracted")


def _tally(answers: Sequence[Hashable | None], weights: Sequence[float | None]) -> Vote:
    # Dicts keep first-appearance order, which is the tie-break: max() returns the first maximum.
    first: dict[Hashable, int] = {}
    parts: dict[Hashable, list[float]] = {}
    abstained = unscored = 0
    for i, (answer, weight) in enumerate(zip(answers, weights, strict=True)):
        if answer is None:
            abstained += 1
        elif weight is None:
            unscored += 1
        else:
            first.setdefault(answer, i)
            parts.setdefault(answer, []).append(weight)
    # fsum: exact sums, so equal multisets of weights tie exactly whatever their order.
    totals = {answer: math.fsum(each) for answer, each in parts.items()}
    counts = {answer: len(each) for answer, each in parts.items()}
    winner = max(totals, key=totals.__getitem__, default=None)
    return Vote(answer=winner, index=None if winner is None else first[winner], totals=totals,
                counts=counts, abstained=abstained, unscored=unscored)


def best_by_orm(scores: Sequence[float | None]) -> Ranked:
    """Best-of-N: the solution with the highest reward score (Sun et al. 2024, arXiv 2403.09472).

    None scores are skipped and counted (``unscored``); ties go to the lowest index; with no
    score at all, nothing is chosen (``index`` None)."""
    if len(scores) == 0:
        raise ValueError("best_by_orm: no scores\n  hint: pass one score per sampled solution, "
                         "None where the reward model gave none")
    for i, score in enumerate(scores):
        if score is not None and math.isnan(score):
            raise ValueError(f"best_by_orm: score {i} is nan\n  hint: pass None for a solution "
                             "without a score")
    return _select(list(scores))


def _select(scores: list[float | None]) -> Ranked:
    scored = [(i, score) for i, score in enumerate(scores) if score is not None]
    # max() returns the first maximum, so the lowest index among equal scores.
    best = max(scored, key=lambda pair: pair[1], default=None)
    return Ranked(index=None if best is None else best[0], score=None if best is None else best[1],
                     scores=tuple(scores), unscored=len(scores) - len(scored))


def rerank(step_scores: Sequence[Sequence[float] | None], aggregate: Aggregate = "min", *,
           logits: bool = False) -> Ranked:
    """PRM best-of-N: aggregate each solution's step scores (:func:`aggregate_steps`), then take
    the highest, as :func:`best_by_orm` does (ties to the lowest index).

    ``step_scores`` holds one list per solution, None for a solution the PRM could not score
    (skipped and counted). The aggregated ``scores`` of the result are what :func:`weighted_vote`
    takes as weights for PRM-weighted voting."""
    if len(step_scores) == 0:
        raise ValueError("rerank: no solutions\n  hint: pass one list of step scores per sampled "
                         "solution, None where the PRM gave none")
    scores = [None if steps is None else aggregate_step_scores(steps, aggregate, logits, f"rerank: solution {i}")
              for i, steps in enumerate(step_scores)]
    return _select(scores)
