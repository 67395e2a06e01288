"""Score preference pairs with a model: completion log-probs of chosen and rejected, batched.

Example: ``scores = score_pairs(model, tokenizer, pairs, batch_size=8)``; ``scores.chosen_sum``

Completion-only log-probs through the sampling engine's scorer (the one routine: no full
logits, no gradients, eval mode, sorted by length into batches), in the input order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from alignlab.data.records import PreferencePair
from alignlab.data.tokenize import RecordTokenizer, TokenizeOptions, pad_id_of
from alignlab.decode.sampling import score


@dataclass
class PairScores:
    """Per pair (P,), float64: a model's summed and mean log-probs of chosen and rejected."""

    chosen_sum: torch.Tensor
    rejected_sum: torch.Tensor
    chosen_mean: torch.Tensor
    rejected_mean: torch.Tensor
    chosen_tokens: torch.Tensor
    rejected_tokens: torch.Tensor
    kept: list[int] = field(default_factory=list)
    """Indices (into the records given) of the pairs scored; over-long ones are dropped."""


def score_pairs(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[PreferencePair],
    *,
    batch_size: int = 8,
    max_length: int | None = 1024,
    chunk_size: int = 1024,
    progress: bool = True,
) -> PairScores:
    """Log-probs of every pair's chosen and rejected completion under ``model``."""
    encoder = RecordTokenizer(tokenizer, TokenizeOptions(max_length=max_length, completion_overflow="drop"))
    items, kept = [], []
    for index, pair in enumerate(pairs):
        item = encoder(pair)
        if item is not None:
            items.append(item)
            kept.append(index)
    pad_id = pad_id_of(tokenizer)
    # One scoring routine for samples and pairs: chosen and rejected are two samples of a prompt.
    lp = score(model, [item.prompt_ids for item in items],
               [[item.chosen_ids, item.rejected_ids] for item in items], pad_id,
               batch_size=2 * batch_size, chunk_size=chunk_size, progress=progress)
    chosen, rejected = slice(0, None, 2), slice(1, None, 2)
    results = (lp.sum[chosen], lp.sum[rejected], lp.mean[chosen], lp.mean[rejected],
               lp.counts[chosen], lp.counts[rejected])
    return PairScores(*results, kept=kept)
