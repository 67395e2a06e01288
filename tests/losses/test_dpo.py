"""Closed-form values and identities of the DPO family: DPO (Rafailov et al. 2023, arXiv 2305.18290)
and its TRL variants, IPO (Azar et al. 2023, arXiv 2310.12036), LN-DPO (Ahrabian et al. 2024, arXiv
2407.15229) and DPO^γ (Chen et al. 2024, arXiv 2405.19534, Eq. 4).

Each test's docstring gives the derivation of the expected number.
"""

from __future__ import annotations

import math

import pytest
import torch

from alignlab.losses.dpo import dpo, dpo_gamma, hinge, ipo, ipo_mean, ln_dpo, robust_dpo

LOG2 = math.log(2)


def pair(pc: float, pr: float, rc: float, rr: float) -> tuple[torch.Tensor, ...]:
    return tuple(torch.tensor([v], dtype=torch.float64) for v in (pc, pr, rc, rr))


def test_dpo_is_log2_at_init():
    """πθ = πref ⇒ every ρ = 0 ⇒ L = −log σ(0) = log 2, for any β."""
    for beta in (0.01, 0.1, 5.0):
        losses, metrics = dpo(*pair(-12.0, -30.0, -12.0, -30.0), beta=beta)
        assert losses.item() == pytest.approx(LOG2, abs=1e-12)
        assert metrics["rewards/margins"].item() == 0.0


def test_dpo_closed_form():
    """ρ_w = −10 − (−12) = 2, ρ_l = −20 − (−19) = −1, Δ = 3, β = 0.5: L = −log σ(1.5) = log(1 + e^−1.5)."""
    losses, metrics = dpo(*pair(-10.0, -20.0, -12.0, -19.0), beta=0.5)
    assert losses.item() == pytest.approx(math.log1p(math.exp(-1.5)), abs=1e-12)
    assert metrics["rewards/chosen"].item() == pytest.approx(1.0)
    assert metrics["rewards/rejected"].item() == pytest.approx(-0.5)
    assert metrics["rewards/accuracies"].item() == 1.0


def test_dpo_swap_and_gradient():
    """Swapping w and l gives −log σ(−z); ∂L/∂z = −σ(−z), so ∂L/∂(log πθ(y_w)) = −β σ(−z) < 0."""
    pc, pr, rc, rr = pair(-10.0, -20.0, -12.0, -19.0)
    pc.requires_grad_(True)
    losses, _ = dpo(pc, pr, rc, rr, beta=0.5)
    losses.sum().backward()
    z = 0.5 * 3.0
    assert pc.grad.item() == pytest.approx(-0.5 / (1 + math.exp(z)), abs=1e-12)
    swapped, _ = dpo(pr, pc.detach(), rr, rc, beta=0.5)
    assert swapped.item() == pytest.approx(math.log1p(math.exp(z)), abs=1e-12)


def test_cdpo_label_smoothing():
    """ε = 0.2, z = βΔ = 1.5: L = 0.8·log(1 + e^−1.5) + 0.2·log(1 + e^1.5)."""
    losses, _ = dpo(*pair(-10.0, -20.0, -12.0, -19.0), beta=0.5, label_smoothing=0.2)
    expected = 0.8 * math.log1p(math.exp(-1.5)) + 0.2 * math.log1p(math.exp(1.5))
    assert losses.item() == pytest.approx(expected, abs=1e-12)


def test_robust_dpo_closed_form_and_unbiasedness():
    """rDPO, ε = 0.1, z = 1.5: L = (0.9·ℓ(z) − 0.1·ℓ(−z))/0.8 with ℓ(z) = log(1 + e^−z).

    Unbiased: E over a flip with prob ε of rDPO equals the clean DPO loss:
    (1 − ε)·rDPO(z) + ε·rDPO(−z) = ℓ(z).
    """
    def ell(z: float) -> float:
        return math.log1p(math.exp(-z))

    losses, _ = robust_dpo(*pair(-10.0, -20.0, -12.0, -19.0), beta=0.5, label_smoothing=0.1)
    assert losses.item() == pytest.approx((0.9 * ell(1.5) - 0.1 * ell(-1.5)) / 0.8, abs=1e-12)
    flipped, _ = robust_dpo(*pair(-20.0, -10.0, -19.0, -12.0), beta=0.5, label_smoothing=0.1)
    assert (0.9 * losses + 0.1 * flipped).item() == pytest.approx(ell(1.5), abs=1e-12)
    with pytest.raises(ValueError, match="label_smoothing < 0.5"):
        robust_dpo(*pair(0, 0, 0, 0), label_smoothing=0.5)


def test_hinge():
    """Δ = 3: β = 0.5 ⇒ max(0, 1 − 1.5) = 0; β = 0.1 ⇒ 1 − 0.3 = 0.7."""
    assert hinge(*pair(-10.0, -20.0, -12.0, -19.0), beta=0.5)[0].item() == 0.0
    assert hinge(*pair(-10.0, -20.0, -12.0, -19.0), beta=0.1)[0].item() == pytest.approx(0.7)


def test_ipo_at_init_and_minimum():
    """At init Δ = 0 ⇒ L = (1/(2τ))² = 25 for τ = 0.1; the minimum 0 sits at Δ = 1/(2τ) = 5."""
    assert ipo(*pair(-5.0, -9.0, -5.0, -9.0), beta=0.1)[0].item() == pytest.approx(25.0)
    deltas = torch.linspace(0, 10, 101, dtype=torch.float64)
    zeros = torch.zeros_like(deltas)
    losses, _ = ipo(deltas, zeros, zeros, zeros, beta=0.1)
    assert deltas[losses.argmin()].item() == pytest.approx(5.0)
    assert losses.min().item() == pytest.approx(0.0, abs=1e-12)
    second = losses[2:] - 2 * losses[1:-1] + losses[:-2]
    assert bool((second > 0).all())  # convex in Δ


def test_ipo_mean_uses_token_means():
    """ipo_mean is Eq. 17 on mean log-ratios: inputs already divided by length give the same value."""
    assert ipo_mean(*pair(-1.0, -2.0, -1.5, -1.5), beta=0.5)[0].item() == pytest.approx((1.0 - 1.0) ** 2)


def test_ln_dpo_equals_dpo_with_beta_over_n_for_equal_lengths():
    """For |y_w| = |y_l| = n, ρ/n = (S_θ − S_ref)/n, so LN-DPO(β) on means = DPO(β/n) on sums."""
    n, beta = 7.0, 2.0
    sums = pair(-10.0, -20.0, -12.0, -19.0)
    means = tuple(t / n for t in sums)
    assert ln_dpo(*means, beta=beta)[0].item() == pytest.approx(dpo(*sums, beta=beta / n)[0].item(), abs=1e-12)
    assert ln_dpo(*pair(-3.0, -8.0, -3.0, -8.0))[0].item() == pytest.approx(LOG2, abs=1e-12)


def test_dpo_gamma_interpolates():
    """γ = 1 is DPO; γ = 0 ignores the reference: L = −log σ(β (S_w − S_l)) = −log σ(0.5·10)."""
    inputs = pair(-10.0, -20.0, -12.0, -19.0)
    assert dpo_gamma(*inputs, beta=0.5, gamma=1.0)[0].item() == pytest.approx(dpo(*inputs, beta=0.5)[0].item())
    assert dpo_gamma(*inputs, beta=0.5, gamma=0.0)[0].item() == pytest.approx(math.log1p(math.exp(-5.0)))
