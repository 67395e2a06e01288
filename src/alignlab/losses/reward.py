"""Losses for training reward models: Bradley–Terry on preference pairs, BCE on process steps.

Example: ``losses, metrics = bradley_terry(chosen_rewards, rejected_rewards, margin)``, inputs (B,)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from alignlab.errors import ConfigError
from alignlab.losses.contract import LossOutput, register_loss


@register_loss("bradley_terry", needs_ref=False, logps="none", data="reward",
               paper="Ouyang et al. 2022, Training language models to follow instructions with "
                     "human feedback, arXiv 2203.02155 (margin: Touvron et al. 2023, Llama 2, "
                     "arXiv 2307.09288; centring: Eisenstein et al. 2023, arXiv 2312.09244)",
               equation="Eq. 1 (code: TRL RewardTrainer.compute_loss)")
def bradley_terry(
    chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, margin: torch.Tensor,
    *, center_coefficient: float = 0.0,
) -> LossOutput:
    """Bradley–Terry reward-model loss (Ouyang et al. 2022, Eq. 1), in the form of TRL's
    RewardTrainer. Inputs (B,); returns losses (B,):

    L = −log σ(r_c − r_r − m) + c · (r_c + r_r)²

    m is the per-pair required margin (Llama 2, Eq. 2; 0 where the data has none). The second
    term (TRL ``center_rewards_coefficient``, default off) pulls rewards toward mean zero; TRL
    adds c·mean((r_c + r_r)²) to the batch-mean loss, which is exactly the trainer's mean of
    this per-example form. Metrics: ``accuracy`` (r_c > r_r), ``margin`` (r_c − r_r).
    """
    difference = chosen_rewards - rejected_rewards
    losses = -F.logsigmoid(difference - margin)
    if center_coefficient:
        losses = losses + center_coefficient * (chosen_rewards + rejected_rewards) ** 2
    return losses, {"accuracy": (difference > 0).to(difference.dtype).detach(),
                    "margin": difference.detach()}


class StepCount:
    """The optimizer steps taken, for a loss that warms a term up (checkpointed with the run)."""

    def __init__(self) -> None:
        self.steps = 0

    def inputs(self) -> dict[str, torch.Tensor]:
        return {"train_step": torch.tensor(float(self.steps), dtype=torch.float64)}

    def update(self, metrics: Mapping[str, torch.Tensor]) -> None:
        self.steps += 1

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if "steps" not in state:
            raise ConfigError(f"step-count state lacks 'steps' (got {sorted(state)}); resume from a "
                              "checkpoint written by the same loss")
        self.steps = int(state["steps"])


@register_loss("bradley_terry_confidence", needs_ref=False, logps="none", data="reward",
               paper="Burns et al. 2023, Weak-to-Strong Generalization: Eliciting Strong Capabilities "
                     "with Weak Supervision, arXiv 2312.09390 (the auxiliary confidence loss)",
               equation="L = CE(f(x), (1 − α) f_w(x) + α t̂(f(x))), pairwise form (code: openai/"
                        "weak-to-strong loss.py logconf_loss_fn)",
               verified=False, state=StepCount)
def bradley_terry_confidence(
    chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, margin: torch.Tensor,
    train_step: torch.Tensor, *, aux_coef: float = 0.5, warmup_steps: int = 20,
) -> LossOutput:
    """Bradley–Terry on weak labels with Burns et al.'s auxiliary confidence term: the student is
    trained toward a mix of the weak label and its own hardened prediction, so it may keep a
    confident disagreement with its supervisor instead of imitating its mistakes.

    d = r_c − r_r − m (chosen = the weak label's pick), p = σ(d), t̂ = 1[d > 0] (detached),
    t = (1 − α) · 1 + α · t̂,   L = −[t log σ(d) + (1 − t) log σ(−d)],
    α = aux_coef · min(1, step / warmup_steps) (0 steps: α = aux_coef from the start).

    The authors' code hardens a binary classifier's predictions at the batch quantile that
    matches the label balance. A preference pair has no fixed orientation: over both orientations
    of every pair the labels balance at ½ and the predicted probabilities are symmetric around ½,
    so the quantile is ½ and t̂ is the student's own preference, as above. The defaults are that
    code's (α_max 0.5, a linear warm-up; it warms over the first 10% of training, here a number
    of steps). **Unverified**: this pairwise reading is ours, not the paper's. Metrics:
    ``accuracy`` (d > 0: agreement with the weak label), ``margin`` (d), ``aux_coef`` (α).
    """
    difference = chosen_rewards - rejected_rewards - margin
    warm = 1.0 if warmup_steps <= 0 else min(1.0, float(train_step) / warmup_steps)
    alpha = aux_coef * warm
    hardened = (difference > 0).to(difference.dtype).detach()
    target = (1 - alpha) + alpha * hardened
    losses = -(target * F.logsigmoid(difference) + (1 - target) * F.logsigmoid(-difference))
    return losses, {"accuracy": hardened, "margin": difference.detach(),
                    "aux_coef": torch.full_like(difference, alpha).detach()}


@register_loss("prm_bce", needs_ref=False, logps="none", data="prm",
               paper="Lightman et al. 2023, Let's Verify Step by Step, arXiv 2305.20050; "
                     "Sun et al. 2024, Easy-to-Hard Generalization, arXiv 2403.09472",
               equation="step-level BCE with logits (code: Edward-Sun/easy-to-hard "
                        "train_rm_pointwise.py)")
def prm_bce(
    step_logits: torch.Tensor, step_labels: torch.Tensor, step_mask: torch.Tensor,
) -> LossOutput:
    """Process reward model (Lightman et al. 2023; Sun et al. 2024): binary cross-entropy of each
    step's logit against its label.

    loss_b = (1/n_b) Σ_s mask_bs · BCE(z_bs, y_bs), BCE(z, y) = softplus(z) − y·z,
    n_b = Σ_s mask_bs.
    Inputs (B, S): logits, labels in [0, 1] (soft labels allowed), mask. Returns losses (B,).
    Sun et al. take the mean over every labelled position of the batch (pooled); this per-example
    mean equals it when all examples have the same number of steps. An example without steps has
    loss 0 rather than 0/0: it carries no label to learn from, and a NaN would poison the batch.
    Metrics: ``accuracy`` (share of steps with (z > 0) = (y ≥ 0.5)), ``steps`` (n_b).
    """
    mask = step_mask.bool()
    steps = mask.sum(-1)  # (B,)
    # Absent steps may hold junk logits or ignore-index labels (TRL's −100): zero both before the
    # BCE, so that nothing of theirs reaches the loss or (as NaN) the gradient.
    logits = torch.where(mask, step_logits, 0)
    labels = torch.where(mask, step_labels, 0).to(logits.dtype)
    bce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")  # (B, S)
    losses = torch.where(mask, bce, 0).sum(-1) / steps.clamp(min=1)
    correct = mask & ((logits > 0) == (labels >= 0.5))
    accuracy = correct.sum(-1).to(logits.dtype) / steps.clamp(min=1)
    return losses, {"accuracy": accuracy.detach(), "steps": steps.to(logits.dtype)}
