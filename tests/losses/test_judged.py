"""Closed-form values and identities of CUT (Xu et al. 2023, Reasons to Reject? Aligning Language
Models with Judgments, arXiv 2312.14591).

Each test's docstring gives the derivation of the expected number. Per-token log-probs are given
as log of probabilities chosen by hand; masked positions hold junk that must not matter.
"""

from __future__ import annotations

import math

import pytest
import torch

from alignlab.losses.judged import cut

L = math.log


def logs(*rows: list[float]) -> torch.Tensor:
    """Rows of probabilities → (B, T) float64 log-probs."""
    return torch.tensor(rows, dtype=torch.float64).log()


def test_equal_contexts_give_the_mean_of_the_two_nlls():
    """p^A = p^B ⇒ ratio 1 ≤ λ = 1.1 ⇒ no unlikely token; every ℓ_t = −log p^B_t, so
    ul = NLL_B and L = (NLL_A + NLL_B)/2 with NLL = token mean over the 3 unmasked tokens:
    (−log 0.5 − log 0.25 − log 0.8)/3 (the fourth position is masked)."""
    probs = [0.5, 0.25, 0.8, 0.999]
    mask = torch.tensor([[True, True, True, False]])
    losses, metrics = cut(logs(probs), logs(probs), mask, torch.tensor([True]))
    nll = -(L(0.5) + L(0.25) + L(0.8)) / 3
    assert losses.item() == pytest.approx((nll + nll) / 2, abs=1e-12)
    assert metrics["unlikely_fraction"].item() == 0.0


def test_unlikely_token_value_and_gradient():
    """token 1 has p^A = 0.9, p^B = 0.6 ⇒ ratio 1.5 > 1.1 ⇒ ℓ = −α log(1 − 0.6); token 2
    has p^A = p^B = 0.5 ⇒ ℓ = −log 0.5. α = 0.5:
    mle = (−log 0.9 − log 0.5)/2, ul = (−0.5 log 0.4 − log 0.5)/2, L = (mle + ul)/2.

    Gradient w.r.t. x = log p^B of token 1: L ∋ (1/2)(1/2)(−α log(1 − e^x)) ⇒ ∂L/∂x =
    (α/4)·p/(1 − p) = 0.125·1.5 > 0, so a gradient step lowers p^B. The ratio carries no gradient:
    ∂L/∂log p^A of token 1 is only the MLE part, −1/4."""
    policy = logs([0.9, 0.5]).requires_grad_(True)
    misalign = logs([0.6, 0.5]).requires_grad_(True)
    mask = torch.ones(1, 2, dtype=torch.bool)
    losses, metrics = cut(policy, misalign, mask, torch.tensor([True]), weight_unlike=0.5)
    mle = -(L(0.9) + L(0.5)) / 2
    ul = (-0.5 * L(0.4) - L(0.5)) / 2
    assert losses.item() == pytest.approx((mle + ul) / 2, abs=1e-12)
    assert metrics["unlikely_fraction"].item() == 0.5
    assert metrics["unlikelihood"].item() == pytest.approx(ul, abs=1e-12)
    losses.sum().backward()
    assert misalign.grad[0, 0].item() == pytest.approx(0.125 * 0.6 / 0.4, abs=1e-12)
    assert misalign.grad[0, 1].item() == pytest.approx(-0.25, abs=1e-12)  # −log p^B: raise p^B
    assert policy.grad[0].tolist() == pytest.approx([-0.25, -0.25], abs=1e-12)


def test_threshold_decides_the_branch():
    """ratio = 0.9/0.6 = 1.5. λ = 1.51: not exceeded, ℓ = −log 0.6; λ = 1.49: exceeded,
    ℓ = −α log 0.4 (α = 0.1). One token, so L = (−log 0.9 + ℓ)/2."""
    policy, misalign = logs([0.9]), logs([0.6])
    mask, negative = torch.ones(1, 1, dtype=torch.bool), torch.tensor([True])
    above, _ = cut(policy, misalign, mask, negative, threshold=1.51)
    below, _ = cut(policy, misalign, mask, negative, threshold=1.49)
    assert above.item() == pytest.approx((-L(0.9) - L(0.6)) / 2, abs=1e-12)
    assert below.item() == pytest.approx((-L(0.9) - 0.1 * L(0.4)) / 2, abs=1e-12)


def test_batch_without_negatives_is_token_mean_nll():
    """positives only ⇒ loss_i = token-mean NLL of the A sequence; the misalign tensor is
    ignored (junk here). Example 1: (−log 0.5 − log 0.25)/2; example 2: −log 0.1 (one token)."""
    policy = logs([0.5, 0.25], [0.1, 0.7])
    mask = torch.tensor([[True, True], [True, False]])
    junk = torch.tensor([[float("nan"), 3.0], [-1e4, float("inf")]], dtype=torch.float64)
    losses, metrics = cut(policy, junk, mask, torch.tensor([False, False]))
    expected = [-(L(0.5) + L(0.25)) / 2, -L(0.1)]
    assert losses.tolist() == pytest.approx(expected, abs=1e-12)
    assert metrics["unlikelihood"].tolist() == [0.0, 0.0]


def test_per_example_mean_equals_pooled_batch_form_for_equal_lengths_all_negative():
    """The docstring's claim: two negatives with T = 2 tokens each. Pooled (the paper's code):
    L_MLE = mean of the 4 A-token NLLs, L_UL = mean of the 4 ℓ_t, L = (L_MLE + L_UL)/2; the
    mean over examples of (mle_i + ul_i)/2 is the same number since every example has 2 tokens.
    Example 1 as in the unlikely-token test (α = 0.1); example 2: p^A = p^B = (0.3, 0.6)."""
    policy = logs([0.9, 0.5], [0.3, 0.6])
    misalign = logs([0.6, 0.5], [0.3, 0.6])
    mask = torch.ones(2, 2, dtype=torch.bool)
    losses, _ = cut(policy, misalign, mask, torch.tensor([True, True]))
    l_mle = -(L(0.9) + L(0.5) + L(0.3) + L(0.6)) / 4
    l_ul = (-0.1 * L(0.4) - L(0.5) - L(0.3) - L(0.6)) / 4
    assert losses.mean().item() == pytest.approx((l_mle + l_ul) / 2, abs=1e-12)


def test_guard_when_one_minus_p_is_zero():
    """With λ = 0.5 < 1 a token with p^A = p^B = 1 counts as unlikely; 1 − p = 0 gets the authors'
    +1e-5: ℓ = −α log 1e-5, finite value and gradient. mle = 0 ⇒ L = ul/2 = −0.1 log(1e-5)/2."""
    misalign = torch.zeros(1, 1, dtype=torch.float64, requires_grad=True)
    policy, mask = torch.zeros(1, 1, dtype=torch.float64), torch.ones(1, 1, dtype=torch.bool)
    losses, _ = cut(policy, misalign, mask, torch.tensor([True]), threshold=0.5)
    assert losses.item() == pytest.approx(-0.1 * L(1e-5) / 2, abs=1e-12)
    losses.sum().backward()
    assert bool(torch.isfinite(misalign.grad).all())


def test_empty_completion_and_extreme_and_bf16_inputs():
    """An example with no unmasked token has loss 0 (not 0/0); log-probs of ±1e4 and bf16 stay
    finite, with finite gradients."""
    mask = torch.tensor([[False, False], [True, True]])
    for dtype in (torch.float32, torch.bfloat16):
        policy = torch.tensor([[-1e4, 0.0], [-1e4, 1e4]], dtype=dtype, requires_grad=True)
        misalign = torch.tensor([[0.0, -1e4], [-1e-30, -1e4]], dtype=dtype, requires_grad=True)
        losses, _ = cut(policy, misalign, mask, torch.tensor([True, True]))
        assert losses[0].item() == 0.0
        assert bool(torch.isfinite(losses).all())
        losses.sum().backward()
        assert bool(torch.isfinite(policy.grad).all() and torch.isfinite(misalign.grad).all())


def test_threshold_must_be_positive():
    with pytest.raises(ValueError, match="threshold > 0"):
        cut(logs([0.5]), logs([0.5]), torch.ones(1, 1, dtype=torch.bool), torch.tensor([True]),
            threshold=0.0)
