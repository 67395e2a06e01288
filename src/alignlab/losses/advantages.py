"""Advantage estimators of online RL: rewards (and values) in, advantages out, each registered.

Example: ``advantages = ADVANTAGES.get("grpo").obj(rewards)`` with rewards (P, G): row p holds
the G completions sampled for prompt p, so row p, column j is completion p·G + j.

Every estimator is a pure function of tensors registered in :data:`alignlab.registry.ADVANTAGES`
with an :class:`AdvantageContract`; the loop reads the contract, never the name. Rewards must be
finite where they count: an estimator on grouped rewards takes ``valid`` (P, G) bool, False where no
reward could score the completion (None); those entries are left out of every mean and std and
get advantage 0, and whatever they hold (NaN) is never read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

import torch

from alignlab.registry import ADVANTAGES

F = TypeVar("F", bound=Callable[..., object])


@dataclass(frozen=True)
class AdvantageContract:
    """What an advantage estimator takes and gives; the rollout loop reads this, never the name."""

    level: Literal["sequence", "token"]
    """"sequence": one advantage per completion, shaped like the rewards (P, G); "token": one per
    completion token, (B, T) with B = P·G, zero off the mask."""
    rewards: Literal["grouped", "token"]
    """Its first argument: "grouped" sequence rewards (P, G), or "token" rewards (B, T) (see
    :func:`token_rewards`) with the completion mask (B, T) as second argument."""
    needs_values: bool
    """Whether it reads a value model's per-token estimates (GAE)."""
    paper: str
    """Authors, year, title and arXiv id of the paper it implements."""
    equation: str
    """The equation (or section) of that paper."""


def register_advantage(name: str, *, level: Literal["sequence", "token"],
                       rewards: Literal["grouped", "token"], needs_values: bool, paper: str,
                       equation: str) -> Callable[[F], F]:
    """Register an advantage estimator under ``name`` with its contract."""
    return ADVANTAGES.register(name, AdvantageContract(level, rewards, needs_values, paper, equation))


# ---- sequence level: one advantage per completion, from its group ------------------------------

@register_advantage("grpo", level="sequence", rewards="grouped", needs_values=False,
                    paper="Shao et al. 2024, DeepSeekMath: Pushing the Limits of Mathematical "
                          "Reasoning in Open Language Models, arXiv 2402.03300",
                    equation="§4.1.2 outcome supervision: Â_i = (r_i − mean(r)) / std(r)")
def grpo(rewards: torch.Tensor, *, scale: Literal["group", "batch", "none"] = "group",
         epsilon: float = 1e-4, valid: torch.Tensor | None = None) -> torch.Tensor:
    """GRPO's group-relative advantage (Shao et al. 2024, §4.1.2): Â_pj = (r_pj − r̄_p) / (σ + ε).

    r̄_p is the mean of prompt p's G rewards. σ is, by ``scale``: the group's std ("group"), the
    std of all P·G rewards ("batch", one σ for the whole call) or 1 with no ε ("none", which is
    :func:`dr_grpo`). σ is the Bessel-corrected std (divisor n − 1), as TRL computes it, and 0
    where there is a single reward, so a constant group gets advantage 0, never NaN. ε = 1e-4 is
    TRL's. With ``valid``, means and stds run over the valid entries only (the batch std over all
    valid rewards of the call). Input (P, G); returns (P, G).
    """
    if scale not in ("group", "batch", "none"):
        raise ValueError(f"grpo: scale must be 'group', 'batch' or 'none', got {scale!r}")
    valid = _check_grouped("grpo", rewards, valid)
    rewards = torch.where(valid, rewards, 0.0)
    mean, spread = _masked_mean_std(rewards, valid, dim=1)  # (P, 1) each
    centred = torch.where(valid, rewards - mean, 0.0)
    if scale == "none":
        return centred
    if scale == "batch":
        _, spread = _masked_mean_std(rewards.reshape(1, -1), valid.reshape(1, -1), dim=1)  # (1, 1)
    return centred / (spread + epsilon)


@register_advantage("dr_grpo", level="sequence", rewards="grouped", needs_values=False,
                    paper="Liu et al. 2025, Understanding R1-Zero-Like Training: A Critical "
                          "Perspective, arXiv 2503.20783",
                    equation="Dr. GRPO advantage Â_i = r_i − mean(r) (no std division)")
def dr_grpo(rewards: torch.Tensor, *, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Dr. GRPO's advantage (Liu et al. 2025): Â_pj = r_pj − r̄_p, GRPO without the std.

    Dividing by the group's std weighs questions that are nearly always or never solved more
    (a difficulty bias); Liu et al. drop it. Input (P, G); returns (P, G).
    """
    return grpo(rewards, scale="none", valid=valid)


@register_advantage("rloo", level="sequence", rewards="grouped", needs_values=False,
                    paper="Ahmadian et al. 2024, Back to Basics: Revisiting REINFORCE Style "
                          "Optimization for Learning from Human Feedback in LLMs, arXiv 2402.14740",
                    equation="RLOO estimator: r_i − (1/(k−1)) Σ_{j≠i} r_j")
def rloo(rewards: torch.Tensor, *, normalize: bool = False, epsilon: float = 1e-4,
         valid: torch.Tensor | None = None) -> torch.Tensor:
    """REINFORCE leave-one-out (Ahmadian et al. 2024): Â_pj = r_pj − (1/(G−1)) Σ_{k≠j} r_pk.

    Each completion's baseline is the mean of its G − 1 siblings, so it does not depend on the
    completion itself (the estimator stays unbiased); equivalently Â = G/(G−1)·(r − r̄).
    ``normalize`` then whitens all P·G advantages together, (Â − mean) / (std + ε) with the
    Bessel-corrected std, as TRL's ``normalize_advantages``. Needs G ≥ 2. With ``valid``, the
    siblings are the group's valid ones, and a valid completion without a valid sibling has no
    baseline: advantage 0. Input (P, G); returns (P, G).
    """
    valid = _check_grouped("rloo", rewards, valid)
    g = rewards.shape[1]
    if g < 2:
        raise ValueError(f"rloo: the leave-one-out baseline needs at least 2 completions per "
                         f"prompt, got rewards of shape {tuple(rewards.shape)} (G = {g}); sample "
                         "more (rl.num_generations) or use grpo")
    rewards = torch.where(valid, rewards, 0.0)
    siblings = valid.sum(dim=1, keepdim=True) - 1  # (P, 1): valid completions besides this one
    baseline = (rewards.sum(dim=1, keepdim=True) - rewards) / siblings.clamp(min=1)  # (P, G)
    counted = valid & (siblings >= 1)
    advantages = torch.where(counted, rewards - baseline, 0.0)
    if normalize:
        flat, keep = advantages.reshape(1, -1), counted.reshape(1, -1)
        mean, spread = _masked_mean_std(flat, keep, dim=1)
        advantages = torch.where(counted, (advantages - mean) / (spread + epsilon), 0.0)
    return advantages


# ---- token level: returns to go over the completion --------------------------------------------

def token_rewards(sequence_rewards: torch.Tensor, mask: torch.Tensor,
                  kl_per_token: torch.Tensor | None = None, kl_coef: float = 0.0) -> torch.Tensor:
    """Per-token rewards: r on the last active token, −kl_coef·KL_t at every active token.

    The "KL in the reward" form of PPO-style RLHF (Ouyang et al. 2022) and REINFORCE++ (Hu 2025):
    r_t = 1[t = last] · r − kl_coef · KL_t. ``kl_per_token`` (B, T) is usually k1 =
    log π_old − log π_ref (:func:`alignlab.losses.policy.kl_penalty`). A row with no active
    token gets all zeros (its reward has no token to sit on). Inputs ``sequence_rewards`` (B,),
    ``mask`` (B, T) bool; returns (B, T), zero off the mask.
    """
    mask = mask.bool()
    if sequence_rewards.dim() != 1 or mask.dim() != 2 or mask.shape[0] != sequence_rewards.shape[0]:
        raise ValueError(f"token_rewards: expected sequence_rewards (B,) and mask (B, T), got "
                         f"{tuple(sequence_rewards.shape)} and {tuple(mask.shape)}")
    _check_finite("token_rewards", sequence_rewards, "sequence_rewards")
    # The last active column: flip, find the first True, map back (a row without one is masked below).
    last = mask.shape[1] - 1 - mask.flip(-1).int().argmax(dim=-1)  # (B,)
    placed = torch.zeros(mask.shape, dtype=sequence_rewards.dtype, device=sequence_rewards.device)
    placed.scatter_(1, last[:, None], sequence_rewards[:, None])
    placed = torch.where(mask, placed, 0.0)  # (B, T)
    if kl_coef != 0.0:
        if kl_per_token is None:
            raise ValueError(f"token_rewards: kl_coef = {kl_coef} needs kl_per_token (B, T)")
        if kl_per_token.shape != mask.shape:
            raise ValueError(f"token_rewards: kl_per_token has shape {tuple(kl_per_token.shape)}, "
                             f"the mask {tuple(mask.shape)}")
        placed = placed - kl_coef * torch.where(mask, kl_per_token.to(placed.dtype), 0.0)
    return placed


@register_advantage("reinforce_pp", level="token", rewards="token", needs_values=False,
                    paper="Hu 2025, REINFORCE++: A Simple and Efficient Approach for Aligning "
                          "Large Language Models, arXiv 2501.03262",
                    equation="token advantage A_t = r − β Σ_{i≥t} KL_i, normalised over the global batch")
def reinforce_pp(token_rewards: torch.Tensor, mask: torch.Tensor, *, gamma: float = 1.0,
                 baseline: torch.Tensor | None = None) -> torch.Tensor:
    """REINFORCE++ (Hu 2025): returns to go, then normalised over every active token of the batch.

    G_t = Σ_{k≥t} γ^{k−t} r_k over the completion (from :func:`token_rewards`, so with γ = 1
    G_t = r − kl_coef·Σ_{k≥t} KL_k); ``baseline`` (B,) is subtracted from each row's G_t; then
    A_t = (G_t − μ) / σ with μ, σ the mean and (divisor-n) std over all active tokens of the call,
    σ² floored at 1e-8 as OpenRLHF does. γ discounts positions. Inputs (B, T); returns (B, T), zero
    off the mask, with mean 0 and std 1 over the active tokens.
    """
    mask = _check_tokens("reinforce_pp", token_rewards, mask)
    returns = _discounted_reverse_cumsum(torch.where(mask, token_rewards, 0.0), gamma)  # (B, T)
    if baseline is not None:
        if baseline.shape != mask.shape[:1]:
            raise ValueError(f"reinforce_pp: baseline must be (B,) = {tuple(mask.shape[:1])}, "
                             f"got {tuple(baseline.shape)}")
        returns = returns - baseline[:, None].to(returns.dtype)
    return _whiten(returns, mask)


@register_advantage("reinforce_pp_baseline", level="token", rewards="grouped", needs_values=False,
                    paper="Hu 2025, REINFORCE++: A Simple and Efficient Approach for Aligning "
                          "Large Language Models, arXiv 2501.03262",
                    equation="REINFORCE++ with baseline: r − mean(group r), then global normalisation")
def reinforce_pp_baseline(rewards: torch.Tensor, mask: torch.Tensor,
                          kl_per_token: torch.Tensor | None = None, kl_coef: float = 0.0, *,
                          valid: torch.Tensor | None = None) -> torch.Tensor:
    """REINFORCE++ with baseline (Hu 2025): the group mean subtracted, then :func:`reinforce_pp`.

    r'_pj = r_pj − r̄_p goes on the last active token of completion p·G + j, the KL penalty on every
    token, and the returns (γ = 1, as OpenRLHF fixes it here) are normalised over all active tokens.
    With ``valid``, the group mean runs over the valid completions and the invalid ones' rows
    are masked out (no tokens, advantage 0).
    Inputs ``rewards`` (P, G), ``mask`` (P·G, T), ``kl_per_token`` (P·G, T); returns (P·G, T).
    """
    valid = _check_grouped("reinforce_pp_baseline", rewards, valid)
    if mask.dim() != 2 or mask.shape[0] != rewards.numel():
        raise ValueError(f"reinforce_pp_baseline: the mask must be (P·G, T) = ({rewards.numel()}, T), "
                         f"got {tuple(mask.shape)}; row p·G + j is completion j of prompt p")
    rewards = torch.where(valid, rewards, 0.0)
    mean, _ = _masked_mean_std(rewards, valid, dim=1)
    centred = torch.where(valid, rewards - mean, 0.0).reshape(-1)  # (P·G,)
    mask = mask.bool() & valid.reshape(-1, 1)
    return reinforce_pp(token_rewards(centred, mask, kl_per_token, kl_coef), mask)


@register_advantage("gae", level="token", rewards="token", needs_values=True,
                    paper="Schulman et al. 2016, High-Dimensional Continuous Control Using "
                          "Generalized Advantage Estimation, arXiv 1506.02438",
                    equation="Eq. 16: Â_t = Σ_l (γλ)^l δ_{t+l}, δ_t = r_t + γV_{t+1} − V_t")
def gae(token_rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, *,
        gamma: float = 1.0, lam: float = 0.95, whiten: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation (Schulman et al. 2016, Eq. 16) and the value targets.

    δ_t = r_t + γ V_{t+1} − V_t, with V = 0 after the last active token (the completion ends
    there); Â_t = Σ_{l≥0} (γλ)^l δ_{t+l}, computed as the backward recursion Â_t = δ_t + γλ Â_{t+1};
    returns R_t = Â_t + V_t (the value model's targets). λ = 1 gives R_t = the discounted reward to
    go, λ = 0 the one-step TD error. The mask must be right-padded (active tokens first). Inputs
    (B, T); returns (advantages, returns), each (B, T), zero off the mask. ``whiten`` then
    normalises the advantages over all active tokens (mean 0, std 1, as TRL's PPO does); the
    returns are computed before it, from the raw advantages.
    """
    mask = _check_tokens("gae", token_rewards, mask)
    if values.shape != mask.shape:
        raise ValueError(f"gae: values have shape {tuple(values.shape)}, the mask {tuple(mask.shape)}")
    _check_finite("gae", values, "values")
    if bool((mask[:, 1:] & ~mask[:, :-1]).any()):
        raise ValueError("gae: the mask has an active token after an inactive one; GAE bootstraps "
                         "from the next token's value, so completions must be right-padded")
    rewards = torch.where(mask, token_rewards, 0.0)
    values = torch.where(mask, values.to(rewards.dtype), 0.0)
    next_values = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], dim=1)  # (B, T)
    deltas = rewards + gamma * next_values - values
    advantages = torch.where(mask, _discounted_reverse_cumsum(deltas, gamma * lam), 0.0)
    returns = torch.where(mask, advantages + values, 0.0)
    return (_whiten(advantages, mask) if whiten else advantages), returns


# ---- helpers -----------------------------------------------------------------------------------

def _discounted_reverse_cumsum(x: torch.Tensor, discount: float) -> torch.Tensor:
    """y_t = Σ_{k≥t} discount^{k−t} x_k along the last dim, (B, T) → (B, T)."""
    if discount == 1.0:
        return x.flip(-1).cumsum(-1).flip(-1)
    # A backward scan, vectorised over rows: y_t = x_t + discount·y_{t+1}. Closed forms through
    # discount^{−t} overflow for long completions, and a (T, T) matrix is quadratic in memory.
    out = torch.empty_like(x)
    carry = torch.zeros_like(x[:, 0])
    for t in range(x.shape[1] - 1, -1, -1):
        carry = x[:, t] + discount * carry
        out[:, t] = carry
    return out


def _whiten(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(x − μ)/σ with μ, σ over the active tokens (σ² ≥ 1e-8), zero off the mask."""
    count = mask.sum().clamp(min=1)
    mean = torch.where(mask, x, 0.0).sum() / count
    variance = torch.where(mask, (x - mean) ** 2, 0.0).sum() / count
    return torch.where(mask, (x - mean) * variance.clamp(min=1e-8).rsqrt(), 0.0)


def _masked_mean_std(x: torch.Tensor, valid: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and Bessel-corrected std of the valid entries along ``dim`` (kept); the std is 0
    where fewer than two are valid, and the mean 0 where none is."""
    count = valid.sum(dim=dim, keepdim=True)
    mean = torch.where(valid, x, 0.0).sum(dim=dim, keepdim=True) / count.clamp(min=1)
    squares = torch.where(valid, (x - mean) ** 2, 0.0).sum(dim=dim, keepdim=True)
    std = torch.where(count >= 2, (squares / (count - 1).clamp(min=1)).sqrt(), 0.0)
    return mean, std


def _check_grouped(name: str, rewards: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """The (P, G) valid mask (all True by default), after checking shapes and finiteness."""
    if rewards.dim() != 2:
        raise ValueError(f"{name}: rewards must be (P, G), one row per prompt and its G completions, "
                         f"got shape {tuple(rewards.shape)}")
    if valid is None:
        valid = torch.ones(rewards.shape, dtype=torch.bool, device=rewards.device)
    elif valid.shape != rewards.shape:
        raise ValueError(f"{name}: valid must be shaped like the rewards {tuple(rewards.shape)}, "
                         f"got {tuple(valid.shape)}")
    valid = valid.bool()
    _check_finite(name, torch.where(valid, rewards, 0.0), "rewards")
    return valid


def _check_tokens(name: str, token_rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if token_rewards.dim() != 2 or token_rewards.shape != mask.shape:
        raise ValueError(f"{name}: token_rewards and mask must both be (B, T), got "
                         f"{tuple(token_rewards.shape)} and {tuple(mask.shape)}")
    mask = mask.bool()
    _check_finite(name, torch.where(mask, token_rewards, 0.0), "token_rewards")
    return mask


def _check_finite(name: str, x: torch.Tensor, what: str) -> None:
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        where = [tuple(i) for i in bad.nonzero().tolist()[:5]]
        raise ValueError(f"{name}: {what} are not finite (NaN or inf) at {where}; mark a completion "
                         "no reward could score (None) with valid=False, or drop it")
