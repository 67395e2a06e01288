"""Tokenized records into padded tensors, and a resumable, shardable order of examples.

Example: ``batch = collate_sequences([(prompt_ids, completion_ids), ...], pad_id=0)``

Every sequence is prompt + completion, right-padded; ``completion_mask`` marks the completion
tokens (what log-probs are summed over). Paired data puts all chosen sequences first, then all
rejected ones, so one forward pass serves both halves. Rows with the same prompt tokens get the
same ``groups`` id, so that the packed forward (:mod:`alignlab.train.packing`) encodes that
prompt once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from alignlab.data.tokenize import TokenizedCompletion, TokenizedPair, TokenizedRanked


@dataclass(frozen=True)
class SequenceBatch:
    """N sequences, right-padded to the longest (L)."""

    input_ids: Tensor  # (N, L)
    attention_mask: Tensor  # (N, L) bool
    completion_mask: Tensor  # (N, L) bool
    token_weights: Tensor | None = None  # (N, L), 1 where a record gave no weights
    groups: Tensor | None = None
    """(N,) int64 on the CPU: rows with equal ids have identical prompt tokens; None: no sharing known."""

    def to(self, device: torch.device | str) -> SequenceBatch:
        moved = [None if t is None else t.to(device) for t in
                 (self.input_ids, self.attention_mask, self.completion_mask, self.token_weights)]
        return SequenceBatch(*moved, groups=self.groups)  # type: ignore[arg-type]

    @property
    def tokens(self) -> int:
        """Real (non-padding) tokens: the throughput unit."""
        return int(self.attention_mask.sum())


def collate_sequences(
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    pad_id: int,
    weights: Sequence[Sequence[float] | None] | None = None,
) -> SequenceBatch:
    """Right-pad ``(prompt_ids, completion_ids)`` sequences into one batch; sequences with equal
    prompt ids share a ``groups`` id (numbered in order of first appearance)."""
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
        if token_weights is not None and weights[i] is not None:  # type: ignore[index]
            token_weights[i, len(prompt):end] = torch.tensor(weights[i], dtype=torch.float32)  # type: ignore[index]
    return SequenceBatch(input_ids, attention, completion, token_weights, groups)


def collate_pairs(items: Sequence[TokenizedPair], pad_id: int) -> SequenceBatch:
    """2B sequences: chosen of every pair, then rejected of every pair."""
    sequences = [(i.prompt_ids, i.chosen_ids) for i in items] + [(i.prompt_ids, i.rejected_ids) for i in items]
    weights = [i.chosen_weights for i in items] + [i.rejected_weights for i in items]
    return collate_sequences(sequences, pad_id, weights)


def collate_completions(items: Sequence[TokenizedCompletion], pad_id: int, mismatched: bool = False) -> SequenceBatch:
    """B sequences; with ``mismatched``, B more that pair each prompt with the previous item's
    completion (KTO's KL estimate, as TRL: item j gets the completion of item j−1)."""
    sequences = [(i.prompt_ids, i.completion_ids) for i in items]
    if mismatched:
        sequences += [(items[j].prompt_ids, items[j - 1].completion_ids) for j in range(len(items))]
    return collate_sequences(sequences, pad_id)


def collate_ranked(items: Sequence[TokenizedRanked], pad_id: int) -> tuple[SequenceBatch, Tensor]:
    """B·K sequences in row-major order (example, response) and the (B, K) presence mask; missing
    responses of shorter lists are one-token placeholders, masked out of the loss."""
    k = max(len(i.responses_ids) for i in items)
    sequences, present = [], torch.zeros(len(items), k, dtype=torch.bool)
    for row, item in enumerate(items):
        for j in range(k):
            if j < len(item.responses_ids):
                sequences.append((item.prompt_ids, item.responses_ids[j]))
                present[row, j] = True
            else:
                sequences.append((item.prompt_ids, item.prompt_ids[-1:]))
    return collate_sequences(sequences, pad_id), present


@dataclass
class ExampleOrder:
    """Which examples each step reads: a seeded permutation per epoch, sharded by rank.

    The position (epoch, batches consumed) is all a checkpoint needs to resume the data exactly,
    with no sampler state to pickle. A last partial batch too small to give every rank
    ``min_batch`` examples (an empty rank would stall DDP; KTO's KL estimate needs two) is merged
    into the batch before it, so no example is dropped.
    """

    size: int
    batch_size: int
    seed: int
    rank: int = 0
    world_size: int = 1
    min_batch: int = 1

    @property
    def _global(self) -> int:
        return self.batch_size * self.world_size

    def _merged(self) -> bool:
        full, rest = divmod(self.size, self._global)
        return full > 0 and 0 < rest < self.min_batch * self.world_size

    def batches_per_epoch(self) -> int:
        full, rest = divmod(self.size, self._global)
        return full if rest == 0 or self._merged() else full + 1

    def _window(self, index: int) -> tuple[int, int]:
        start = index * self._global
        last = index == self.batches_per_epoch() - 1
        end = self.size if last and self._merged() else min(self.size, start + self._global)
        return start, end

    def global_count(self, epoch: int, index: int) -> int:
        """Examples of the ``index``-th batch of ``epoch`` over all ranks."""
        start, end = self._window(index)
        return max(0, end - start)

    def batch(self, epoch: int, index: int) -> list[int]:
        """Example indices of this rank's ``index``-th batch of ``epoch``."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(self.size, generator=generator)
        start, end = self._window(index)
        return order[start:end][self.rank::self.world_size].tolist()
