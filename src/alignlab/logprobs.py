"""Per-sequence log-probs of completion tokens, from hidden states and the LM head in chunks.

Example: ``lp = completion_logps(model.model(ids, attention_mask=am).last_hidden_state,
model.lm_head, ids, completion_mask); lp.sum, lp.mean``
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


@dataclass(frozen=True)
class LogProbs:
    """Log-probs over completion tokens; every field is float32."""

    sum: Tensor
    """(B,) S(y) = Σ_t log p(y_t | x, y_<t) over the completion tokens."""
    mean: Tensor
    """(B,) A(y) = S(y) / |y|, the length-normalised score; 0 for a sequence without completion tokens."""
    tokens: Tensor
    """(B, L) log-prob of the token at each position; 0 where the mask is False."""
    counts: Tensor
    """(B,) number of completion tokens |y|."""
    entropy: Tensor | None = None
    """(B, L) entropy (nats) of the next-token distribution that predicts each completion token,
    detached, 0 off the mask; None unless asked for (online RL logs it)."""
    values: Tensor | None = None
    """(B, L) a value model's estimate V(x, y_<t) at each completion token, with gradient, 0 off
    the mask; None unless a critic ran (PPO, :class:`alignlab.models.value.PolicyAndValue`)."""


def completion_logps(
    hidden: Tensor,
    lm_head: nn.Module | Tensor,
    input_ids: Tensor,
    completion_mask: Tensor,
    *,
    bias: Tensor | None = None,
    chunk_size: int = 1024,
    upcast: bool = True,
    temperature: float = 1.0,
    entropy: bool = False,
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

    ``temperature`` divides the logits before the softmax: the log-probs of the distribution a
    sampler at that temperature drew from (what online RL's ratios need). ``entropy=True`` also
    returns each position's entropy, from the same logits.
    """
    mask = _check(hidden, input_ids, completion_mask)
    batch, length, width = hidden.shape
    rows = mask[:, 1:].nonzero()  # (N, 2): (sequence, position of the predicting hidden state)
    flat = rows[:, 0] * length + rows[:, 1]  # (N,) rows of the flattened (B·L, H) hidden states
    targets = input_ids.reshape(-1)[flat + 1]  # (N,) the token after each such hidden state
    selected = hidden.reshape(batch * length, width).index_select(0, flat)  # (N, H)
    logps, entropies = head_logps_entropy(selected, targets, lm_head, bias=bias, chunk_size=chunk_size,
                                          upcast=upcast, temperature=temperature, entropy=entropy)

    def place(values: Tensor) -> Tensor:
        return values.new_zeros(batch * length).index_copy(0, flat + 1, values).view(batch, length)

    return reduce_token_logps(place(logps), mask, None if entropies is None else place(entropies))


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
    (the packed forward of :mod:`alignlab.forward.packing`)."""
    return head_logps_entropy(selected, targets, lm_head, bias=bias, chunk_size=chunk_size, upcast=upcast)[0]


def head_logps_entropy(
    selected: Tensor,
    targets: Tensor,
    lm_head: nn.Module | Tensor,
    *,
    bias: Tensor | None = None,
    chunk_size: int = 1024,
    upcast: bool = True,
    temperature: float = 1.0,
    entropy: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """:func:`head_logps` of the logits divided by ``temperature``, and with ``entropy=True`` the
    (N,) entropies of those distributions (detached; None otherwise), from the same chunks."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be a positive number, got {temperature}")
    head = _head(lm_head, bias, upcast)
    params = [lm_head] if isinstance(lm_head, Tensor) else list(lm_head.parameters())
    if bias is not None:
        params.append(bias)
    # Without recomputation autograd would keep every chunk's logits for the backward, which is
    # the full (N, V) tensor again; a checkpointed chunk keeps only its (c, H) input.
    recompute = torch.is_grad_enabled() and (
        selected.requires_grad or any(p.requires_grad for p in params)
    )
    pieces, entropies = [], []
    # One chunk even when N = 0, so that the result stays connected to the graph.
    for start in range(0, max(len(targets), 1), chunk_size):
        h, y = selected[start : start + chunk_size], targets[start : start + chunk_size]
        if recompute:
            pieces.append(checkpoint(_chunk_logps, head, h, y, temperature, use_reentrant=False))
        else:
            pieces.append(_chunk_logps(head, h, y, temperature))
        if entropy:
            # Its own no-grad pass: inside the checkpointed function it would be recomputed in
            # the backward for nothing; a logged metric needs no graph.
            with torch.no_grad():
                entropies.append(_chunk_entropy(head, h, temperature))
    return torch.cat(pieces), (torch.cat(entropies) if entropy else None)  # (N,), (N,)


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


def _chunk_logps(head: Callable, hidden: Tensor, targets: Tensor, temperature: float = 1.0) -> Tensor:
    logits = head(hidden).float()  # (c, V)
    if temperature != 1.0:
        logits = logits / temperature
    return logits.gather(1, targets.unsqueeze(1)).squeeze(1) - logits.logsumexp(-1)  # (c,)


def _chunk_entropy(head: Callable, hidden: Tensor, temperature: float) -> Tensor:
    logps = (head(hidden).float() / temperature).log_softmax(-1)  # (c, V)
    return -(logps.exp() * logps).sum(-1)  # (c,)


def reduce_token_logps(tokens: Tensor, mask: Tensor, entropy: Tensor | None = None) -> LogProbs:
    """A :class:`LogProbs` from per-token log-probs ``tokens`` (B, L), 0 off ``mask`` (B, L) bool:
    the reduction every path shares (chunked head, packed forward, cached reference)."""
    counts = mask.sum(-1).float()  # (B,)
    total = tokens.sum(-1)
    return LogProbs(total, total / counts.clamp(min=1), tokens, counts, entropy)


def _check(outputs: Tensor, input_ids: Tensor, mask: Tensor) -> Tensor:
    """Validate shapes and the mask; return the mask as bool."""
    if outputs.dim() != 3:
        raise ValueError(
            f"expected hidden states of shape (B, L, H), got {outputs.shape}"
        )
    shape = outputs.shape[:2]
    for name, tensor in (("input_ids", input_ids), ("completion_mask", mask)):
        if tensor.shape != shape:
            raise ValueError(f"{name} has shape {tuple(tensor.shape)}, expected {tuple(shape)}")
    mask = mask.bool()
    if mask[:, 0].any():
        bad = mask[:, 0].nonzero().flatten().tolist()
        raise ValueError(
            f"completion_mask is True at position 0 in rows {bad}: the first token has no previous "
            "hidden state to predict it. Mark only completion tokens, after at least one prompt "
            "token (a BOS token will do), and with left padding shift the mask with the tokens."
        )
    return mask
