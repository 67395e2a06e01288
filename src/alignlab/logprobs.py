"""Per-sequence log-probs of completion tokens, from hidden states and the LM head in chunks.

Example: ``lp = completion_logps(model.model(ids, attention_mask=am).last_hidden_state,
model.lm_head, ids, completion_mask); lp.sum, lp.mean``
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


@dataclass(frozen=True)
class LogProbs:
    """Log-probs over completion tokens; every field is float32."""

    sum: Tensor
    """(B,) Σ_t log p(y_t | x, y_<t) over completion tokens: S(y) of METHODS.md §0."""
    mean: Tensor
    """(B,) sum / count, A(y) of METHODS.md §0; 0 for a sequence without completion tokens."""
    tokens: Tensor
    """(B, L) log-prob of the token at each position; 0 where the mask is False."""
    counts: Tensor
    """(B,) number of completion tokens."""
    weighted_sum: Tensor | None = None
    """(B,) Σ_t w_t log p_t, when token weights are given."""
    weighted_mean: Tensor | None = None
    """(B,) Σ_t w_t log p_t / Σ_t w_t, when token weights are given; 0 where Σ_t w_t = 0."""


def completion_logps(
    hidden: Tensor,
    lm_head: nn.Module | Tensor,
    input_ids: Tensor,
    completion_mask: Tensor,
    *,
    bias: Tensor | None = None,
    chunk_size: int = 1024,
    token_weights: Tensor | None = None,
    upcast: bool = True,
) -> LogProbs:
    """Log-probs of the completion tokens, projecting only the hidden states that predict them.

    ``hidden`` (B, L, H) are the final hidden states; ``lm_head`` is the output layer (a module,
    or its (V, H) weight with an optional ``bias``). ``completion_mask`` (B, L) is True at
    positions whose token is a completion token; the token at t is predicted by hidden[:, t-1].
    Chunks of ``chunk_size`` completion positions go through the head, so at most about
    2 × chunk_size × V floats of logits exist at once, in the forward and in the backward (each
    chunk is recomputed there instead of being kept for it).

    ``upcast=True`` runs the head matmul of a weight (or plain ``nn.Linear``) in float32, autocast
    off: bf16 logits would carry a rounding error of up to 2⁻⁹ of their size, which sums over
    the tokens. It costs a transient float32 copy of a bf16 head per chunk and float32 (or TF32)
    matmul speed. ``upcast=False`` computes the matmul in the weight's dtype like the model's own
    forward, then upcasts; any other head module is always called as is, then upcast.
    """
    mask = _check(hidden, input_ids, completion_mask, token_weights)
    batch, length, width = hidden.shape
    rows = mask[:, 1:].nonzero()  # (N, 2): (sequence, position of the predicting hidden state)
    flat = rows[:, 0] * length + rows[:, 1]  # (N,) rows of the flattened (B·L, H) hidden states
    targets = input_ids.reshape(-1)[flat + 1]  # (N,) the token after each such hidden state
    selected = hidden.reshape(batch * length, width).index_select(0, flat)  # (N, H)
    logps = head_logps(selected, targets, lm_head, bias=bias, chunk_size=chunk_size, upcast=upcast)
    tokens = logps.new_zeros(batch * length).index_copy(0, flat + 1, logps).view(batch, length)
    return reduce_token_logps(tokens, mask, token_weights)


def head_logps(
    selected: Tensor,
    targets: Tensor,
    lm_head: nn.Module | Tensor,
    *,
    bias: Tensor | None = None,
    chunk_size: int = 1024,
    upcast: bool = True,
) -> Tensor:
    """(N,) float32 log p(targets[i] | selected[i]): the output layer on N hidden states (N, H)
    only, ``chunk_size`` rows at a time, each chunk recomputed in the backward instead of kept.
    The core of :func:`completion_logps`, for callers that pick the hidden states themselves
    (the packed forward of :mod:`alignlab.train.packing`)."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    head = _head(lm_head, bias, upcast)
    params = [lm_head] if isinstance(lm_head, Tensor) else list(lm_head.parameters())
    if bias is not None:
        params.append(bias)
    # Without recomputation autograd would keep every chunk's logits for the backward, which is
    # the full (N, V) tensor again; a checkpointed chunk keeps only its (c, H) input.
    recompute = torch.is_grad_enabled() and (
        selected.requires_grad or any(p.requires_grad for p in params)
    )
    pieces = []
    # One chunk even when N = 0, so that the result stays connected to the graph.
    for start in range(0, max(len(targets), 1), chunk_size):
        h, y = selected[start : start + chunk_size], targets[start : start + chunk_size]
        if recompute:
            pieces.append(checkpoint(_chunk_logps, head, h, y, use_reentrant=False))
        else:
            pieces.append(_chunk_logps(head, h, y))
    return torch.cat(pieces)  # (N,)


def logps_from_logits(
    logits: Tensor,
    input_ids: Tensor,
    completion_mask: Tensor,
    token_weights: Tensor | None = None,
) -> LogProbs:
    """The plain path from full (B, L, V) logits: log_softmax in float32, then gather."""
    mask = _check(logits, input_ids, completion_mask, token_weights)
    shifted = mask[:, 1:]  # (B, L-1)
    # Masked-out ids may be -100 or padding: gather a valid id there and discard it.
    ids = torch.where(shifted, input_ids[:, 1:], 0)
    logp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, ids.unsqueeze(-1))
    # where, not a product: a fully masked padding row may hold NaN logits.
    logp = torch.where(shifted, logp.squeeze(-1), 0.0)  # (B, L-1)
    tokens = F.pad(logp, (1, 0))  # (B, L): position 0 never holds a completion token
    return reduce_token_logps(tokens, mask, token_weights)


def completion_mask_from_lengths(
    prompt_lengths: Tensor,
    total_lengths: Tensor,
    length: int,
    padding_side: Literal["left", "right"],
) -> Tensor:
    """(B, length) bool mask of the completion positions, given the unpadded lengths per row."""
    if (prompt_lengths < 1).any() or (total_lengths < prompt_lengths).any():
        raise ValueError(
            "every row needs 1 <= prompt length <= total length: the first completion token is "
            "predicted from the last prompt token (use at least a BOS token as the prompt)"
        )
    if (total_lengths > length).any():
        raise ValueError(f"a total length exceeds the padded length {length}")
    positions = torch.arange(length, device=total_lengths.device)  # (L,)
    offset = length - total_lengths if padding_side == "left" else torch.zeros_like(total_lengths)
    start = (offset + prompt_lengths).unsqueeze(1)  # (B, 1)
    end = (offset + total_lengths).unsqueeze(1)
    return (positions >= start) & (positions < end)


def _head(lm_head: nn.Module | Tensor, bias: Tensor | None, upcast: bool) -> Callable:
    """The projection hidden (c, H) -> logits (c, V) under the precision policy."""
    if isinstance(lm_head, nn.Module):
        # Only a plain, unhooked Linear may be bypassed: a LoRA wrapper, an FSDP-sharded or an
        # offloaded head does its work in forward (hooks) and must be called.
        if type(lm_head) is not nn.Linear or hooked(lm_head):
            return lm_head
        lm_head, bias = lm_head.weight, lm_head.bias
    weight = lm_head
    if not upcast:
        return lambda h: F.linear(h.to(weight.dtype), weight, bias)

    def project(h: Tensor) -> Tensor:
        # An enclosing autocast would cast the float32 operands back down to bf16.
        with torch.autocast(h.device.type, enabled=False):
            return F.linear(h.float(), weight.float(), None if bias is None else bias.float())

    return project


def hooked(module: nn.Module) -> bool:
    """Whether ``module`` does work in hooks (FSDP, accelerate offloading): it must be called, not
    bypassed with its weights."""
    return bool(module._forward_hooks or module._forward_pre_hooks or hasattr(module, "_hf_hook"))


def _chunk_logps(head: Callable, hidden: Tensor, targets: Tensor) -> Tensor:
    logits = head(hidden).float()  # (c, V)
    return logits.gather(1, targets.unsqueeze(1)).squeeze(1) - logits.logsumexp(-1)  # (c,)


def reduce_token_logps(tokens: Tensor, mask: Tensor, token_weights: Tensor | None) -> LogProbs:
    """A :class:`LogProbs` from per-token log-probs ``tokens`` (B, L), 0 off ``mask`` (B, L) bool.

    The reduction every path shares (chunked head, full logits, cached reference): sum, mean over
    the completion tokens, and with ``token_weights`` (B, L) the weighted sum and mean.
    """
    counts = mask.sum(-1).float()  # (B,)
    total = tokens.sum(-1)
    weighted_sum = weighted_mean = None
    if token_weights is not None:
        weights = torch.where(mask, token_weights.float(), 0.0)  # weights off completion ignored
        weighted_sum = (tokens * weights).sum(-1)
        norm = weights.sum(-1)
        safe = torch.where(norm == 0, 1.0, norm)  # no 0/0, which would also poison the gradient
        weighted_mean = torch.where(norm == 0, 0.0, weighted_sum / safe)
    return LogProbs(total, total / counts.clamp(min=1), tokens, counts, weighted_sum, weighted_mean)


def _check(
    outputs: Tensor, input_ids: Tensor, mask: Tensor, token_weights: Tensor | None
) -> Tensor:
    """Validate shapes and the mask; return the mask as bool."""
    if outputs.dim() != 3:
        raise ValueError(
            f"expected hidden states or logits of shape (B, L, ·), got {outputs.shape}"
        )
    shape = outputs.shape[:2]
    for name, tensor in (("input_ids", input_ids), ("completion_mask", mask)):
        if tensor.shape != shape:
            raise ValueError(f"{name} has shape {tuple(tensor.shape)}, expected {tuple(shape)}")
    if token_weights is not None and token_weights.shape != shape:
        raise ValueError(f"token_weights has shape {tuple(token_weights.shape)}, expected {shape}")
    mask = mask.bool()
    if mask[:, 0].any():
        bad = mask[:, 0].nonzero().flatten().tolist()
        raise ValueError(
            f"completion_mask is True at position 0 in rows {bad}: the first token has no previous "
            "hidden state to predict it. Mark only completion tokens, after at least one prompt "
            "token (a BOS token will do), and with left padding shift the mask with the tokens."
        )
    return mask
