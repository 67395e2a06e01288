"""Fixed-length packed rows: several whole sequences per row, none attending to another.

Example: ``layout = rows_layout(batch, rows=torch.tensor([0, 0, 1]))  # sequences 0, 1 share row 0``

SFT packing (``train.pack_length``) lays the examples of a micro-batch into a few rows, each
holding whole sequences back to back (the bins of :func:`best_fit_decreasing`), padded only to
the longest row. Position ids restart at 0 for every sequence and the attention mask is block
diagonal and causal, so each token sees exactly the tokens it sees in its own right-padded row
(unlike packing that only concatenates, which lets an example attend to the one before it).
Works with any causal LM whose attention takes a 4D mask (eager, SDPA) or reads packed
sequences from restarting position ids (flash attention), learned absolute positions included.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from alignlab.forward.batch import SequenceBatch


def best_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices of ``lengths`` grouped into bins of total length <= ``capacity``: longest first,
    each into the fullest bin that still has room (ties: the bin opened first), else a new bin.

    Deterministic; every index lands in exactly one bin; an item longer than ``capacity`` is a
    ValueError. Bins keep their items in placement order (longest first)."""
    if capacity < 1:
        raise ValueError(f"capacity must be positive, got {capacity}")
    too_long = [i for i, n in enumerate(lengths) if n > capacity]
    if too_long:
        raise ValueError(f"{len(too_long)} items are longer than {capacity} (first: item {too_long[0]}, "
                         f"{lengths[too_long[0]]})")
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (room left, bin id), sorted: the best fit is the first with room >= n
    for index in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        n = lengths[index]
        at = bisect.bisect_left(free, (n, -1))
        if at == len(free):
            bins.append([index])
            bisect.insort(free, (capacity - n, len(bins) - 1))
            continue
        room, chosen = free.pop(at)
        bins[chosen].append(index)
        bisect.insort(free, (room - n, chosen))
    return bins


@dataclass(frozen=True)
class RowsLayout:
    """Where each token of a right-padded batch goes in the packed rows, and what it sees."""

    input_ids: Tensor
    """(R, L) the rows, padded to the longest."""
    position_ids: Tensor
    """(R, L) each token's position in its own sequence (padding continues from 0 on its own)."""
    segments: Tensor
    """(R, L) which sequence of the batch each position holds; -1 on padding."""
    predictors: Tensor
    """(C,) flat index into the (R·L) positions of the hidden state that predicts each completion
    token, in the row-major order of ``batch.completion_mask``."""
    targets: Tensor
    """(C,) the completion tokens, same order."""

    def attention_mask(self, dtype: torch.dtype | None) -> Tensor:
        """(R, 1, L, L): a query attends to the same or earlier positions of its own sequence;
        padding to itself only (no row of the mask is empty). Boolean (True: attend) for
        ``dtype=None``, else additive in ``dtype`` (0 or its most negative value)."""
        same = self.segments[:, :, None] == self.segments[:, None, :]
        earlier = self.position_ids[:, None, :] <= self.position_ids[:, :, None]
        allowed = same & earlier & (self.segments[:, :, None] >= 0)
        allowed |= torch.eye(self.segments.shape[1], dtype=torch.bool, device=allowed.device)
        allowed = allowed.unsqueeze(1)
        if dtype is None:
            return allowed
        return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
            ~allowed, torch.finfo(dtype).min)


def rows_layout(batch: SequenceBatch, rows: Tensor) -> RowsLayout:
    """The packed rows of ``batch`` (right-padded, prompt then completion): sequence ``n`` goes
    into row ``rows[n]``; the sequences of a row are consecutive, rows numbered 0, 1, ... in order."""
    lengths = batch.attention_mask.sum(-1).tolist()
    row_list = [int(r) for r in rows.tolist()]
    n, width = batch.input_ids.shape
    if len(row_list) != n:
        raise ValueError(f"{len(row_list)} row numbers for {n} sequences")
    if row_list and (row_list[0] != 0 or any(b - a not in (0, 1) for a, b in itertools.pairwise(row_list))):
        raise ValueError(f"rows must number consecutive sequences 0, 1, ... in order, got {row_list}")
    count = row_list[-1] + 1 if row_list else 0
    starts, used = [], [0] * count
    for sequence, row in enumerate(row_list):
        starts.append(used[row])
        used[row] += lengths[sequence]
    length = max(used, default=0)
    device = batch.input_ids.device
    input_ids = torch.zeros((count, length), dtype=torch.long)
    positions = torch.arange(length).repeat(count, 1)
    segments = torch.full((count, length), -1, dtype=torch.long)
    packed_index = torch.zeros((n, width), dtype=torch.long)  # flat packed position of each real token
    ids = batch.input_ids.cpu()
    for sequence, (row, start, size) in enumerate(zip(row_list, starts, lengths, strict=True)):
        input_ids[row, start:start + size] = ids[sequence, :size]
        positions[row, start:start + size] = torch.arange(size)
        segments[row, start:start + size] = sequence
        packed_index[sequence, :size] = row * length + start + torch.arange(size)
    for row in range(count):  # padding: its own positions 0, 1, ... (learned position tables stay in range)
        positions[row, used[row]:] = torch.arange(length - used[row])
    completion = batch.completion_mask.bool().cpu()
    if completion[:, 0].any():
        raise ValueError("every sequence needs at least one prompt token (BOS) to predict its first completion token")
    # Token t is predicted by the hidden state at token t - 1 of the same sequence.
    predictors = packed_index[:, :-1][completion[:, 1:]]
    return RowsLayout(input_ids.to(device), positions.to(device), segments.to(device),
                      predictors.to(device), batch.input_ids[batch.completion_mask.bool()])


def rows_hidden(backbone: nn.Module, layout: RowsLayout) -> Tensor:
    """(R·L, H) final hidden states of the packed rows, flattened row-major."""
    implementation = getattr(backbone.config, "_attn_implementation", None) or "eager"
    if implementation.startswith("flash_attention"):
        mask = None  # transformers reads the packed sequences off the restarting position ids
    elif implementation == "sdpa":
        mask = layout.attention_mask(None)
    elif implementation == "eager":  # added to the scores; float32 promotes bf16 scores, never overflows
        mask = layout.attention_mask(torch.float32)
    else:
        raise ValueError(f"packed rows need eager, sdpa or flash attention, not {implementation!r}\n"
                         "  hint: load the model with attn_implementation='sdpa', or unset train.pack_length")
    hidden = backbone(input_ids=layout.input_ids, position_ids=layout.position_ids, attention_mask=mask,
                      use_cache=False).last_hidden_state
    return hidden.reshape(-1, hidden.shape[-1])
