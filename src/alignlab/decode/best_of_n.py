"""Best-of-N and rejection sampling by any reward, and their output as preference pairs.

Example: ``best_of_n(TextSampler(model, tok), prompts, build_reward("testbed_true"), n=16)``

Best-of-N samples N completions per prompt (sharing one prompt encoding, see
:mod:`alignlab.decode.sampling`) and keeps the one the reward scores highest; its KL from the
policy is at most log N − (N−1)/N (Beirami et al. 2024, "Theoretical guarantees on the best-of-n
alignment policy", arXiv 2401.01879). Rejection sampling draws rounds of N until a completion
scores at least a threshold. Best against worst of the same N makes preference pairs with the
score gap as margin: the rejection-sampling loop of offline training on one's own samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from alignlab.data.records import PreferencePair, Text
from alignlab.decode.candidates import (
    Candidate,
    Decoded,
    PromptColumns,
    Selection,
    TextSampler,
    choose_best,
    score_candidates,
)
from alignlab.decode.cost import Cost
from alignlab.rewards import Reward


def best_of_n(sampler: TextSampler, prompts: Sequence[Text], reward: Reward, n: int,
              columns: PromptColumns | None = None) -> Decoded:
    """N candidates per prompt, all scored, the best chosen (the first of equal scores; None
    when the reward could score none of them)."""
    cost = Cost()
    return choose_best(f"best_of_{n}", prompts, sampler.sample(prompts, n, cost=cost), reward, columns, cost)


def rejection_sample(sampler: TextSampler, prompts: Sequence[Text], reward: Reward, n: int, threshold: float,
                     max_rounds: int = 4, columns: PromptColumns | None = None) -> Decoded:
    """Rounds of ``n`` candidates for the prompts still without one scoring ≥ ``threshold``, at
    most ``max_rounds``; the chosen candidate is the first accepted (None if none was). Round r
    continues each prompt's random streams (samples r·n … r·n + n − 1), so the candidates are a
    prefix of those of one call with n·max_rounds samples."""
    if max_rounds < 1:
        raise ValueError(f"max_rounds must be at least 1, got {max_rounds}")
    if math.isnan(threshold):
        raise ValueError("threshold is NaN")
    cost = Cost()
    kept: list[list[Candidate]] = [[] for _ in prompts]
    waiting = list(range(len(prompts)))
    for round_ in range(max_rounds):
        if not waiting:
            break
        batch = [prompts[i] for i in waiting]
        batch_columns = {k: [v[i] for i in waiting] for k, v in (columns or {}).items()}
        drawn = sampler.sample(batch, n, streams=waiting, first_sample=round_ * n, cost=cost)
        scored = score_candidates(reward, batch, drawn, batch_columns, cost)
        for i, row in zip(waiting, scored, strict=True):
            kept[i].extend(row)
        waiting = [i for i in waiting if _first_accepted(kept[i], threshold) is None]
    selections = tuple(Selection(p, tuple(row), _first_accepted(row, threshold))
                       for p, row in zip(prompts, kept, strict=True))
    return Decoded(f"rejection(n={n}, threshold={threshold})", selections, cost)


def _first_accepted(candidates: Sequence[Candidate], threshold: float) -> int | None:
    return next((k for k, c in enumerate(candidates) if c.score is not None and c.score >= threshold), None)


def preference_pairs(decoded: Decoded, min_margin: float = 0.0) -> tuple[list[PreferencePair], int]:
    """Per prompt, its best candidate (chosen) against its worst (rejected), the score gap as
    margin; prompts whose gap is not above ``min_margin``, or with fewer than two distinct
    scored texts, give no pair and are counted (the second value)."""
    pairs, skipped = [], 0
    for selection in decoded.selections:
        scored = [c for c in selection.candidates if c.score is not None]
        if len(scored) < 2:
            skipped += 1
            continue
        best = max(scored, key=lambda c: c.score)  # type: ignore[arg-type, return-value]
        worst = min(scored, key=lambda c: c.score)  # type: ignore[arg-type, return-value]
        margin = best.score - worst.score  # type: ignore[operator]
        if margin <= min_margin or best.text == worst.text or not best.text or not worst.text:
            skipped += 1
            continue
        pairs.append(PreferencePair(selection.prompt, best.text, worst.text, margin=margin,
                                    source=decoded.strategy))
    return pairs, skipped
