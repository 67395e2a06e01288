"""A solution's steps and one score from its steps' scores (a process reward model's).

Example: ``aggregate_steps([0.9, 0.4, 0.8])  # 0.4, the worst step``

The step convention of PRM800K and Sun et al. 2024 (arXiv 2403.09472): steps are separated by a
blank line, and a final ``# Answer`` step holds the answer. Used by the ``prm`` reward and by PRM
best-of-N re-ranking (:func:`alignlab.decode.voting.rerank`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

Aggregate = Literal["min", "prod", "last"]
AGGREGATES: tuple[str, ...] = ("min", "prod", "last")
"""How :func:`aggregate_steps` turns a solution's step scores into one score."""

STEP_SEPARATOR = "\n\n"
"""Between two steps of a solution, as in PRM800K and in Sun et al.'s PRM data."""
ANSWER_STEP = "# Answer"
"""PRM800K's marker of the final step, which holds the answer (``# Answer\\n\\n42``)."""


def split_steps(solution: str, separator: str = STEP_SEPARATOR, *, keep_answer: bool = True) -> list[str]:
    """The steps of a solution: its pieces between ``separator`` (a blank line, as in PRM800K and
    Sun et al. 2024), stripped, blank pieces dropped.

    PRM800K ends a solution with ``# Answer`` and the answer, a blank line apart; that is one
    step, the last (kept, as Sun et al. keep it), or dropped with ``keep_answer=False``."""
    if not separator:
        raise ValueError("split_steps: the separator is empty\n  hint: steps are separated by a "
                         "blank line, '\\n\\n'")
    pieces = [piece.strip() for piece in solution.split(separator)]
    pieces = [piece for piece in pieces if piece]
    at = next((i for i, piece in enumerate(pieces) if piece.startswith(ANSWER_STEP)), None)
    if at is None:
        return pieces
    return pieces[:at] + ([separator.join(pieces[at:])] if keep_answer else [])


def aggregate_steps(step_scores: Sequence[float], aggregate: Aggregate = "min", *,
                    logits: bool = False) -> float:
    """One solution's PRM score from its step scores.

    ``min``: the lowest step score, Sun et al. 2024's default (arXiv 2403.09472): a solution is
    as good as its worst step. ``prod``: the product, the probability that every step is correct
    (Lightman et al. 2023, "Let's Verify Step by Step", arXiv 2305.20050), the alternative in Sun
    et al.'s code; it needs scores in [0, 1]. ``last``: the final step's score, an option of later
    work (e.g. Snell et al. 2024, arXiv 2408.03314), not of Sun et al.

    ``logits=True`` passes each score through a sigmoid first, as Sun et al.'s code does with its
    PRM's outputs before aggregating (it changes ``prod``; ``min`` and ``last`` only rescale)."""
    return aggregate_step_scores(step_scores, aggregate, logits, "aggregate_steps")


def aggregate_step_scores(step_scores: Sequence[float], aggregate: str, logits: bool, where: str) -> float:
    """:func:`aggregate_steps`, with ``where`` naming the caller in its errors."""
    if aggregate not in AGGREGATES:
        raise ValueError(f"{where}: unknown aggregate {aggregate!r}; use {', '.join(AGGREGATES)}")
    if len(step_scores) == 0:
        raise ValueError(f"{where}: no step scores; a scored solution has at least one step\n"
                         "  hint: pass None instead for a solution the PRM could not score")
    for i, score in enumerate(step_scores):
        if score is None or not math.isfinite(score):
            raise ValueError(f"{where}: step {i} has score {score!r}; step scores are finite numbers")
    values = [_sigmoid(s) for s in step_scores] if logits else list(step_scores)
    if aggregate == "min":
        return min(values)
    if aggregate == "last":
        return values[-1]
    outside = next((i for i, v in enumerate(values) if not 0.0 <= v <= 1.0), None)
    if outside is not None:
        raise ValueError(f"{where}: step {outside} has score {values[outside]!r}, but 'prod' "
                         "multiplies probabilities in [0, 1]\n  hint: set logits=True for raw "
                         "PRM logits, or use aggregate='min'")
    return math.prod(values)


def _sigmoid(x: float) -> float:
    # Two branches so that exp never overflows, whatever the sign of x.
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)
