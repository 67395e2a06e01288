"""Closed-form values and identities of KTO (Ethayarajh et al. 2024) and BCO (Jung et al. 2024,
arXiv 2404.04656).

Each test's docstring gives the derivation of the expected number.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from alignlab.errors import ConfigError
from alignlab.losses.unpaired import RunningMean, bco, kto, udm_weights
from alignlab.registry import LOSSES

LOG2 = math.log(2)


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def test_kto_is_half_lambda_at_init():
    """πθ = πref and the mismatched pairs agree too ⇒ ρ = 0, z0 = 0 ⇒ L = λ(1 − σ(0)) = λ/2."""
    policy = t(-12.0, -30.0, -7.0)
    labels = torch.tensor([True, False, True])
    losses, metrics = kto(policy, policy.clone(), labels, t(-5.0, -6.0, -9.0), t(-5.0, -6.0, -9.0),
                          desirable_weight=1.0, undesirable_weight=1.5)
    assert losses.tolist() == pytest.approx([0.5, 0.75, 0.5], abs=1e-12)
    assert metrics["kl"].item() == 0.0


def test_kto_closed_form():
    """β = 0.5, ρ = (2, −3), labels (desirable, undesirable), KL differences (1, 0) ⇒ z0 = 0.5.

    desirable: 1 − σ(0.5·(2 − 0.5)) = σ(−0.75); undesirable, λ_U = 2: 2·(1 − σ(0.5·(0.5 + 3)))
    = 2·σ(−1.75).
    """
    losses, metrics = kto(t(-10.0, -23.0), t(-12.0, -20.0), torch.tensor([True, False]),
                          t(-4.0, -8.0), t(-5.0, -8.0), beta=0.5, undesirable_weight=2.0)
    assert losses.tolist() == pytest.approx([sigmoid(-0.75), 2 * sigmoid(-1.75)], abs=1e-12)
    assert metrics["kl"].item() == pytest.approx(0.5, abs=1e-12)
    assert metrics["rewards"].tolist() == pytest.approx([1.0, -1.5], abs=1e-12)


def test_kto_z0_clamped_at_zero():
    """KL differences (−2, 0.5) have mean −0.75 < 0 ⇒ z0 = max(0, −0.75) = 0: with β = 1 and
    ρ = 1 (desirable) the loss is σ(−1), as with matched mismatched pairs."""
    losses, metrics = kto(t(-1.0, -1.0), t(-2.0, -2.0), torch.tensor([True, True]),
                          t(-7.0, -4.5), t(-5.0, -5.0), beta=1.0)
    assert metrics["kl"].item() == 0.0
    assert losses.tolist() == pytest.approx([sigmoid(-1.0)] * 2, abs=1e-12)


def test_kto_z0_is_detached_and_per_example_losses_stay_per_example():
    """z0 carries no gradient to kl_policy. ∂L/∂policy = −λβ σ'(β(ρ − z0)) < 0 for a desirable
    example and +λβ σ'(β(z0 − ρ)) > 0 for an undesirable one; example 0's policy does not enter
    example 1's loss (z0 is the only batch-level quantity, and it has no gradient)."""
    policy = t(-10.0, -23.0).requires_grad_(True)
    kl_policy = t(-4.0, -8.0).requires_grad_(True)
    losses, _ = kto(policy, t(-12.0, -20.0), torch.tensor([True, False]), kl_policy, t(-5.0, -8.0),
                    beta=0.5)
    (grad_first,) = torch.autograd.grad(losses[1], policy, retain_graph=True)
    assert grad_first[0].item() == 0.0
    losses.sum().backward()
    assert kl_policy.grad is None
    s = sigmoid(0.75)
    assert policy.grad[0].item() == pytest.approx(-0.5 * s * (1 - s), abs=1e-12)
    assert policy.grad[1].item() > 0


def test_kto_finite_for_extreme_and_bf16_inputs():
    """1 − σ(t) is written σ(−t): bounded in [0, λ] for log-probs ±1e4 and in bf16."""
    labels = torch.tensor([True, False])
    for dtype in (torch.float32, torch.bfloat16):
        big = torch.tensor([1e4, -1e4], dtype=dtype)
        losses, _ = kto(big, -big, labels, big, -big)
        assert bool(torch.isfinite(losses).all())
        assert bool(((losses >= 0) & (losses <= 1)).all())


def test_bco_is_log2_at_init():
    """r = βρ = 0 and δ = 0 ⇒ −log σ(0) = log 2 for both labels (weights 1)."""
    losses, metrics = bco(t(-5.0, -9.0), t(-5.0, -9.0), torch.tensor([True, False]),
                          torch.tensor(0.0), t(1.0, 1.0))
    assert losses.tolist() == pytest.approx([LOG2, LOG2], abs=1e-12)
    assert metrics["rewards"].tolist() == [0.0, 0.0]


def test_bco_closed_form_with_shift_and_weights():
    """β = 0.5, ρ = (2, −1) ⇒ r = (1, −0.5); δ = 0.3; weights (1, 2.5).

    desirable: −log σ(1 − 0.3) = log(1 + e^−0.7); undesirable: 2.5·(−log σ(−(−0.5 − 0.3)))
    = 2.5·log(1 + e^−0.8).
    """
    losses, metrics = bco(t(-10.0, -20.0), t(-12.0, -19.0), torch.tensor([True, False]),
                          torch.tensor(0.3, dtype=torch.float64), t(1.0, 2.5), beta=0.5)
    expected = [math.log1p(math.exp(-0.7)), 2.5 * math.log1p(math.exp(-0.8))]
    assert losses.tolist() == pytest.approx(expected, abs=1e-12)
    assert metrics["delta"].item() == pytest.approx(0.3)


def test_bco_split_pair_equals_bco_pair():
    """a pair split into (y_w, desirable) and (y_l, undesirable), δ = 0, weights 1: the
    two losses sum to TRL's bco_pair, −log σ(βρ_w) − log σ(−βρ_l). β = 0.5, ρ_w = 2, ρ_l = −1:
    log(1 + e^−1) + log(1 + e^−0.5)."""
    losses, _ = bco(t(-10.0, -20.0), t(-12.0, -19.0), torch.tensor([True, False]),
                    torch.tensor(0.0), t(1.0, 1.0), beta=0.5)
    bco_pair = -math.log(sigmoid(0.5 * 2)) - math.log(sigmoid(-0.5 * -1))
    assert losses.sum().item() == pytest.approx(bco_pair, abs=1e-12)


def test_bco_gradient_signs_and_delta_detached():
    """∂/∂policy of −log σ(r − δ) is −β σ(δ − r) < 0 (raise a desirable completion); of
    −log σ(δ − r) it is +β σ(r − δ) > 0 (lower an undesirable one); δ gets no gradient."""
    policy = t(-10.0, -20.0).requires_grad_(True)
    delta = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    losses, _ = bco(policy, t(-12.0, -19.0), torch.tensor([True, False]), delta, t(1.0, 1.0),
                    beta=0.5)
    losses.sum().backward()
    assert policy.grad[0].item() == pytest.approx(-0.5 * sigmoid(0.3 - 1.0), abs=1e-12)
    assert policy.grad[1].item() == pytest.approx(0.5 * sigmoid(-0.5 - 0.3), abs=1e-12)
    assert delta.grad is None


def test_running_mean_first_update_is_the_batch_mean():
    """mean 0, count 0, then one update ⇒ δ = mean of the batch rewards (numpy); a second
    batch gives the mean of all rewards seen, (n₁m₁ + n₂m₂)/(n₁ + n₂): numpy on the concatenation.
    """
    rng = np.random.default_rng(0)
    first, second = rng.normal(size=7), rng.normal(size=5)
    state = RunningMean()
    assert state.inputs()["delta"].item() == 0.0
    _, metrics = bco(torch.from_numpy(first), torch.zeros(7, dtype=torch.float64),
                     torch.ones(7, dtype=torch.bool), **state.inputs(),
                     example_weights=torch.ones(7, dtype=torch.float64), beta=1.0)
    state.update(metrics)
    assert state.inputs()["delta"].item() == pytest.approx(float(np.mean(first)), abs=1e-15)
    state.update({"rewards": torch.from_numpy(second)})
    assert state.inputs()["delta"].item() == pytest.approx(
        float(np.mean(np.concatenate([first, second]))), abs=1e-14)
    assert state.count == 12.0
    state.update({"rewards": torch.zeros(0)})  # an empty batch changes nothing
    assert state.count == 12.0


def test_running_mean_save_restore_round_trip():
    """state_dict is plain floats (JSON-safe); a restored state gives the same δ now and after
    the same further update, as a resumed run must."""
    state = RunningMean()
    state.update({"rewards": t(0.5, -1.25, 3.0)})
    restored = RunningMean()
    restored.load_state_dict(json.loads(json.dumps(state.state_dict())))
    assert restored.state_dict() == state.state_dict()
    for s in (state, restored):
        s.update({"rewards": t(2.0, 0.1)})
    assert restored.inputs()["delta"].item() == state.inputs()["delta"].item()
    assert LOSSES.get("bco").contract.state is RunningMean
    with pytest.raises(ConfigError, match="lacks"):
        RunningMean().load_state_dict({"mean": 1.0})


def test_udm_weights():
    """w = p/(1 − p + 1e-8) clamped to [0.5, 10]: p = 0.5 ⇒ 0.5/0.50000001 = 1 to 2e-8;
    p = 0.8 ⇒ 0.8/0.20000001 ≈ 4; p → 0 ⇒ 0.5 (floor); p → 1 ⇒ 1/1e-8, clamped to 10."""
    weights = udm_weights(t(0.5, 0.8, 0.0, 1e-9, 1.0, 1 - 1e-12))
    expected = [0.5 / (0.5 + 1e-8), 0.8 / (1 - 0.8 + 1e-8), 0.5, 0.5, 10.0, 10.0]
    assert weights.tolist() == pytest.approx(expected, abs=1e-12)
    assert weights[0].item() == pytest.approx(1.0, abs=3e-8)
    assert udm_weights(t(0.9), min_ratio=1.0, max_ratio=5.0).item() == 5.0


def test_bco_finite_for_extreme_and_bf16_inputs():
    """−log σ via logsigmoid: finite for rewards ±1e4·β and in bf16."""
    labels = torch.tensor([True, False])
    for dtype in (torch.float32, torch.bfloat16):
        big = torch.tensor([-1e4, 1e4], dtype=dtype)
        losses, _ = bco(big, -big, labels, torch.tensor(0.0), torch.ones(2, dtype=dtype), beta=1.0)
        assert bool(torch.isfinite(losses).all())
