"""Sequences of prompt + completion token ids as one right-padded batch, each row named.

Example: ``batch = collate_sequences([(prompt_ids, completion_ids), ...], pad_id=0, keys=["3:chosen"])``

Every sequence is prompt + completion, right-padded; ``completion_mask`` marks the completion
tokens (what log-probs are summed over). Rows with the same prompt tokens get the same
``groups`` id, so that the packed forward (:mod:`alignlab.forward.packing`) encodes that prompt
once. ``keys`` name the rows for the reference cache ("3:chosen"); which rows a data kind puts
in a batch, in which order and under which keys, is the data kind's business
(:mod:`alignlab.kinds`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor


@dataclass(frozen=True)
class SequenceBatch:
    """N sequences, right-padded to the longest (L)."""

    input_ids: Tensor  # (N, L)
    attention_mask: Tensor  # (N, L) bool
    completion_mask: Tensor  # (N, L) bool
    token_weights: Tensor | None = None  # (N, L), 1 where a record gave no weights
    groups: Tensor | None = None
    """(N,) int64 on the CPU: rows with equal ids have identical prompt tokens; None: no sharing known."""
    keys: tuple[str | None, ...] | None = None
    """Per row, its name in the reference cache ("17:chosen"); None for a row no reference reads
    (a placeholder), or for the whole batch when no cache is involved."""
    rows: Tensor | None = None
    """(N,) int64 on the CPU: the packed row of each sequence (SFT packing into fixed-length
    rows, :mod:`alignlab.forward.rows`); None: one row per sequence, or the prefix-shared packing."""

    def __post_init__(self) -> None:
        if self.keys is not None and len(self.keys) != self.input_ids.shape[0]:
            raise ValueError(f"{len(self.keys)} keys for a batch of {self.input_ids.shape[0]} sequences")

    def to(self, device: torch.device | str) -> SequenceBatch:
        moved = {name: None if t is None else t.to(device) for name, t in
                 (("input_ids", self.input_ids), ("attention_mask", self.attention_mask),
                  ("completion_mask", self.completion_mask), ("token_weights", self.token_weights))}
        return replace(self, **moved)

    @property
    def tokens(self) -> int:
        """Real (non-padding) tokens: the throughput unit."""
        return int(self.attention_mask.sum())


def collate_sequences(
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    pad_id: int,
    weights: Sequence[Sequence[float] | None] | None = None,
    keys: Sequence[str | None] | None = None,
    supervised: Sequence[Sequence[bool] | None] | None = None,
) -> SequenceBatch:
    """Right-pad ``(prompt_ids, completion_ids)`` sequences into one batch; sequences with equal
    prompt ids share a ``groups`` id (numbered in order of first appearance). ``supervised``
    (per row, one bool per completion token, or None for all) leaves tokens out of the completion
    mask: they stay in the input, and no log-prob is computed for them (a multi-turn chat's user
    turns)."""
    length = max(len(p) + len(c) for p, c in pairs)
    group_of: dict[tuple[int, ...], int] = {}
    groups = torch.tensor([group_of.setdefault(tuple(p), len(group_of)) for p, _ in pairs], dtype=torch.long)
    n = len(pairs)
    input_ids = torch.full((n, length), pad_id, dtype=torch.long)
    attention = torch.zeros((n, length), dtype=torch.bool)
    completion = torch.zeros((n, length), dtype=torch.bool)
    token_weights = torch.ones((n, length)) if weights is not None and any(w is not None for w in weights) else None
    for i, (prompt, reply) in enumerate(pairs):
        if not prompt:
            raise ValueError("a sequence needs at least one prompt token (BOS) to predict its first completion token")
        end = len(prompt) + len(reply)
        input_ids[i, :end] = torch.tensor([*prompt, *reply], dtype=torch.long)
        attention[i, :end] = True
        completion[i, len(prompt):end] = True
        if supervised is not None and supervised[i] is not None:
            if len(supervised[i]) != len(reply):
                raise ValueError(f"row {i}: {len(supervised[i])} supervision flags for {len(reply)} completion tokens")
            completion[i, len(prompt):end] = torch.tensor(supervised[i], dtype=torch.bool)
        if token_weights is not None and weights[i] is not None:  # type: ignore[index]
            token_weights[i, len(prompt):end] = torch.tensor(weights[i], dtype=torch.float32)  # type: ignore[index]
    return SequenceBatch(input_ids, attention, completion, token_weights, groups,
                         None if keys is None else tuple(keys))
