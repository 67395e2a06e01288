"""Policy objectives of online RL: the clipped surrogate per token, KL estimators, aggregation.

Example: ``per_token, metrics = policy_token_losses(logp, old_logp, advantages, mask)``, then
``loss = aggregate(per_token, mask, "dapo", max_completion_length)``

Aggregation is split in two so that a loop can accumulate over micro-batches and ranks: each
micro-batch contributes :func:`loss_numerator` (with gradient) and :func:`loss_units` (a count),
and the step's loss is Σ numerators / Σ units. For "grpo", "dapo" and "dr_grpo" that is the
full-batch :func:`aggregate` however the batch is split; "bnpo" is a mean over micro-batches
(each its own token mean), as TRL computes it, and depends on the split.
"""

from __future__ import annotations

from typing import Literal

import torch

KLKind = Literal["k1", "k2", "k3"]
Aggregation = Literal["grpo", "bnpo", "dapo", "dr_grpo"]
AGGREGATIONS: tuple[str, ...] = ("grpo", "bnpo", "dapo", "dr_grpo")


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, kind: KLKind = "k3") -> torch.Tensor:
    """Per-token estimators of KL(π ‖ π_ref) from a token sampled from π (Schulman 2020,
    "Approximating KL Divergence"); with u = log π_ref − log π:

    k1 = −u (unbiased, can be negative; summed over a completion it is the sequence log-ratio),
    k2 = u²/2 (biased, ≥ 0), k3 = exp(u) − u − 1 (unbiased, ≥ 0; GRPO's, Shao et al. 2024,
    arXiv 2402.03300, Eq. 4). All are 0 where logp = ref_logp. Inputs (B, T); returns (B, T).
    """
    log_ratio = ref_logp - logp
    if kind == "k1":
        return -log_ratio
    if kind == "k2":
        return 0.5 * log_ratio**2
    if kind == "k3":
        # expm1: exp(u) − 1 − u rounds below 0 for |u| ≲ 1e-8, expm1(u) − u does not.
        return torch.expm1(log_ratio) - log_ratio
    raise ValueError(f"kl_penalty: kind must be 'k1', 'k2' or 'k3', got {kind!r}")


def policy_token_losses(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.2,
    delta: float | None = None,
    importance: Literal["token", "sequence"] = "token",
    ref_logp: torch.Tensor | None = None,
    beta: float = 0.0,
    kl: KLKind = "k3",
    kl_weighted_by_ratio: bool = False,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The clipped surrogate per token (PPO, Schulman et al. 2017, arXiv 1707.06347, Eq. 7):

    l_t = −min(w_t·A_t, clip(w_t, 1 − ε_low, 1 + ε_high)·A_t) + β·k_t.

    ``importance="token"``: w_t = π(y_t)/π_old(y_t). ``"sequence"`` (GSPO, Zheng et al. 2025,
    arXiv 2507.18071): one w per completion, the length-normalised ratio
    w = exp(mean_t log π/π_old), shared by its tokens (as TRL computes it). Separate ε_low, ε_high
    are DAPO's clip-higher (Yu et al. 2025, arXiv 2503.14476, §3.1). ``delta`` caps the unclipped
    w at δ (two-sided clipping, INTELLECT-2, arXiv 2505.07291), which bounds the loss of
    A < 0 tokens whose ratio has grown. k_t = :func:`kl_penalty` (``kl``) of logp against
    ``ref_logp`` when β ≠ 0, with gradient through logp; ``kl_weighted_by_ratio`` multiplies it by
    w (TRL's ``use_bias_correction_kl``, off here as in the GRPO paper).

    Inputs: logp (B, T) with gradient; old_logp, ref_logp (B, T) detached; advantages (B,) or
    (B, T); mask (B, T) bool. Values off the mask are never read. Returns the per-token loss
    (B, T), zero off the mask (reduce it with :func:`aggregate`), and detached scalar metrics:
    ``clip_ratio/low``, ``clip_ratio/high``, ``clip_ratio/region`` (the share of active tokens, or
    of completions at sequence level, clipped at 1 − ε_low with A < 0, at 1 + ε_high with A > 0,
    either: TRL's definitions, on w before the δ cap), ``ratio`` (mean w) and ``kl`` (mean k over active tokens, when
    ``ref_logp`` is given).
    """
    mask = mask.bool()
    if logp.shape != mask.shape or old_logp.shape != mask.shape:
        raise ValueError(f"policy_token_losses: logp {tuple(logp.shape)} and old_logp "
                         f"{tuple(old_logp.shape)} must match the mask {tuple(mask.shape)}")
    if advantages.dim() == 1:
        advantages = advantages[:, None]  # (B, 1): one advantage per completion
    if advantages.shape not in ((mask.shape[0], 1), tuple(mask.shape)):
        raise ValueError(f"policy_token_losses: advantages must be (B,) or (B, T) for a mask "
                         f"{tuple(mask.shape)}, got {tuple(advantages.shape)}")
    # Zero the log-ratio off the mask before exp: padding may hold anything, and a where() after
    # an overflowing exp would still send NaN gradients back through it.
    log_ratio = torch.where(mask, logp - old_logp, 0.0)  # (B, T)
    if importance == "token":
        log_w = log_ratio
    elif importance == "sequence":
        log_w = log_ratio.sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1)  # (B, 1)
    else:
        raise ValueError(f"policy_token_losses: importance must be 'token' or 'sequence', got {importance!r}")
    ratio = torch.exp(log_w)
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    unclipped = ratio if delta is None else torch.clamp(ratio, max=delta)
    surrogate = -torch.min(unclipped * advantages, clipped * advantages)  # (B, T) or (B, 1)
    losses = surrogate.expand(mask.shape)

    metrics: dict[str, torch.Tensor] = {}
    if ref_logp is not None:
        if ref_logp.shape != mask.shape:
            raise ValueError(f"policy_token_losses: ref_logp {tuple(ref_logp.shape)} must match the "
                             f"mask {tuple(mask.shape)}")
        per_token_kl = kl_penalty(torch.where(mask, logp, 0.0), torch.where(mask, ref_logp, 0.0), kl)
        if kl_weighted_by_ratio:
            per_token_kl = per_token_kl * ratio
        if beta != 0.0:
            losses = losses + beta * per_token_kl
        metrics["kl"] = _masked_mean(per_token_kl.detach(), mask)
    elif beta != 0.0:
        raise ValueError(f"policy_token_losses: beta = {beta} needs ref_logp (B, T)")

    # Clipping is counted where it is decided: per token, or per completion when one ratio and
    # one advantage serve all its tokens.
    per_token = importance == "token" or advantages.shape[-1] != 1
    counted = mask if per_token else mask.any(-1, keepdim=True)
    low = (ratio < 1 - epsilon_low) & (advantages < 0)
    high = (ratio > 1 + epsilon_high) & (advantages > 0)
    shape = counted.shape
    metrics["clip_ratio/low"] = _masked_mean(low.expand(shape).float(), counted)
    metrics["clip_ratio/high"] = _masked_mean(high.expand(shape).float(), counted)
    metrics["clip_ratio/region"] = _masked_mean((low | high).expand(shape).float(), counted)
    metrics["ratio"] = _masked_mean(ratio.detach().expand(shape), counted)
    return torch.where(mask, losses, 0.0), metrics


def loss_numerator(per_token_loss: torch.Tensor, mask: torch.Tensor, aggregation: Aggregation) -> torch.Tensor:
    """One micro-batch's share of the step's loss numerator, a scalar with gradient.

    With l the per-token loss, n_i the active tokens of completion i:
    "grpo" Σ_i (Σ_t l_it / n_i) (each completion its token mean; Shao et al. 2024, Eq. 3);
    "bnpo" Σ l / Σ n (this micro-batch's token mean); "dapo" and "dr_grpo" Σ l (DAPO's
    token-level loss, Yu et al. 2025, §3.3; Dr. GRPO, Liu et al. 2025, arXiv 2503.20783, which
    divides by a constant instead of n_i). Inputs (B, T).
    """
    mask = mask.bool()
    masked = torch.where(mask, per_token_loss, 0.0)
    if aggregation == "grpo":
        return (masked.sum(-1) / mask.sum(-1).clamp(min=1)).sum()
    if aggregation == "bnpo":
        return masked.sum() / mask.sum().clamp(min=1)
    if aggregation in ("dapo", "dr_grpo"):
        return masked.sum()
    raise ValueError(_unknown(aggregation))


def loss_units(mask: torch.Tensor, aggregation: Aggregation, max_completion_length: int | None = None) -> float:
    """One micro-batch's share of the step's loss denominator, a count.

    "grpo": its completions (B); "bnpo": 1 (a mean of micro-batch means); "dapo": its active
    tokens (the whole step's tokens once summed: global token normalisation); "dr_grpo":
    B · ``max_completion_length`` (the generation limit, the same for every completion). Sum it
    over micro-batches and ranks, floor the total at 1, and divide the summed numerators by it.
    """
    mask = mask.bool()
    if aggregation == "grpo":
        return float(mask.shape[0])
    if aggregation == "bnpo":
        return 1.0
    if aggregation == "dapo":
        return float(mask.sum())
    if aggregation == "dr_grpo":
        if max_completion_length is None or max_completion_length < 1:
            raise ValueError(f"loss_units: dr_grpo divides by the generation limit; pass "
                             f"max_completion_length >= 1 (rl.max_new_tokens), got {max_completion_length}")
        longest = int(mask.sum(-1).max()) if mask.numel() else 0
        if longest > max_completion_length:
            raise ValueError(f"loss_units: a completion has {longest} active tokens, more than "
                             f"max_completion_length = {max_completion_length}")
        return float(mask.shape[0] * max_completion_length)
    raise ValueError(_unknown(aggregation))


def aggregate(per_token_loss: torch.Tensor, mask: torch.Tensor, aggregation: Aggregation,
              max_completion_length: int | None = None) -> torch.Tensor:
    """The loss of one whole batch: :func:`loss_numerator` / :func:`loss_units` (floored at 1)."""
    units = loss_units(mask, aggregation, max_completion_length)
    return loss_numerator(per_token_loss, mask, aggregation) / max(units, 1.0)


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask, x, 0.0).sum() / mask.sum().clamp(min=1)


def _unknown(aggregation: object) -> str:
    return f"unknown aggregation {aggregation!r}; choose one of {', '.join(AGGREGATIONS)}"
