"""DPO and its closest variants: paired, reference-based, Bradley–Terry on log-ratio margins.

Example: ``losses, metrics = dpo(pc, pr, rc, rr, beta=0.1)`` with each input of shape (B,)

Notation: ρ(y) = log πθ(y|x) − log πref(y|x) over the completion tokens only (prompt and padding
masked out), summed unless the contract says logps="mean"; Δ = ρ(y_w) − ρ(y_l), w chosen, l rejected.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from alignlab.losses.contract import LossOutput, register_loss

DPO_PAPER = "Rafailov et al. 2023, Direct Preference Optimization, arXiv 2305.18290"


def reward_metrics(beta: float, chosen_ratio: torch.Tensor, rejected_ratio: torch.Tensor) -> dict[str, torch.Tensor]:
    """What peers log (implicit rewards β·ρ), per example and detached, for the trainer to reduce."""
    chosen, rejected = (beta * chosen_ratio).detach(), (beta * rejected_ratio).detach()
    return {"rewards/chosen": chosen, "rewards/rejected": rejected, "rewards/margins": chosen - rejected,
            "rewards/accuracies": (chosen > rejected).float()}


@register_loss("dpo", needs_ref=True, logps="sum", data="paired", paper=DPO_PAPER, equation="Eq. 7")
def dpo(
    policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
    *, beta: float = 0.1, label_smoothing: float = 0.0,
) -> LossOutput:
    """DPO (Rafailov et al. 2023, Eq. 7): L = −log σ(β Δ), Δ = ρ(y_w) − ρ(y_l), summed log-probs.

    ``label_smoothing`` ε > 0 gives conservative DPO (cDPO, Mitchell 2023, as TRL's "sigmoid"):
    L = −(1 − ε) log σ(βΔ) − ε log σ(−βΔ). Inputs (B,); returns losses (B,).
    """
    chosen_ratio, rejected_ratio = policy_chosen - ref_chosen, policy_rejected - ref_rejected
    z = beta * (chosen_ratio - rejected_ratio)
    losses = -(1 - label_smoothing) * F.logsigmoid(z) - label_smoothing * F.logsigmoid(-z)
    return losses, reward_metrics(beta, chosen_ratio, rejected_ratio)


@register_loss("robust_dpo", needs_ref=True, logps="sum", data="paired",
               paper="Chowdhury et al. 2024, Provably Robust DPO, arXiv 2403.00409", equation="Eq. 7")
def robust_dpo(
    policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
    *, beta: float = 0.1, label_smoothing: float = 0.1,
) -> LossOutput:
    """rDPO (Chowdhury et al. 2024, Eq. 7): unbiased under label flips with rate ε < 1/2.

    L = [(1 − ε)·(−log σ(βΔ)) − ε·(−log σ(−βΔ))] / (1 − 2ε). Inputs (B,); returns losses (B,).
    """
    if not 0 <= label_smoothing < 0.5:
        raise ValueError(f"robust_dpo needs 0 <= label_smoothing < 0.5, got {label_smoothing}")
    chosen_ratio, rejected_ratio = policy_chosen - ref_chosen, policy_rejected - ref_rejected
    z = beta * (chosen_ratio - rejected_ratio)
    losses = (-(1 - label_smoothing) * F.logsigmoid(z) + label_smoothing * F.logsigmoid(-z)) / (1 - 2 * label_smoothing)
    return losses, reward_metrics(beta, chosen_ratio, rejected_ratio)


@register_loss("hinge", needs_ref=True, logps="sum", data="paired",
               paper="Zhao et al. 2023, SLiC-HF (arXiv 2305.10425), in the form of Liu et al. 2023, "
                     "RSO (arXiv 2309.06657)",
               equation="RSO Eq. 10 (hinge on the normalised likelihood margin)")
def hinge(
    policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
    *, beta: float = 0.1,
) -> LossOutput:
    """SLiC-HF hinge (Zhao et al. 2023) in RSO's normalised form (Liu et al. 2023, Eq. 10):

    L = max(0, 1 − βΔ), Δ the log-ratio margin (TRL's loss_type="hinge"). Inputs (B,); returns (B,).
    """
    chosen_ratio, rejected_ratio = policy_chosen - ref_chosen, policy_rejected - ref_rejected
    losses = torch.relu(1 - beta * (chosen_ratio - rejected_ratio))
    return losses, reward_metrics(beta, chosen_ratio, rejected_ratio)


@register_loss("ipo", needs_ref=True, logps="sum", data="paired",
               paper="Azar et al. 2023, A General Theoretical Paradigm to Understand Learning from "
                     "Human Preferences, arXiv 2310.12036", equation="Eq. 17")
def ipo(
    policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
    *, beta: float = 0.1,
) -> LossOutput:
    """IPO, the paper's form (Azar et al. 2023, Eq. 17): L = (Δ − 1/(2τ))², τ = ``beta``.

    Δ from **summed** log-probs. TRL's length-normalised form is ``ipo_mean`` (same equation on
    per-token means). Inputs (B,); returns losses (B,).
    """
    chosen_ratio, rejected_ratio = policy_chosen - ref_chosen, policy_rejected - ref_rejected
    losses = (chosen_ratio - rejected_ratio - 1 / (2 * beta)) ** 2
    return losses, reward_metrics(beta, chosen_ratio, rejected_ratio)


@register_loss("ipo_mean", needs_ref=True, logps="mean", data="paired",
               paper="Azar et al. 2023, arXiv 2310.12036, length-normalised as TRL's loss_type='ipo'",
               equation="Eq. 17 on per-token mean log-ratios")
def ipo_mean(
    policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
    *, beta: float = 0.1,
) -> LossOutput:
    """IPO (Azar et al. 2023, Eq. 17) on per-token mean log-probs, TRL's form ("confirmed with the
    IPO authors"):

    L = (ρ̄(y_w) − ρ̄(y_l) − 1/(2τ))², ρ̄ = ρ/|y|. Inputs are token-mean log-probs (B,).
    """
    chosen_ratio, rejected_ratio = policy_chosen - ref_chosen, policy_rejected - ref_rejected
    losses = (chosen_ratio - rejected_ratio - 1 / (2 * beta)) ** 2
    return losses, reward_metrics(beta, chosen_ratio, rejected_ratio)


@register_loss("ln_dpo", needs_ref=True, logps="mean", data="paired",
               paper="Ahrabian et al. 2024, The Hitchhiker's Guide to Human Alignment with *PO, "
                     "arXiv 2407.15229", equation="LN-DPO objective (§3; TRL loss_type='sigmoid_norm')")
def ln_dpo(
    policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
    *, beta: float = 1.0,
) -> LossOutput:
    """LN-DPO (Ahrabian et al. 2024): L = −log σ(β [ρ(y_w)/|y_w| − ρ(y_l)/|y_l|]).

    With token-mean log-probs (contract logps="mean"), ρ/|y| is the difference of the inputs.
    Margins are ~|y| times smaller than DPO's, so β is larger (sweep 0.5–10; default 1.0 is ours,
    the paper's grid is unverified). Inputs (B,); returns losses (B,).
    """
    chosen_ratio, rejected_ratio = policy_chosen - ref_chosen, policy_rejected - ref_rejected
    losses = -F.logsigmoid(beta * (chosen_ratio - rejected_ratio))
    return losses, reward_metrics(beta, chosen_ratio, rejected_ratio)


@register_loss("dpo_gamma", needs_ref=True, logps="sum", data="paired",
               paper="Chen et al. 2024, Preference Learning Algorithms Do Not Learn Preference "
                     "Rankings, arXiv 2405.19534", equation="Eq. 4 (code: alpha_scaling)")
def dpo_gamma(
    policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
    *, beta: float = 0.1, gamma: float = 1.0,
) -> LossOutput:
    """DPO^γ, reference attenuation (Chen et al. 2024, Eq. 4):

    L = −log σ(β [log πθ(y_w)/πθ(y_l) + γ · log πref(y_l)/πref(y_w)]); γ = 1 is DPO, γ = 0 drops
    the reference. Inputs (B,); returns losses (B,).
    """
    z = beta * ((policy_chosen - policy_rejected) + gamma * (ref_rejected - ref_chosen))
    return -F.logsigmoid(z), reward_metrics(beta, policy_chosen - ref_chosen, policy_rejected - ref_rejected)
