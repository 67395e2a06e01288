"""Losses on one completion per example: SFT (NLL, PoFT) and unlearning (gradient ascent, NPO).

Example: ``losses, metrics = nll(policy_tokens, mask)`` with inputs (B, T)

Notation: S(y) = summed completion log-prob (prompt and padding masked out), A(y) = S(y)/|y| its
per-token mean, |y| the number of completion tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from alignlab.losses.contract import LossOutput, register_loss


@register_loss("nll", needs_ref=False, logps="token", data="sft",
               paper="Ouyang et al. 2022, Training language models to follow instructions with human "
                     "feedback, arXiv 2203.02155 (maximum likelihood, its SFT stage)",
               equation="token-mean cross-entropy")
def nll(policy_tokens: torch.Tensor, mask: torch.Tensor) -> LossOutput:
    """Per-example token-mean NLL, the SFT stage of Ouyang et al. 2022:

    L = −Σ_t m_t log pθ(y_t | x, y_<t) / Σ_t m_t.

    Completion tokens only (``mask``); values off the mask are ignored. Each example is its own
    token mean, so the trainer's batch mean weighs examples equally (TRL's SFT divides by all tokens
    of the batch, weighing long examples more). An example with no tokens gets 0.
    Inputs (B, T); returns losses (B,).
    """
    mask = mask.bool()
    tokens = mask.sum(dim=-1)
    losses = -torch.where(mask, policy_tokens, 0.0).sum(dim=-1) / tokens.clamp(min=1)
    return losses, {"completion_tokens": tokens.float()}  # not "tokens": the loop logs the step's own count


@register_loss("poft", needs_ref=False, logps="mean", data="sft",
               paper="Fan et al. 2025 (AAAI), Preference-Oriented Supervised Fine-Tuning: Favoring "
                     "Target Model over Aligned LLMs", equation="L_PoFT (§3)")
def poft(policy: torch.Tensor, aligned_scores: torch.Tensor) -> LossOutput:
    """PoFT (Fan et al. 2025, §3): L = −log σ(r_θ − r̄), r̄ = (1/M) Σ_j r_j.

    r_θ = ``policy`` (B,), the target model's token-mean log-likelihood of y; ``aligned_scores``
    (B, M) are the frozen aligned LLMs' r_j, each length-normalised with its own tokenizer. No β.
    The gradient is σ(r̄ − r_θ) times the CE gradient (metric ``weight``). Returns losses (B,).
    """
    margin = policy - aligned_scores.mean(dim=-1)
    losses = -F.logsigmoid(margin)
    return losses, {"weight": torch.sigmoid(-margin).detach(), "margin": margin.detach()}


@register_loss("gradient_ascent", needs_ref=False, logps="mean", data="sft",
               paper="Jang et al. 2023, Knowledge Unlearning for Mitigating Privacy Risks in Language "
                     "Models, arXiv 2210.01504; Yao et al. 2023, Large Language Model Unlearning, "
                     "arXiv 2310.10683", equation="negated NLL on the forget set (Yao et al.'s forget term)")
def gradient_ascent(policy: torch.Tensor) -> LossOutput:
    """Gradient ascent on the forget set (Jang et al. 2023; Yao et al. 2023):

    L = +A(y) = −NLL(y), A the token-mean log-prob.

    Minimising it raises the NLL of the forget set, without bound. Only the forget term: Yao et
    al.'s full objective also has a random-completion term and a KL term on normal data, which a
    trainer adds separately. Input ``policy`` (B,); returns losses (B,).
    """
    return policy.clone(), {"nll": (-policy).detach()}


@register_loss("npo", needs_ref=True, logps="sum", data="sft",
               paper="Zhang et al. 2024, Negative Preference Optimization: From Catastrophic Collapse "
                     "to Effective Unlearning, arXiv 2404.05868", equation="Eq. 3")
def npo(policy: torch.Tensor, ref: torch.Tensor, *, beta: float = 0.1) -> LossOutput:
    """NPO (Zhang et al. 2024, Eq. 3): L = (2/β) log(1 + (πθ/πref)^β) = −(2/β) log σ(−β ρ).

    ρ = S_θ(y) − S_ref(y) on the forget completion, summed log-probs. At init L = (2/β) log 2;
    ∂L/∂S_θ = 2σ(βρ) (metric ``weight``), which → 1 as β → 0: gradient ascent on summed log-probs.
    Inputs (B,); returns losses (B,).
    """
    if beta <= 0:
        raise ValueError(f"npo needs beta > 0 (it divides by beta), got {beta}")
    log_ratio = policy - ref
    losses = -(2 / beta) * F.logsigmoid(-beta * log_ratio)
    return losses, {"log_ratio": log_ratio.detach(), "weight": 2 * torch.sigmoid(beta * log_ratio).detach()}
