"""Calibration of a model's implied preference probabilities σ(βΔ) against labels or rater shares.

Example: ``expected_calibration_error(preference_probabilities(pc, pr, rc, rr, 0.1), 1.0).ece``
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from alignlab.eval.ranking import MetricInputError, VectorLike, aligned, as_vector


@dataclass(frozen=True)
class Bin:
    lower: float
    """Lower edge (included)."""
    upper: float
    """Upper edge (excluded, except 1.0 for the last bin)."""
    count: int
    """Number of pairs whose probability falls in the bin."""
    mean_confidence: float | None
    """Mean predicted probability in the bin; None when the bin is empty."""
    mean_target: float | None
    """Mean target (label or rater share) in the bin; None when the bin is empty."""


@dataclass(frozen=True)
class Calibration:
    ece: float
    """Expected calibration error Σ_b (n_b/n)·|mean_confidence_b − mean_target_b|."""
    bins: list[Bin]
    """Every bin, empty ones included, lowest first (a reliability diagram)."""
    n: int = 0
    """Number of pairs."""
    brier: float = 0.0
    """Mean squared error (p − target)², a calibration-plus-sharpness score that needs no bins."""


def preference_probabilities(
    policy_chosen: VectorLike, policy_rejected: VectorLike,
    ref_chosen: VectorLike, ref_rejected: VectorLike, beta: float,
) -> torch.Tensor:
    """σ(βΔ), Δ = ρ(y_w) − ρ(y_l): the probability, under the model's implicit Bradley–Terry
    reward, that the chosen answer wins. Shape (P,), float64; exactly 0.5 where πθ = πref."""
    if not (beta > 0 and math.isfinite(beta)):
        raise MetricInputError(f"beta must be a positive finite number, got {beta}")
    pw, pl, rw, rl = aligned(policy_chosen=policy_chosen, policy_rejected=policy_rejected,
                             ref_chosen=ref_chosen, ref_rejected=ref_rejected)
    return torch.sigmoid(beta * ((pw - rw) - (pl - rl)))


def expected_calibration_error(
    probabilities: VectorLike, targets: VectorLike | float, bins: int = 10,
) -> Calibration:
    """Equal-width ECE of ``probabilities`` (P,) in [0, 1] against ``targets`` in [0, 1].

    Targets are labels (1 if the chosen answer won: for ordinary preference data every target is
    1, and a scalar 1.0 may be passed) or rater shares α (the fraction of raters who preferred the
    chosen answer), which is what a calibrated σ(βΔ) should match. Bin b covers [b/B, (b+1)/B),
    the last one closed at 1.
    """
    if not isinstance(bins, int) or bins < 1:
        raise MetricInputError(f"bins must be a positive integer, got {bins!r}")
    probs = as_vector(probabilities, "probabilities")
    target = torch.as_tensor(targets, dtype=torch.float64)
    if target.dim() == 0:
        target = target.expand(len(probs))
    probs, target = aligned(probabilities=probs, targets=target)
    for name, values in (("probabilities", probs), ("targets", target)):
        if ((values < 0) | (values > 1)).any():
            raise MetricInputError(f"{name} must lie in [0, 1]; pass σ(βΔ) "
                                   "(preference_probabilities) and labels 0/1 or rater shares")
    index = (probs * bins).floor().long().clamp(max=bins - 1)  # (P,)
    n = len(probs)
    table, ece = [], 0.0
    for b in range(bins):
        members = index == b
        count = int(members.sum())
        confidence = probs[members].mean().item() if count else None
        mean_target = target[members].mean().item() if count else None
        if count:
            ece += count / n * abs(confidence - mean_target)
        table.append(Bin(b / bins, (b + 1) / bins, count, confidence, mean_target))
    brier = ((probs - target) ** 2).mean().item()
    return Calibration(ece, table, n, brier)
