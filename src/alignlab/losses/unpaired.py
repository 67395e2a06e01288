"""Losses for unpaired binary feedback (x, y, desirable?): KTO, and BCO with its running shift δ.

Example: ``losses, metrics = kto(policy, ref, labels, kl_policy, kl_ref, beta=0.1)``, inputs (B,)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from alignlab.errors import ConfigError
from alignlab.losses.contract import LossOutput, register_loss

BCO_PAPER = ("Jung et al. 2024, Binary Classifier Optimization for Large Language Model Alignment, "
             "arXiv 2404.04656")


@register_loss("kto", needs_ref=True, logps="sum", data="unpaired",
               paper="Ethayarajh et al. 2024, KTO: Model Alignment as Prospect Theoretic "
                     "Optimization, arXiv 2402.01306", equation="Eq. 8")
def kto(
    policy: torch.Tensor, ref: torch.Tensor, labels: torch.Tensor,
    kl_policy: torch.Tensor, kl_ref: torch.Tensor,
    *, beta: float = 0.1, desirable_weight: float = 1.0, undesirable_weight: float = 1.0,
) -> LossOutput:
    """KTO (Ethayarajh et al. 2024, Eq. 8), summed log-probs, inputs (B,), returns losses (B,):

    z0 = max(0, mean_j [kl_policy_j − kl_ref_j])            (detached: no gradient)
    desirable:   L = λ_D · (1 − σ(β (ρ(y) − z0)))
    undesirable: L = λ_U · (1 − σ(β (z0 − ρ(y))))

    ρ(y) = policy − ref; kl_* are log-probs of *mismatched* completions (TRL pairs item j with
    the completion of item j − 1). z0 is the one batch-level quantity of any alignlab loss: it
    is a statistic of the whole batch, so each example's loss depends on the others only through
    this constant, never through a gradient; the losses themselves stay per example and the
    trainer reduces them. TRL averages z0 over all processes before clamping; here it is the mean
    over this batch (a batch of one makes z0 the example's own reward: use B > 1). TRL warns
    unless λ_D·n_D / (λ_U·n_U) lies in [1, 4/3]. Metrics: ``kl`` (z0) and ``rewards`` (βρ).
    """
    z0 = (kl_policy - kl_ref).mean().clamp(min=0).detach()
    ratio = policy - ref
    # 1 − σ(t) = σ(−t): bounded in [0, 1], finite for any input.
    desirable = desirable_weight * torch.sigmoid(-beta * (ratio - z0))
    undesirable = undesirable_weight * torch.sigmoid(-beta * (z0 - ratio))
    losses = torch.where(labels.bool(), desirable, undesirable)
    return losses, {"kl": z0, "rewards": (beta * ratio).detach()}


class RunningMean:
    """BCO's reward shift δ: the running mean of every implicit reward seen in training.

    Mean and count are merged per update with the parallel (Chan/Welford) rule, as TRL's
    ``RunningMoments``: mean ← mean + (m_batch − mean)·n/(count + n). It starts at mean 0 and
    count 0, so the first update sets δ to the batch mean exactly. Only the mean is kept (TRL
    also tracks a variance that BCO never reads).
    """

    def __init__(self) -> None:
        self.mean = 0.0
        self.count = 0.0

    def inputs(self) -> dict[str, torch.Tensor]:
        return {"delta": torch.tensor(self.mean, dtype=torch.float64)}

    def update(self, metrics: Mapping[str, torch.Tensor]) -> None:
        rewards = metrics["rewards"].detach().double().flatten()
        if rewards.numel() == 0:
            return
        n = float(rewards.numel())
        total = self.count + n
        self.mean += (rewards.mean().item() - self.mean) * (n / total)
        self.count = total

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "count": self.count}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        missing = {"mean", "count"} - set(state)
        if missing:
            raise ConfigError(f"BCO running-mean state lacks {sorted(missing)} (got "
                              f"{sorted(state)}); resume from a checkpoint written by the bco loss")
        self.mean, self.count = float(state["mean"]), float(state["count"])


@register_loss("bco", needs_ref=True, logps="sum", data="unpaired", paper=BCO_PAPER,
               equation="reward-shifted BCE: −log σ(βρ − δ) / −log σ(−(βρ − δ)) "
                        "(code: TRL experimental BCOTrainer.bco_loss)",
               state=RunningMean)
def bco(
    policy: torch.Tensor, ref: torch.Tensor, labels: torch.Tensor,
    delta: torch.Tensor, example_weights: torch.Tensor,
    *, beta: float = 0.1,
) -> LossOutput:
    """BCO (Jung et al. 2024): a binary classifier whose logit is the implicit reward r = βρ.

    desirable:   L = w · (−log σ(r − δ))
    undesirable: L = w · (−log σ(−(r − δ)))

    ρ = policy − ref (summed log-probs), inputs (B,), returns losses (B,). δ () is the running
    mean of rewards held by :class:`RunningMean` (detached); ``example_weights`` w (B,) are UDM
    density ratios (:func:`udm_weights`), 1 where UDM is off. β = 0.1 is TRL's BCOConfig default
    (the paper's pairwise runs used 0.01). TRL updates δ with the current batch *before* using it;
    the alignlab trainer updates the state after the step, so δ lags by one batch (δ = 0 on the
    very first step). Metrics: ``rewards`` (βρ per example, what the state averages), ``delta``.
    """
    rewards = beta * (policy - ref)
    delta = torch.as_tensor(delta, dtype=rewards.dtype, device=rewards.device).detach()
    shifted = rewards - delta
    losses = torch.where(labels.bool(), -F.logsigmoid(shifted), -F.logsigmoid(-shifted))
    return losses * example_weights, {"rewards": rewards.detach(), "delta": delta}


def udm_weights(p_desirable: torch.Tensor, min_ratio: float = 0.5,
                max_ratio: float = 10.0) -> torch.Tensor:
    """BCO's underlying distribution matching (UDM) weight of undesirable examples:

    w = clamp(p / (1 − p + 1e-8), min_ratio, max_ratio), p = P(desirable | prompt) from a classifier
    of prompt embeddings, as TRL's ``BCOTrainer._get_udm_weight``. The density ratio re-weights
    undesirable prompts toward the desirable prompt distribution. Desirable examples keep weight
    1: the caller sets that, since this function does not see the labels.
    """
    return (p_desirable / (1 - p_desirable + 1e-8)).clamp(min=min_ratio, max=max_ratio)
