"""Score preference pairs with a model: completion log-probs of chosen and rejected, batched.

Example: ``scores = score_pairs(model, tokenizer, pairs, batch_size=8)``; ``scores.chosen_sum``

Completion-only log-probs (the one routine, no full logits), no gradients, eval mode, pairs
sorted by length into batches to waste little padding, results returned in the input order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from rich.progress import track

from alignlab.data.records import PreferencePair
from alignlab.data.tokenize import RecordTokenizer, TokenizeOptions
from alignlab.train.batching import collate_pairs
from alignlab.train.forward import sequence_logps

PROGRESS_FROM = 64
"""Batches from which a progress bar is shown."""


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
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    order = sorted(range(len(items)), key=lambda i: -_length(items[i]))
    starts = list(range(0, len(order), batch_size))
    if progress and len(starts) >= PROGRESS_FROM:
        starts = track(starts, description="scoring pairs", transient=True)
    device = next(model.parameters()).device
    results = torch.zeros(6, len(items), dtype=torch.float64)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in starts:
                batch_ids = order[start:start + batch_size]
                batch = collate_pairs([items[i] for i in batch_ids], pad_id).to(device)
                lp = sequence_logps(model, batch, chunk_size)
                n = len(batch_ids)
                columns = torch.stack([lp.sum[:n], lp.sum[n:], lp.mean[:n], lp.mean[n:],
                                       lp.counts[:n], lp.counts[n:]]).double().cpu()  # (6, n)
                results[:, batch_ids] = columns
    finally:
        model.train(was_training)
    return PairScores(*results, kept=kept)


def _length(item: Any) -> int:
    return len(item.prompt_ids) + max(len(item.chosen_ids), len(item.rejected_ids))
