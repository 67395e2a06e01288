"""Prefix sharing and padding-free packing: a whole batch through the backbone as one row.

Example: ``layout = pack(batch); hidden = packed_hidden(backbone, layout)  # (1, T, H)``

Rows of a :class:`SequenceBatch` with the same ``groups`` id share their prompt (chosen and
rejected of a pair, the K responses of a ranked example, KTO's mismatched completion). Each group
is laid out once as ``[prompt, completion 1, completion 2, ...]`` and all groups are concatenated
into a single row with no padding. Position ids restart every completion right after its prompt,
and attention inside a group is a tree: the prompt attends causally to itself, each completion
to the prompt and causally to itself, never to a sibling completion or to another group. So every
completion sees exactly what it sees in its own right-padded row (the plain path), the prompt is
encoded once per group, and no position is padding; the results agree with the plain path up to
float rounding (tests check loss and gradients within 1e-5).

The tree attention calls ``scaled_dot_product_attention`` per group with the group's tree mask,
or, where that would compute many more scores than needed (many or long completions), per
segment: the prompt causally over itself, each completion over its prompt's keys and its own,
a cost of P² + Σ L·(P + L), linear in the number of completions (:data:`TREE_COST_RATIO`). It
is an attention function registered with transformers' ``AttentionInterface`` and switched on
for the packed call only. Models whose attention is plain scaled dot-product over RoPE positions
(:data:`PACKABLE_MODEL_TYPES`) take this path; others keep the plain path.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alignlab.forward.batch import SequenceBatch
from alignlab.forward.runtime import base_model

ATTENTION_NAME = "alignlab_packed"
"""The name of the tree attention in transformers' ``AttentionInterface``."""
LAYOUT_KWARG = "alignlab_layout"
"""The keyword under which the layout reaches the attention function through the model."""
PACKABLE_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})
"""Model types whose attention layers call the interface with only what the tree attention
honours (scaling, dropout, GQA, sliding window) and take RoPE positions from ``position_ids``;
each is parity-tested. Others (softcapping, attention sinks, ALiBi, learned positions) are not."""


TREE_COST_RATIO = 2.0
"""A group runs as one attention call with its tree mask while that computes at most this many
times the attention scores of the split form (prompt, then each completion over prompt + itself):
fewer, larger calls win for pairs (on CPU, 8% faster per step on bench model b); many or long
completions take the split form, whose cost is linear in their number."""


@dataclass(frozen=True)
class Segment:
    """Packed positions that attend alike: a prompt, a completion, or a whole group."""

    span: tuple[int, int]
    """[start, end) of its positions (the queries) in the packed row."""
    keys: tuple[tuple[int, int], ...]
    """The spans whose keys and values it attends to, in order: itself (a prompt, a group), or its
    prompt then itself (a completion)."""
    branches: Tensor | None = None
    """For a whole group: per position 0 on the prompt, k on its k-th completion (a key on
    another completion is hidden); None otherwise."""


@dataclass
class PackedLayout:
    """Where every token of a batch goes in the packed row, and what it may attend to."""

    input_ids: Tensor
    """(1, T) the packed tokens."""
    position_ids: Tensor
    """(1, T) each token's position in its own (unpacked) sequence."""
    segments: list[Segment]
    """The attention calls, in packed order; empty completions have none."""
    predictors: Tensor
    """(C,) packed index of the hidden state that predicts each completion token, in the
    row-major order of ``batch.completion_mask``."""
    targets: Tensor
    """(C,) the completion tokens, same order."""
    _masks: dict[int | None, list[Tensor | None]] = field(default_factory=dict, repr=False)

    @property
    def positions(self) -> int:
        """Token positions the backbone runs (T): each shared prompt counted once, no padding."""
        return self.input_ids.shape[1]

    def attention_masks(self, sliding_window: int | None = None) -> list[Tensor | None]:
        """Per segment the (queries, keys) bool mask, True where a query may attend: a key at the
        same or an earlier position of its own sequence (within ``sliding_window``). None where
        that is plain causal attention (a prompt, no window). Built once per layout and window."""
        if sliding_window not in self._masks:
            position = self.position_ids[0]
            masks: list[Tensor | None] = []
            for segment in self.segments:
                plain = segment.keys == (segment.span,) and segment.branches is None
                if plain and sliding_window is None:
                    masks.append(None)
                    continue
                query = position[segment.span[0]:segment.span[1]]
                key = torch.cat([position[a:b] for a, b in segment.keys])
                allowed = key[None, :] <= query[:, None]
                if segment.branches is not None:
                    branch = segment.branches
                    allowed &= (branch[None, :] == 0) | (branch[None, :] == branch[:, None])
                if sliding_window is not None:
                    allowed &= query[:, None] - key[None, :] < sliding_window
                masks.append(allowed)
            self._masks[sliding_window] = masks
        return self._masks[sliding_window]


def pack(batch: SequenceBatch) -> PackedLayout:
    """The packed layout of a right-padded prompt + completion batch (``collate_sequences``)."""
    ids = batch.input_ids
    attention, completion = batch.attention_mask.bool(), batch.completion_mask.bool()
    n, length = ids.shape
    ends = attention.sum(-1)
    # The prompt ends at the first completion token; later tokens may be left out of the mask
    # (a multi-turn chat's user turns): they are input of the completion branch, not targets.
    prompts = torch.where(completion.any(-1), completion.int().argmax(-1), ends)
    position = torch.arange(length, device=ids.device)
    real = position < ends[:, None]
    if not (torch.equal(attention, real) and not bool((completion & ~(real & (position >= prompts[:, None]))).any())):
        raise ValueError("pack needs right-padded rows of prompt then completion tokens (collate_sequences)")
    ends_list, prompt_list = ends.tolist(), prompts.tolist()
    if min(prompt_list) < 1:
        raise ValueError("every row needs at least one prompt token (BOS) to predict its first completion token")
    members: dict[int, list[int]] = {}
    for row, group in enumerate(batch.groups.tolist() if batch.groups is not None else range(n)):
        members.setdefault(group, []).append(row)

    source, positions, segments = [], [], []
    predictors: list[Tensor] = [torch.empty(0, dtype=torch.long)] * n
    shared_rows, offset = [], 0
    for rows in members.values():
        first, p = rows[0], prompt_list[rows[0]]
        if any(prompt_list[r] != p for r in rows):
            raise ValueError(f"rows {rows} share a group but not their prompt length")
        shared_rows += [(r, first, p) for r in rows[1:]]
        start = offset
        source.append(first * length + torch.arange(p))
        positions.append(torch.arange(p))
        prompt, completions = (start, start + p), []
        offset += p
        for row in rows:
            count = ends_list[row] - p
            source.append(row * length + torch.arange(p, ends_list[row]))
            positions.append(torch.arange(p, ends_list[row]))
            # The first completion token is predicted by the prompt's last position, the others
            # by the completion token before them (none for an empty completion).
            before = torch.cat([torch.tensor([start + p - 1]), offset + torch.arange(max(count - 1, 0))])
            predictors[row] = before[:count][completion[row, p:ends_list[row]].cpu()]  # supervised tokens only
            completions.append((offset, offset + count))
            offset += count
        segments += _group_segments(prompt, completions, ids.device)
    if shared_rows:  # the rows of a group must really share the prompt (one check, one sync)
        row, first, length_of = (torch.tensor(column, device=ids.device) for column in zip(*shared_rows, strict=True))
        differs = ((ids[row] != ids[first]) & (position < length_of[:, None])).any(-1)
        if differs.any():
            raise ValueError(f"rows {row[differs].tolist()} are grouped with rows whose prompt tokens differ")
    source_index = torch.cat(source).to(ids.device)
    return PackedLayout(
        input_ids=ids.reshape(-1)[source_index].unsqueeze(0),
        position_ids=torch.cat(positions).to(ids.device).unsqueeze(0),
        segments=segments,
        predictors=torch.cat(predictors).to(ids.device),
        targets=ids[completion],
    )


def _group_segments(prompt: tuple[int, int], completions: list[tuple[int, int]],
                    device: torch.device) -> list[Segment]:
    """One tree-masked call for the group, or the split form, whichever :data:`TREE_COST_RATIO` picks."""
    p = prompt[1] - prompt[0]
    lengths = [end - start for start, end in completions]
    split = p * p + sum(n * (p + n) for n in lengths)
    if len(lengths) == 1:  # nothing shared: plain causal attention over prompt + completion
        span = (prompt[0], completions[0][1])
        return [Segment(span, (span,))]
    if (p + sum(lengths)) ** 2 <= TREE_COST_RATIO * split:
        branches = torch.cat([torch.zeros(p, dtype=torch.long)] +
                             [torch.full((n,), k, dtype=torch.long) for k, n in enumerate(lengths, 1)])
        span = (prompt[0], completions[-1][1])
        return [Segment(span, (span,), branches.to(device))]
    return [Segment(prompt, (prompt,))] + [Segment(c, (prompt, c)) for c in completions if c[0] < c[1]]


def supports_packing(model: Any) -> bool:
    """Whether ``model`` (an HF causal LM, PEFT-wrapped or not) can run the packed forward."""
    config = getattr(base_model(model), "config", None)
    return getattr(config, "model_type", None) in PACKABLE_MODEL_TYPES and _register()


def packed_hidden(backbone: nn.Module, layout: PackedLayout) -> Tensor:
    """(1, T, H) final hidden states of the packed row (the backbone of a packable model)."""
    with _tree_attention(backbone.config):
        return backbone(input_ids=layout.input_ids, position_ids=layout.position_ids, use_cache=False,
                        **{LAYOUT_KWARG: layout}).last_hidden_state


def tree_attention(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[Tensor, None]:
    """Attention of a packed row, group by group; query (1, heads, T, d), key/value (1, kv heads,
    T, d); returns (1, T, heads, d) as transformers' attention functions do."""
    layout: PackedLayout | None = kwargs.get(LAYOUT_KWARG)
    if layout is None:  # not a packed call (the switch is scoped, so this is a safety net)
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    for unsupported in ("softcap", "s_aux", "position_bias"):
        if kwargs.get(unsupported) is not None:
            raise NotImplementedError(f"packed attention does not implement {unsupported!r}")
    gqa = query.shape[1] != key.shape[1]
    outputs = []
    for segment, mask in zip(layout.segments, layout.attention_masks(kwargs.get("sliding_window")), strict=True):
        start, end = segment.span
        if len(segment.keys) == 1:
            k, v = key[:, :, start:end], value[:, :, start:end]
        else:
            k = torch.cat([key[:, :, a:b] for a, b in segment.keys], dim=2)
            v = torch.cat([value[:, :, a:b] for a, b in segment.keys], dim=2)
        out = F.scaled_dot_product_attention(query[:, :, start:end], k, v, attn_mask=mask, is_causal=mask is None,
                                             dropout_p=dropout, scale=scaling, enable_gqa=gqa)
        outputs.append(out.transpose(1, 2))
    # One copy into the (1, T, heads, d) layout the output projection reads.
    return torch.cat(outputs, dim=1), None


_registered: list[bool] = []


def _register() -> bool:
    """Register the tree attention with transformers once; False if this version has no interface."""
    if not _registered:
        try:
            from transformers import AttentionInterface
        except ImportError:
            _registered.append(False)
        else:
            AttentionInterface.register(ATTENTION_NAME, tree_attention)
            _registered.append(True)
    return _registered[0]


@contextmanager
def _tree_attention(config: Any) -> Iterator[None]:
    """The model's attention layers call :func:`tree_attention` inside, their own after. With no
    mask function registered under the name, transformers builds no (T, T) mask for the call."""
    previous = config._attn_implementation
    config._attn_implementation = ATTENTION_NAME
    try:
        yield
    finally:
        config._attn_implementation = previous
