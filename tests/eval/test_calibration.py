"""Calibration of σ(βΔ) against labels and rater shares (TRL, OpenRLHF, LLaMA-Factory and torchtune
log the implicit-reward accuracy only, never its calibration).

Each test's docstring gives the derivation of the expected number.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict

import pytest
import torch

from alignlab.eval.calibration import expected_calibration_error, preference_probabilities
from alignlab.eval.ranking import MetricInputError


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_preference_probabilities_closed_form():
    """ρ_w = 2, ρ_l = −1 ⇒ Δ = 3, β = 0.5 ⇒ σ(1.5); πθ = πref (second pair) ⇒ σ(0) = 0.5."""
    probs = preference_probabilities(t(-10, -4), t(-20, -6), t(-12, -4), t(-19, -6), beta=0.5)
    assert probs.dtype == torch.float64
    assert probs.tolist() == pytest.approx([1 / (1 + math.exp(-1.5)), 0.5], abs=1e-15)


def test_perfectly_calibrated_bins_have_zero_ece():
    """Four pairs at p = 0.25 with one win (target mean 0.25) and four at p = 0.75 with three
    wins (0.75): every bin's |confidence − target| is 0, so ECE = 0."""
    probs = [0.25] * 4 + [0.75] * 4
    targets = [1, 0, 0, 0] + [1, 1, 1, 0]
    result = expected_calibration_error(probs, targets)
    assert result.ece == 0.0 and result.n == 8
    assert [b.count for b in result.bins] == [0, 0, 4, 0, 0, 0, 0, 4, 0, 0]
    assert result.bins[2].mean_confidence == 0.25 and result.bins[2].mean_target == 0.25
    assert result.bins[0].mean_confidence is None
    assert result.brier == pytest.approx(3 / 16, abs=1e-15)  # each pair: 0.75² once, 0.25² thrice
    json.dumps(asdict(result))


def test_two_bin_ece_by_hand():
    """bins = 2, p = [0.2, 0.4 | 0.6, 0.9], targets [0, 1 | 1, 1].

    Bin [0, 0.5): confidence 0.3, target 0.5, weight 2/4 ⇒ 0.5·0.2 = 0.1.
    Bin [0.5, 1]: confidence 0.75, target 1, weight 2/4 ⇒ 0.5·0.25 = 0.125. ECE = 0.225.
    """
    result = expected_calibration_error(t(0.2, 0.4, 0.6, 0.9), t(0, 1, 1, 1), bins=2)
    assert result.ece == pytest.approx(0.225, abs=1e-15)
    assert [(b.lower, b.upper, b.count) for b in result.bins] == [(0.0, 0.5, 2), (0.5, 1.0, 2)]
    assert result.bins[1].mean_confidence == pytest.approx(0.75, abs=1e-15)


def test_edges_and_rater_shares():
    """p = 1 belongs to the last bin and p = 0 to the first. A model equal to its reference says
    0.5 everywhere: against labels (all 1, passed as a scalar) ECE = 0.5; against rater shares
    α = [0.5, 0.7, 0.9] (mean 0.7) ECE = |0.5 − 0.7| = 0.2."""
    edges = expected_calibration_error([0.0, 1.0], [0.0, 1.0], bins=4)
    assert [b.count for b in edges.bins] == [1, 0, 0, 1] and edges.ece == 0.0
    logps = t(-3, -8, -2)
    probs = preference_probabilities(logps, logps - 1, logps, logps - 1, beta=0.1)
    assert expected_calibration_error(probs, 1.0).ece == 0.5
    shares = expected_calibration_error(probs, [0.5, 0.7, 0.9])
    assert shares.ece == pytest.approx(0.2, abs=1e-15)


def test_calibration_errors():
    with pytest.raises(MetricInputError, match=r"probabilities must lie in \[0, 1\]"):
        expected_calibration_error([1.2], [1.0])
    with pytest.raises(MetricInputError, match="targets"):
        expected_calibration_error([0.5], [2.0])
    with pytest.raises(MetricInputError, match="bins"):
        expected_calibration_error([0.5], [1.0], bins=0)
    with pytest.raises(MetricInputError, match="lengths differ"):
        expected_calibration_error([0.5, 0.2], [1.0, 0.0, 1.0])
