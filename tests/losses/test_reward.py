"""Closed-form values of the reward-model losses: Bradley–Terry (pairs) and PRM step BCE.

Each test's docstring gives the derivation of the expected number.
"""

from __future__ import annotations

import math

import pytest
import torch

from alignlab.losses.reward import bradley_terry, prm_bce

LOG2 = math.log(2)


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def softplus(z: float) -> float:
    return math.log1p(math.exp(z))


def test_bradley_terry_closed_form_with_margin_and_centring():
    """r_c = 2, r_r = 0.5, m = 0.5 ⇒ −log σ(2 − 0.5 − 0.5) = log(1 + e^−1); with c = 0.01 add
    0.01·(2 + 0.5)² = 0.0625. Equal rewards, m = 0 ⇒ log 2, accuracy 0 (not strictly greater)."""
    losses, metrics = bradley_terry(t(2.0, 1.0), t(0.5, 1.0), t(0.5, 0.0))
    assert losses.tolist() == pytest.approx([math.log1p(math.exp(-1.0)), LOG2], abs=1e-12)
    assert metrics["accuracy"].tolist() == [1.0, 0.0]
    assert metrics["margin"].tolist() == [1.5, 0.0]
    centred, _ = bradley_terry(t(2.0), t(0.5), t(0.5), center_coefficient=0.01)
    assert centred.item() == pytest.approx(math.log1p(math.exp(-1.0)) + 0.0625, abs=1e-12)


def test_bradley_terry_mean_is_trls_batch_loss():
    """TRL: mean(−log σ(r_c − r_r − m)) + c·mean((r_c + r_r)²). The mean of the per-example form
    is the same number: mean(a + c·b) = mean(a) + c·mean(b)."""
    losses, _ = bradley_terry(t(2.0, -1.0, 0.3), t(0.5, 0.25, 1.0), t(0.5, 0.0, 0.2),
                              center_coefficient=0.05)
    bt = [softplus(-(2.0 - 0.5 - 0.5)), softplus(-(-1.0 - 0.25)), softplus(-(0.3 - 1.0 - 0.2))]
    centre = [2.5**2, 0.75**2, 1.3**2]
    trl = sum(bt) / 3 + 0.05 * sum(centre) / 3
    assert losses.mean().item() == pytest.approx(trl, abs=1e-12)


def test_bradley_terry_gradient_signs():
    """∂L/∂r_c = −σ(−(r_c − r_r − m)) < 0 and ∂L/∂r_r = −∂L/∂r_c (c = 0): at r_c = r_r, m = 0 the
    gradients are ∓1/2."""
    rc, rr = t(1.0).requires_grad_(True), t(1.0).requires_grad_(True)
    losses, _ = bradley_terry(rc, rr, t(0.0))
    losses.sum().backward()
    assert (rc.grad.item(), rr.grad.item()) == pytest.approx((-0.5, 0.5), abs=1e-12)


def test_prm_bce_hand_values():
    """BCE(z, y) = softplus(z) − y·z, so softplus(−z) for y = 1 and softplus(z) for y = 0.
    Row 0: steps (z, y) = (0, 1), (2, 0), the third absent ⇒ (log 2 + softplus(2))/2.
    Row 1: (−1, 1), (1, 0.25) (a soft label), (3, 1) ⇒ [softplus(1) + softplus(1) − 0.25
    + softplus(−3)]/3. Accuracy, (z > 0) = (y ≥ 0.5): row 0 wrong, wrong ⇒ 0; row 1 wrong,
    wrong, right ⇒ 1/3."""
    logits = t(0.0, 2.0, 5.0).reshape(1, 3)
    logits = torch.cat([logits, t(-1.0, 1.0, 3.0).reshape(1, 3)])
    labels = torch.stack([t(1.0, 0.0, -100.0), t(1.0, 0.25, 1.0)])  # −100: an ignore-index label
    mask = torch.tensor([[True, True, False], [True, True, True]])
    losses, metrics = prm_bce(logits, labels, mask)
    row1 = (softplus(1.0) + softplus(1.0) - 0.25 + softplus(-3.0)) / 3
    assert losses.tolist() == pytest.approx([(LOG2 + softplus(2.0)) / 2, row1], abs=1e-12)
    assert metrics["steps"].tolist() == [2.0, 3.0]
    assert metrics["accuracy"].tolist() == pytest.approx([0.0, 1 / 3], abs=1e-12)


def test_prm_bce_zero_steps_is_zero_not_nan():
    """A sample without steps has loss 0 (nothing to learn; 0/0 would make the batch NaN); the
    gradient is 0 and finite, also when its padded logits are junk."""
    logits = t(float("nan"), 1e30).reshape(1, 2).requires_grad_(True)
    labels, mask = torch.zeros(1, 2, dtype=torch.float64), torch.zeros(1, 2, dtype=torch.bool)
    losses, metrics = prm_bce(logits, labels, mask)
    assert losses.item() == 0.0
    assert metrics["steps"].item() == 0.0
    losses.sum().backward()
    assert logits.grad.abs().sum().item() == 0.0


def test_reward_losses_finite_for_extreme_and_bf16_inputs():
    """Rewards and logits of ±1e4: logsigmoid and BCE-with-logits stay finite, in bf16 too."""
    for dtype in (torch.float32, torch.bfloat16):
        big = torch.tensor([1e4, -1e4], dtype=dtype)
        losses, _ = bradley_terry(big, -big, torch.zeros(2, dtype=dtype), center_coefficient=0.1)
        assert bool(torch.isfinite(losses).all())
        labels = torch.tensor([[0.0, 1.0]], dtype=dtype)
        losses, _ = prm_bce(big.reshape(1, 2), labels, torch.ones(1, 2, dtype=torch.bool))
        assert bool(torch.isfinite(losses).all())
        assert losses.float().item() == pytest.approx(1e4, rel=1e-2)  # both steps wrong by 1e4


def test_confidence_loss_closed_form():
    """α = 0.5 (past the warm-up). d = 1 (the student agrees with the weak label): t = 1 ⇒ plain
    BT, log(1 + e^−1). d = −2 (it disagrees): t = 1 − α = 0.5 ⇒ −[½ log σ(−2) + ½ log σ(2)]
    = ½ (softplus(2) + softplus(−2)) = ½ (2 + 2 softplus(−2)) = 1 + softplus(−2)."""
    from alignlab.losses.reward import bradley_terry_confidence

    losses, metrics = bradley_terry_confidence(t(1.0, -2.0), t(0.0, 0.0), t(0.0, 0.0), torch.tensor(50.0))
    assert losses.tolist() == pytest.approx([softplus(-1.0), 1 + softplus(-2.0)], abs=1e-12)
    assert metrics["accuracy"].tolist() == [1.0, 0.0] and metrics["aux_coef"].tolist() == [0.5, 0.5]


def test_confidence_loss_warms_up_linearly_from_plain_bradley_terry():
    """At step 0, α = 0: exactly Bradley–Terry on the weak label. At step 5 of 20, α = 0.5·¼ =
    0.125; a disagreeing pair (d = −2) has t = 0.875: 0.875·softplus(2) + 0.125·softplus(−2).
    α = 0.75 and d < 0: t = 0.25 and ∂L/∂d = σ(d) − t, zero at d* = logit(0.25) < 0: the student
    settles on its disagreement with the weak label, where Bradley–Terry (∂L/∂d = σ(d) − 1 < 0)
    would push it to the weak label's side."""
    from alignlab.losses.reward import bradley_terry_confidence

    chosen, rejected, margin = t(1.0, -2.0), t(0.0, 0.0), t(0.0, 0.0)
    at_zero, _ = bradley_terry_confidence(chosen, rejected, margin, torch.tensor(0.0))
    plain, _ = bradley_terry(chosen, rejected, margin)
    assert at_zero.tolist() == pytest.approx(plain.tolist(), abs=1e-12)
    warming, metrics = bradley_terry_confidence(chosen, rejected, margin, torch.tensor(5.0))
    assert metrics["aux_coef"][0].item() == pytest.approx(0.125)
    assert warming[1].item() == pytest.approx(0.875 * softplus(2.0) + 0.125 * softplus(-2.0), abs=1e-12)
    for value, gradient in ((-2.0, 1 / (1 + math.exp(2.0)) - 0.25), (math.log(0.25 / 0.75), 0.0)):
        d = torch.tensor([value], dtype=torch.float64, requires_grad=True)
        loss, _ = bradley_terry_confidence(d, t(0.0), t(0.0), torch.tensor(100.0), aux_coef=0.75)
        loss.sum().backward()
        assert d.grad.item() == pytest.approx(gradient, abs=1e-12)


def test_confidence_loss_hardening_is_the_quantile_rule_over_both_orientations():
    """The authors' rule: threshold = the mean-label quantile of the class-0 probabilities; over
    both orientations of every pair (labels 1 and 0) that quantile is ½, so the hardened target
    of the chosen-first orientation is 1[d > 0] and the loss is the mean of the two orientations'."""
    from alignlab.losses.reward import bradley_terry_confidence

    torch.manual_seed(0)
    d = torch.randn(9, dtype=torch.float64) * 2
    alpha = 0.5
    logits = torch.stack([torch.zeros(18, dtype=torch.float64), torch.cat([d, -d])], 1)  # class 1: first better
    labels = torch.cat([torch.ones(9), torch.zeros(9)]).double()
    preds = torch.softmax(logits, -1)
    threshold = torch.quantile(preds[:, 0], labels.mean())
    hard = torch.stack([(preds[:, 0] >= threshold), (preds[:, 0] < threshold)], 1).double()
    target = torch.stack([1 - labels, labels], 1) * (1 - alpha) + hard * alpha
    reference = torch.nn.functional.cross_entropy(logits, target, reduction="none")
    ours, _ = bradley_terry_confidence(d, torch.zeros(9, dtype=torch.float64), torch.zeros(9, dtype=torch.float64),
                                       torch.tensor(1e9), aux_coef=alpha)
    assert ours.tolist() == pytest.approx(((reference[:9] + reference[9:]) / 2).tolist(), abs=1e-12)
