"""Preference losses without a reference model: SimPO, CPO, ORPO (paired) and AFT (ranked).

Example: ``losses, metrics = simpo(policy_chosen, policy_rejected, beta=2.0)`` with inputs (B,)

Notation: S(y) = summed completion log-prob (prompt and padding masked out), A(y) = S(y)/|y| its
per-token mean, |y| the number of completion tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from alignlab.losses.contract import LossOutput, register_loss
from alignlab.losses.dpo import reward_metrics
from alignlab.losses.logic.semantic import log1mexp

ORPO_MAX_MEAN_LOGP = -1e-6
"""ORPO clamps A(y) to at most this: A = 0 (P = 1) has infinite odds; −1e-6 caps log-odds at ≈ 13.8."""
AFT_CONSTRAINTS = ("none", "detached", "boundary", "boundary_threshold")


@register_loss("simpo", needs_ref=False, logps="mean", data="paired",
               paper="Meng et al. 2024, SimPO: Simple Preference Optimization with a Reference-Free "
                     "Reward, arXiv 2405.14734", equation="Eq. 6")
def simpo(
    policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
    *, beta: float = 2.0, gamma: float = 0.5,
) -> LossOutput:
    """SimPO (Meng et al. 2024, Eq. 6): L = −log σ(β A(y_w) − β A(y_l) − γ), A = token-mean log-prob.

    γ is the absolute target reward margin. Defaults are the paper's recommended range (β ≈ 2–2.5,
    γ ∈ (0, 1.5]; torchtune's SimPOLoss used β = 2.0, γ = 0.5). TRL (CPOTrainer,
    loss_type="simpo") writes the same loss as −log σ(β (A_w − A_l − γ/β)) with defaults β = 0.1,
    ``simpo_gamma`` = 0.5, and its CPOConfig adds ``cpo_alpha`` · NLL(y_w) with cpo_alpha = 1.0 by
    default, which pure SimPO does not (set cpo_alpha=0 to compare). Inputs (B,); returns (B,).
    """
    losses = -F.logsigmoid(beta * (policy_chosen - policy_rejected) - gamma)
    return losses, reward_metrics(beta, policy_chosen, policy_rejected)


@register_loss("cpo", needs_ref=False, logps="sum", data="paired",
               paper="Xu et al. 2024, Contrastive Preference Optimization: Pushing the Boundaries of "
                     "LLM Performance in Machine Translation, arXiv 2401.08417",
               equation="L_CPO = L_prefer + L_NLL (final objective; TRL CPOTrainer loss_type='sigmoid')")
def cpo(
    policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, chosen_lengths: torch.Tensor,
    *, beta: float = 0.1, alpha: float = 1.0,
) -> LossOutput:
    """CPO (Xu et al. 2024): L = −log σ(β (S(y_w) − S(y_l))) + α · NLL(y_w), NLL = −S(y_w)/|y_w|.

    Summed log-probs in the preference term; the NLL is the token mean over the chosen completion
    (as TRL's ``cpo_alpha`` term; the paper writes −log πθ(y_w|x)). TRL averages the NLL over all
    chosen tokens of the batch; here it is per example and the trainer reduces. Inputs (B,), with
    ``chosen_lengths`` the completion token counts (clamped to ≥ 1); returns losses (B,).
    """
    nll = -policy_chosen / chosen_lengths.clamp(min=1)
    losses = -F.logsigmoid(beta * (policy_chosen - policy_rejected)) + alpha * nll
    return losses, reward_metrics(beta, policy_chosen, policy_rejected) | {"nll": nll.detach()}


def _log_odds(mean_logp: torch.Tensor) -> torch.Tensor:
    """log(P / (1 − P)) for P = exp(A): A − log(1 − e^A), with A clamped to ≤ ORPO_MAX_MEAN_LOGP
    (log1mexp: each of its two branches sees only inputs where it is finite, so no NaN gradient)."""
    a = mean_logp.clamp(max=ORPO_MAX_MEAN_LOGP)
    return a - log1mexp(a)


@register_loss("orpo", needs_ref=False, logps="mean", data="paired",
               paper="Hong et al. 2024, ORPO: Monolithic Preference Optimization without Reference "
                     "Model, arXiv 2403.07691", equation="Eq. 6-7")
def orpo(
    policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
    *, lambda_: float = 0.1,
) -> LossOutput:
    """ORPO (Hong et al. 2024, Eq. 6-7): L = NLL(y_w) − λ · log σ(log odds(y_w) − log odds(y_l)).

    log odds(y) = A(y) − log(1 − exp(A(y))) with A the token-mean log-prob, computed stably; A is
    clamped to ≤ −1e-6 (``ORPO_MAX_MEAN_LOGP``) so A → 0⁻ and A = 0 stay finite (the odds term then
    has no gradient; the NLL term keeps its own). NLL(y_w) = −A(y_w) over **completion tokens only**
    (the paper's L_SFT and alignlab's convention); TRL computes ORPO's NLL over prompt + response
    tokens, so its loss differs by the prompt part. λ = ``lambda_`` is TRL's ``beta`` (default 0.1).
    Inputs (B,) token-mean log-probs; returns losses (B,).
    """
    log_odds = _log_odds(policy_chosen) - _log_odds(policy_rejected)
    ratio = F.logsigmoid(log_odds)
    nll = -policy_chosen
    metrics = reward_metrics(lambda_, policy_chosen, policy_rejected) | {
        "nll": nll.detach(), "log_odds_ratio": ratio.detach(), "log_odds_chosen": log_odds.detach()}
    return nll - lambda_ * ratio, metrics


def _log1p_sum_exp(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """log(1 + Σ exp(x)) over the valid entries of each row (all dims but the first); 0 if none."""
    x = x.masked_fill(~valid, float("-inf")).flatten(1)
    return torch.logsumexp(torch.cat([x.new_zeros(x.shape[0], 1), x], dim=1), dim=1)


@register_loss("aft", needs_ref=False, logps="mean", data="ranked", verified=False,
               paper="Wang et al. 2023, Making Large Language Models Better Reasoners with Alignment, "
                     "arXiv 2309.02144",
               equation="constraint alignment loss (§4; constraint forms unverified: not pinned "
                        "down by the paper's text)")
def aft(
    policy: torch.Tensor, scores: torch.Tensor, response_mask: torch.Tensor,
    *, constraint: str = "detached", tau: float = 1.0, boundary: float = 1.0,
) -> LossOutput:
    """AFT constraint alignment loss (Wang et al. 2023, §4). UNVERIFIED: the constraint equations are
    not pinned down by the paper's text as available (its abstract and a secondary summary; no author
    code was found), so these forms follow the secondary summary.

    s = ``policy`` (B, K), the token-mean log-likelihood of each of K sampled CoTs; ``scores`` (B, K)
    label them, higher is better (binary correctness 1/0, or ranks); ``response_mask`` (B, K) marks
    those that exist. Pairs p ≻ n are all present (p, n) with score_p > score_n (binary: positives ×
    negatives; ranked: every higher/lower pair, in one log rather than the per-anchor sum
    Σ_i log(1 + Σ_{j ranked below i} exp(s_j − s_i)) of the secondary summary).
    Alignment: L_A = log(1 + Σ_{p≻n} exp(s_n − s_p)). ``constraint`` keeps negatives from collapsing:
    - "none": L_A alone (what the paper argues degrades the model);
    - "detached" (default): L_A with the gradient through every s_n stopped, so only positives move;
    - "boundary": log(1 + Σ exp(max(s_n − s_p, −tau))), no push once a pair is τ apart (unverified);
    - "boundary_threshold": L_A + log(1 + Σ_n exp(T_n − s_n)), T_n = min_{p≻n} s_p − ``boundary``
      (the other unverified form; in the binary case T = worst positive − B; T is not detached).
    "detached" is the default: the sources agree on it (the boundary form exists in two conflicting
    versions) and it needs no hyperparameter whose paper value is unknown. Returns (B,); 0 where
    a prompt has no pair. L_AFT adds L_VFT, the ``nll`` loss on the gold CoT, as a separate term.
    """
    if constraint not in AFT_CONSTRAINTS:
        raise ValueError(f"aft: unknown constraint {constraint!r}; choose one of {AFT_CONSTRAINTS}")
    if not policy.shape == scores.shape == response_mask.shape or policy.dim() != 2:
        raise ValueError(f"aft: policy, scores and response_mask must all be (B, K), got "
                         f"{tuple(policy.shape)}, {tuple(scores.shape)}, {tuple(response_mask.shape)}")
    present = response_mask.bool()
    s = policy.masked_fill(~present, 0.0)  # missing responses' values never reach a pair
    pairs = (scores[:, :, None] > scores[:, None, :]) & present[:, :, None] & present[:, None, :]
    lower = s.detach() if constraint == "detached" else s
    gaps = lower[:, None, :] - s[:, :, None]  # (B, K, K): [b, p, n] = s_n − s_p
    if constraint == "boundary":
        gaps = gaps.clamp(min=-tau)
    alignment = _log1p_sum_exp(gaps, pairs)
    extra = torch.zeros_like(alignment)
    if constraint == "boundary_threshold":
        worst_above = s[:, :, None].masked_fill(~pairs, float("inf")).amin(dim=1)  # (B, K): T_n + B
        extra = _log1p_sum_exp(worst_above - boundary - s, pairs.any(dim=1))
    n_pairs = pairs.sum(dim=(1, 2))
    correct = ((s[:, :, None] > s[:, None, :]) & pairs).sum(dim=(1, 2))
    metrics = {"alignment_term": alignment.detach(), "constraint_term": extra.detach(),
               "pairs": n_pairs.float(), "pair_accuracy": correct.float() / n_pairs.clamp(min=1)}
    return alignment + extra, metrics
