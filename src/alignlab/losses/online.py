"""Online RL objectives: the clipped policy-gradient losses of GRPO and its relatives, registered.

Example: ``losses, metrics = get_loss("grpo").obj(policy_tokens, old_tokens, advantages, mask, ref_tokens)``

Each trains on prompt-only data: the loop samples completions, scores them and computes their
advantages with the estimator the contract names (:mod:`alignlab.losses.advantages`), then
calls the loss on the sampled batch. All of them are :func:`alignlab.losses.policy.policy_token_losses`
with the paper's settings; they differ in the advantage, the clip range, the importance ratio and
the aggregation. A loss returns each completion's share of the step's loss numerator (B,) (see
:func:`alignlab.losses.policy.loss_numerator`): the loop divides the step's sum by the step's
global units (:func:`alignlab.losses.policy.loss_units`), so dapo's token normalisation spans the
whole global batch, however it is split over micro-batches and ranks.

Inputs, all (B, T) over the whole sequence: ``policy_tokens`` with gradient, ``old_tokens`` the
sampling policy's (detached; equal to the policy's own when a rollout serves one step),
``ref_tokens`` the reference's (the policy's own detached when β = 0, so the KL term is 0),
``mask`` the completion tokens, ``advantages`` (B,) or (B, T).
"""

from __future__ import annotations

from typing import Any

import torch

from alignlab.losses.contract import LossOutput, register_loss
from alignlab.losses.policy import AGGREGATIONS, policy_token_losses


def clipped_objective(policy_tokens: torch.Tensor, old_tokens: torch.Tensor, advantages: torch.Tensor,
                      mask: torch.Tensor, ref_tokens: torch.Tensor, *, aggregation: str,
                      **options: Any) -> LossOutput:
    """Per-completion shares of the loss numerator (B,) and the policy metrics; ``options`` go to
    :func:`policy_token_losses` (ε_low, ε_high, δ, importance, β, kl)."""
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {', '.join(AGGREGATIONS)}, got {aggregation!r}")
    mask = mask.bool()
    per_token, metrics = policy_token_losses(policy_tokens, old_tokens.detach(), advantages, mask,
                                             ref_logp=ref_tokens.detach(), **options)
    return shares(per_token, mask, aggregation), metrics


def shares(per_token: torch.Tensor, mask: torch.Tensor, aggregation: str) -> torch.Tensor:
    """Each completion's share (B,) of the step's loss numerator for a per-token loss (B, T)
    (zero off the mask): its sum over :func:`~alignlab.losses.policy.loss_numerator`'s rows."""
    sums = torch.where(mask, per_token, 0.0).sum(-1)  # (B,)
    if aggregation == "grpo":
        return sums / mask.sum(-1).clamp(min=1)
    if aggregation == "bnpo":
        return sums / mask.sum().clamp(min=1)
    return sums  # dapo, dr_grpo: token sums; the step's units are its tokens, or B·max_new_tokens


_GRPO = ("Shao et al. 2024, DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open "
         "Language Models, arXiv 2402.03300")


@register_loss("grpo", needs_ref=False, logps="token", data="prompt", advantage="grpo", paper=_GRPO,
               equation="Eq. 3: clipped surrogate with group-relative advantages, per-completion token mean, − β·KL (k3)")
def grpo(policy_tokens: torch.Tensor, old_tokens: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
         ref_tokens: torch.Tensor, *, epsilon_low: float = 0.2, epsilon_high: float = 0.2,
         delta: float | None = None, beta: float = 0.0, kl: str = "k3",
         aggregation: str = "grpo") -> LossOutput:
    """GRPO (Shao et al. 2024, Eq. 3): l_t = −min(w_t Â, clip(w_t, 1−ε_low, 1+ε_high) Â) + β k3_t,
    averaged over each completion's tokens, then over completions (``aggregation="grpo"``).

    Â from the ``grpo`` estimator (rl.scale_rewards: group, batch or none). β = 0 by default, as
    TRL's (no reference is loaded then); set beta > 0 for the paper's KL term (β = 0.04 there).
    Returns (B,) shares of the step's loss numerator.
    """
    return clipped_objective(policy_tokens, old_tokens, advantages, mask, ref_tokens, aggregation=aggregation,
                             epsilon_low=epsilon_low, epsilon_high=epsilon_high, delta=delta, beta=beta, kl=kl)


@register_loss("dapo", needs_ref=False, logps="token", data="prompt", advantage="grpo",
               paper="Yu et al. 2025, DAPO: An Open-Source LLM Reinforcement Learning System at Scale, "
                     "arXiv 2503.14476",
               equation="§3 DAPO objective: clip-higher (ε_low 0.2, ε_high 0.28), token-level loss over the batch's tokens")
def dapo(policy_tokens: torch.Tensor, old_tokens: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
         ref_tokens: torch.Tensor, *, epsilon_low: float = 0.2, epsilon_high: float = 0.28,
         delta: float | None = None, beta: float = 0.0, kl: str = "k3",
         aggregation: str = "dapo") -> LossOutput:
    """DAPO (Yu et al. 2025, §3): GRPO's surrogate with clip-higher (ε_high = 0.28 > ε_low =
    0.2, §3.1) and the token-level loss (§3.3): Σ over every active token of the global batch ÷
    their number, so long completions weigh by their length. No KL (β = 0), as the paper.
    DAPO's dynamic sampling and overlong shaping are not part of this loss. Returns (B,) shares.
    """
    return clipped_objective(policy_tokens, old_tokens, advantages, mask, ref_tokens, aggregation=aggregation,
                             epsilon_low=epsilon_low, epsilon_high=epsilon_high, delta=delta, beta=beta, kl=kl)


@register_loss("dr_grpo", needs_ref=False, logps="token", data="prompt", advantage="dr_grpo",
               paper="Liu et al. 2025, Understanding R1-Zero-Like Training: A Critical Perspective, "
                     "arXiv 2503.20783",
               equation="Dr. GRPO: Â = r − mean(r); token sums ÷ (B · max completion length)")
def dr_grpo(policy_tokens: torch.Tensor, old_tokens: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
            ref_tokens: torch.Tensor, *, epsilon_low: float = 0.2, epsilon_high: float = 0.2,
            delta: float | None = None, beta: float = 0.0, kl: str = "k3",
            aggregation: str = "dr_grpo") -> LossOutput:
    """Dr. GRPO (Liu et al. 2025): no std in the advantage and no per-completion length division;
    token sums ÷ B·L_max (L_max = rl.max_new_tokens), a constant, which removes GRPO's length bias.
    Returns (B,) shares.
    """
    return clipped_objective(policy_tokens, old_tokens, advantages, mask, ref_tokens, aggregation=aggregation,
                             epsilon_low=epsilon_low, epsilon_high=epsilon_high, delta=delta, beta=beta, kl=kl)


@register_loss("gspo", needs_ref=False, logps="token", data="prompt", advantage="grpo",
               paper="Zheng et al. 2025, Group Sequence Policy Optimization, arXiv 2507.18071",
               equation="GSPO objective: sequence ratio s = exp(mean_t log π/π_old), clipped at 1 ± (3e-4, 4e-4)")
def gspo(policy_tokens: torch.Tensor, old_tokens: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
         ref_tokens: torch.Tensor, *, epsilon_low: float = 3e-4, epsilon_high: float = 4e-4,
         beta: float = 0.0, kl: str = "k3", aggregation: str = "grpo") -> LossOutput:
    """GSPO (Zheng et al. 2025): one importance ratio per completion, the length-normalised
    s = exp((1/|y|) Σ_t log π/π_old), clipped per sequence with the paper's tiny range
    (3e-4, 4e-4), with GRPO's group advantages. With one optimizer step per rollout s = 1 and
    this is REINFORCE with group baselines; the clipping acts with rl.num_iterations > 1.
    Returns (B,) shares.
    """
    return clipped_objective(policy_tokens, old_tokens, advantages, mask, ref_tokens, aggregation=aggregation,
                             epsilon_low=epsilon_low, epsilon_high=epsilon_high, importance="sequence",
                             beta=beta, kl=kl)


@register_loss("rloo", needs_ref=False, logps="token", data="prompt", advantage="rloo",
               paper="Ahmadian et al. 2024, Back to Basics: Revisiting REINFORCE Style Optimization for "
                     "Learning from Human Feedback in LLMs, arXiv 2402.14740",
               equation="RLOO estimator: REINFORCE with the leave-one-out baseline, KL in the reward")
def rloo(policy_tokens: torch.Tensor, old_tokens: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
         ref_tokens: torch.Tensor, *, epsilon_low: float = 0.2, epsilon_high: float = 0.2,
         beta: float = 0.0, kl: str = "k3", aggregation: str = "grpo") -> LossOutput:
    """RLOO (Ahmadian et al. 2024): Â = r − mean of the other G−1 rewards, the KL to the
    reference subtracted from the reward (rl.kl_in_reward, k1 summed over the completion, as TRL's
    RLOOTrainer with β = 0.05 there) rather than added to the loss. With one optimizer step per
    rollout the ratio is 1 and the clip inactive: this is the paper's REINFORCE estimator, with
    TRL's clipping for rl.num_iterations > 1. Returns (B,) shares.
    """
    return clipped_objective(policy_tokens, old_tokens, advantages, mask, ref_tokens, aggregation=aggregation,
                             epsilon_low=epsilon_low, epsilon_high=epsilon_high, beta=beta, kl=kl)


@register_loss("reinforce_pp", needs_ref=False, logps="token", data="prompt", advantage="reinforce_pp_baseline",
               paper="Hu 2025, REINFORCE++: A Simple and Efficient Approach for Aligning Large Language "
                     "Models, arXiv 2501.03262",
               equation="§3: token advantages normalised over the global batch, PPO clip, token-mean loss")
def reinforce_pp(policy_tokens: torch.Tensor, old_tokens: torch.Tensor, advantages: torch.Tensor,
                 mask: torch.Tensor, ref_tokens: torch.Tensor, *, epsilon_low: float = 0.2,
                 epsilon_high: float = 0.2, beta: float = 0.0, kl: str = "k3",
                 aggregation: str = "dapo") -> LossOutput:
    """REINFORCE++ (Hu 2025): per-token advantages (the group-mean baseline variant for several
    samples per prompt, ``reinforce_pp_baseline``; rl.advantage=reinforce_pp for the plain one),
    normalised over every active token of the batch, PPO's clip, the mean over the batch's active
    tokens. The KL goes in the reward, per token (rl.kl_in_reward, k1 as the paper), or in the
    loss (beta, with kl = k1, k2 or k3). Returns (B,) shares.
    """
    return clipped_objective(policy_tokens, old_tokens, advantages, mask, ref_tokens, aggregation=aggregation,
                             epsilon_low=epsilon_low, epsilon_high=epsilon_high, beta=beta, kl=kl)


@register_loss("ppo", needs_ref=False, logps="token", data="prompt", advantage="gae",
               paper="Schulman et al. 2017, Proximal Policy Optimization Algorithms, arXiv 1707.06347; "
                     "Ouyang et al. 2022, Training language models to follow instructions with human "
                     "feedback, arXiv 2203.02155",
               equation="Eq. 9: L^CLIP − c1·L^VF (clipped value loss), GAE advantages, KL in the reward")
def ppo(policy_tokens: torch.Tensor, old_tokens: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
        ref_tokens: torch.Tensor, values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, *,
        epsilon_low: float = 0.2, epsilon_high: float = 0.2, value_clip: float = 0.2, vf_coef: float = 0.1,
        beta: float = 0.0, kl: str = "k3", aggregation: str = "dapo") -> LossOutput:
    """PPO with a critic (Schulman et al. 2017, Eq. 9; RLHF as Ouyang et al. 2022):
    l_t = clipped surrogate_t + vf_coef · ½ max((V_t − R_t)², (clip(V_t, V_old ± value_clip) − R_t)²).

    Â and R = Â + V_old from GAE (γ = rl.gamma, λ = rl.gae_lambda) on token rewards (the reward on
    the last token, the KL to the reference per token when rl.kl_in_reward > 0, as TRL's PPO with
    its kl_coef 0.05), whitened over the batch's tokens. Defaults are TRL's PPOConfig
    (cliprange 0.2, cliprange_value 0.2, vf_coef 0.1, a token mean over the batch). Returns (B,)
    shares of the step's loss numerator; metrics add ``value_loss``, ``value_clip_ratio`` and the
    mean ``values``.
    """
    mask = mask.bool()
    per_token, metrics = policy_token_losses(policy_tokens, old_tokens.detach(), advantages, mask,
                                             ref_logp=ref_tokens.detach(), epsilon_low=epsilon_low,
                                             epsilon_high=epsilon_high, beta=beta, kl=kl)
    returns, old_values = returns.detach().to(values.dtype), old_values.detach().to(values.dtype)
    clipped = old_values + (values - old_values).clamp(-value_clip, value_clip)
    plain_error, clipped_error = (values - returns) ** 2, (clipped - returns) ** 2
    value_loss = 0.5 * torch.maximum(plain_error, clipped_error)  # (B, T)
    count = mask.sum().clamp(min=1)
    metrics["value_loss"] = (torch.where(mask, value_loss, 0.0).sum() / count).detach()
    metrics["value_clip_ratio"] = (torch.where(mask, clipped_error > plain_error, False).sum() / count).detach()
    metrics["values"] = (torch.where(mask, values, 0.0).sum() / count).detach()
    total = per_token + vf_coef * torch.where(mask, value_loss, 0.0)
    return shares(total, mask, aggregation), metrics
