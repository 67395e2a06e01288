"""Closed-form values, gradients and identities of the policy objectives: KL estimators, the
clipped surrogate (PPO, DAPO clip-higher, two-sided δ, GSPO) and its micro-batch aggregation.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from alignlab.losses.policy import (
    AGGREGATIONS,
    aggregate,
    kl_penalty,
    loss_numerator,
    loss_units,
    policy_token_losses,
)

LOGPS = st.floats(min_value=-30.0, max_value=0.0, allow_nan=False)


def ragged_mask(lengths: list[int], width: int) -> torch.Tensor:
    return torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]


def batch(seed: int = 0, lengths: tuple[int, ...] = (4, 1, 3, 4, 2, 3), width: int = 4):
    """Per-token log-probs with gradient, a nearby old policy, a reference, advantages and a mask."""
    gen = torch.Generator().manual_seed(seed)
    b = len(lengths)
    logp = (-torch.rand(b, width, generator=gen, dtype=torch.float64) * 3).requires_grad_()
    old = logp.detach() + 0.3 * torch.randn(b, width, generator=gen, dtype=torch.float64)
    ref = logp.detach() + 0.5 * torch.randn(b, width, generator=gen, dtype=torch.float64)
    advantages = torch.randn(b, generator=gen, dtype=torch.float64)
    return logp, old, ref, advantages, ragged_mask(list(lengths), width)


# --- KL estimators --------------------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(LOGPS, LOGPS)
@example(-1.0, -0.9999999999999999)  # exp(u) − u − 1 in floating point is −1.1e-16 here
def test_k3_and_k2_are_non_negative(logp, ref):
    """k3 = exp(u) − u − 1 ≥ 0 and k2 = u²/2 ≥ 0 for every u = ref − logp, in floating point too."""
    lp, rf = torch.tensor([logp], dtype=torch.float64), torch.tensor([ref], dtype=torch.float64)
    assert kl_penalty(lp, rf, "k3").item() >= 0.0
    assert kl_penalty(lp, rf, "k2").item() >= 0.0


@settings(max_examples=100, deadline=None)
@given(LOGPS)
def test_every_estimator_is_zero_at_the_reference(logp):
    """u = 0: k1 = 0, k2 = 0, k3 = e⁰ − 0 − 1 = 0."""
    lp = torch.tensor([logp], dtype=torch.float64)
    for kind in ("k1", "k2", "k3"):
        assert kl_penalty(lp, lp.clone(), kind).item() == 0.0


def test_k1_and_k3_are_unbiased_for_the_kl():
    """For categorical p, q: E_{y∼p}[k1] = E_{y∼p}[k3] = KL(p ‖ q) = Σ p log(p/q), taken exactly
    over the support (E_p[q/p] = 1 makes the k3 extra terms vanish); k2 is biased, and ≥ 0."""
    p = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64)
    q = torch.tensor([0.25, 0.25, 0.25, 0.25], dtype=torch.float64)
    kl = float((p * (p / q).log()).sum())
    for kind in ("k1", "k3"):
        assert float((p * kl_penalty(p.log(), q.log(), kind)).sum()) == pytest.approx(kl, rel=1e-12)
    assert float((p * kl_penalty(p.log(), q.log(), "k2")).sum()) != pytest.approx(kl, rel=1e-3)


def test_k1_summed_over_a_completion_is_the_sequence_log_ratio():
    """Σ_t k1_t = Σ_t (log π − log π_ref) = log π(y)/π_ref(y), the one-sample estimate of the
    sequence KL; the mean over active tokens is that divided by the length."""
    _, _, ref, _, mask = batch(1)
    logp = -torch.rand(mask.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    k1 = torch.where(mask, kl_penalty(logp, ref, "k1"), 0.0)
    sequence = torch.where(mask, logp, 0.0).sum(-1) - torch.where(mask, ref, 0.0).sum(-1)
    assert torch.allclose(k1.sum(-1), sequence, atol=1e-12)
    assert torch.allclose(k1.sum(-1) / mask.sum(-1), sequence / mask.sum(-1), atol=1e-12)
    with pytest.raises(ValueError, match="k1"):
        kl_penalty(logp, ref, "k4")  # type: ignore[arg-type]


# --- the clipped surrogate --------------------------------------------------------------------------

@pytest.mark.parametrize("importance", ["token", "sequence"])
@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_at_ratio_one_the_gradient_is_reinforce(aggregation, importance):
    """logp = old: w = 1 inside the clip range, so ∂l_t/∂logp = −A per token (token level), and
    at sequence level the per-token −A/n_i of the mean log-ratio, summed over the n_i tokens that
    share it, gives the same aggregated gradient. Both equal the gradient of REINFORCE's −A·logp
    aggregated the same way; for "grpo" that is −A_i/(n_i·B)."""
    logp, _, _, advantages, mask = batch(2)
    per_token, metrics = policy_token_losses(logp, logp.detach(), advantages, mask, importance=importance)
    (grad,) = torch.autograd.grad(aggregate(per_token, mask, aggregation, 8), logp)
    reinforce = -advantages[:, None] * logp
    (expected,) = torch.autograd.grad(aggregate(reinforce, mask, aggregation, 8), logp)
    assert torch.allclose(grad, expected, atol=1e-12)
    assert metrics["ratio"].item() == 1.0 and metrics["clip_ratio/region"].item() == 0.0
    if aggregation == "grpo":
        n, b = mask.sum(-1, keepdim=True), mask.shape[0]
        assert torch.allclose(grad, torch.where(mask, -advantages[:, None] / (n * b), 0.0), atol=1e-12)


def ratio_batch(ratios: list[float], advantages: list[float]):
    """One token per completion with the given ratio w = π/π_old and advantage."""
    logp = torch.full((len(ratios), 1), -1.0, dtype=torch.float64, requires_grad=True)
    old = logp.detach() - torch.tensor(ratios, dtype=torch.float64).log()[:, None]
    return logp, old, torch.tensor(advantages, dtype=torch.float64), torch.ones(len(ratios), 1, dtype=torch.bool)


def test_clipping_zeroes_the_gradient_only_where_ppo_says():
    """Per token ∂l/∂logp = −A·w where the unclipped term is the minimum, 0 where the clipped one
    is. w = 1.5, A > 0 and w = 0.5, A < 0 are clipped (0); w = 1.5, A < 0 and w = 0.5, A > 0 are
    not (−A·w = 1.5 and −0.5); w = 1.1, A = 1 is inside (−1.1). "dapo" divides by the 5 tokens."""
    logp, old, advantages, mask = ratio_batch([1.5, 0.5, 1.5, 0.5, 1.1], [1.0, -1.0, -1.0, 1.0, 1.0])
    per_token, metrics = policy_token_losses(logp, old, advantages, mask)
    (grad,) = torch.autograd.grad(aggregate(per_token, mask, "dapo"), logp)
    assert grad[:, 0].tolist() == pytest.approx([0.0, 0.0, 1.5 / 5, -0.5 / 5, -1.1 / 5], abs=1e-12)
    assert per_token[:, 0].tolist() == pytest.approx([-1.2, 0.8, 1.5, -0.5, -1.1], abs=1e-12)
    assert metrics["clip_ratio/high"].item() == pytest.approx(1 / 5)
    assert metrics["clip_ratio/low"].item() == pytest.approx(1 / 5)
    assert metrics["clip_ratio/region"].item() == pytest.approx(2 / 5)
    assert metrics["ratio"].item() == pytest.approx((1.5 + 0.5 + 1.5 + 0.5 + 1.1) / 5)


def test_clip_higher_widens_only_the_upper_bound():
    """DAPO's ε_high = 0.28: w = 1.25 with A > 0 is clipped at ε = 0.2 (gradient 0) and not at
    0.28 (gradient −w = −1.25); w = 0.75 with A < 0 stays clipped by ε_low = 0.2."""
    logp, old, advantages, mask = ratio_batch([1.25, 0.75], [1.0, -1.0])
    for eps_high, expected in [(0.2, [0.0, 0.0]), (0.28, [-1.25, 0.0])]:
        per_token, _ = policy_token_losses(logp, old, advantages, mask, epsilon_high=eps_high)
        (grad,) = torch.autograd.grad(loss_numerator(per_token, mask, "dapo"), logp)
        assert grad[:, 0].tolist() == pytest.approx(expected, abs=1e-12)


def test_two_sided_delta_caps_negative_advantage_tokens():
    """w = 3, A = −1: plain PPO takes the unclipped −w·A = 3 (gradient −A·w = 3); with δ = 2 the
    unclipped term is min(w, δ)·A, so l = −min(−2, −1.2) = 2, flat in w (gradient 0)."""
    logp, old, advantages, mask = ratio_batch([3.0], [-1.0])
    for delta, value, slope in [(None, 3.0, 3.0), (2.0, 2.0, 0.0)]:
        per_token, _ = policy_token_losses(logp, old, advantages, mask, delta=delta)
        (grad,) = torch.autograd.grad(per_token.sum(), logp)
        assert per_token.item() == pytest.approx(value) and grad.item() == pytest.approx(slope)


def test_beta_adds_the_k3_penalty_with_its_gradient():
    """At w = 1 the surrogate is −A; the KL term adds β·k3 with ∂k3/∂logp = 1 − exp(ref − logp).
    The kl metric is the mean k3 over active tokens; without ref_logp, β ≠ 0 is an error."""
    logp, _, ref, advantages, mask = batch(3)
    beta = 0.04
    per_token, metrics = policy_token_losses(logp, logp.detach(), advantages, mask, ref_logp=ref, beta=beta)
    (grad,) = torch.autograd.grad(per_token.sum(), logp)
    u = (ref - logp).detach()
    k3 = torch.exp(u) - u - 1
    assert torch.allclose(per_token, torch.where(mask, -advantages[:, None] + beta * k3, 0.0), atol=1e-12)
    assert torch.allclose(grad, torch.where(mask, -advantages[:, None] + beta * (1 - torch.exp(u)), 0.0), atol=1e-12)
    assert metrics["kl"].item() == pytest.approx(float(k3[mask].mean()), rel=1e-12)
    with pytest.raises(ValueError, match="ref_logp"):
        policy_token_losses(logp, logp.detach(), advantages, mask, beta=beta)


def test_gspo_uses_one_length_normalised_ratio_per_completion():
    """importance="sequence": w_i = exp(mean_t (logp − old)) for every active token of i, so
    l_it = −min(w_i·A_i, clip(w_i)·A_i), the same on all its tokens."""
    logp, old, _, advantages, mask = batch(4)
    per_token, _ = policy_token_losses(logp, old, advantages, mask, importance="sequence")
    log_w = torch.where(mask, logp.detach() - old, 0.0).sum(-1) / mask.sum(-1)
    w = log_w.exp()
    expected = -torch.min(w * advantages, w.clamp(0.8, 1.2) * advantages)
    assert torch.allclose(per_token, torch.where(mask, expected[:, None], 0.0), atol=1e-12)


def test_gspo_with_one_token_completions_is_token_level():
    """With |y| = 1 the length-normalised sequence ratio is the token ratio: same losses,
    gradients and metrics."""
    logp, old, ref, advantages, _ = batch(5, lengths=(1, 1, 1, 1), width=1)
    mask = torch.ones(4, 1, dtype=torch.bool)
    outs = {}
    for importance in ("token", "sequence"):
        per_token, metrics = policy_token_losses(logp, old, advantages, mask, importance=importance,
                                                 ref_logp=ref, beta=0.1)
        (grad,) = torch.autograd.grad(per_token.sum(), logp)
        outs[importance] = (per_token.detach(), grad, metrics)
    assert torch.allclose(outs["token"][0], outs["sequence"][0], atol=1e-12)
    assert torch.allclose(outs["token"][1], outs["sequence"][1], atol=1e-12)
    assert {k: v.item() for k, v in outs["token"][2].items()} == pytest.approx(
        {k: v.item() for k, v in outs["sequence"][2].items()})


def test_values_off_the_mask_are_never_read():
    """NaN and huge values in padding leave the loss and its gradient finite and zero there."""
    logp, old, ref, advantages, mask = batch(6)
    poisoned = torch.where(mask, logp, torch.tensor(float("nan"), dtype=torch.float64))
    old_poisoned = torch.where(mask, old, 1e4)
    per_token, metrics = policy_token_losses(poisoned, old_poisoned, advantages, mask, ref_logp=ref, beta=0.1)
    (grad,) = torch.autograd.grad(aggregate(per_token, mask, "grpo"), logp)
    assert torch.isfinite(per_token).all() and (per_token[~mask] == 0).all()
    assert torch.isfinite(grad).all() and (grad[~mask] == 0).all()
    assert all(torch.isfinite(v) for v in metrics.values())


def test_token_level_advantages_and_shape_errors():
    """Advantages (B, T) are used per token: a row of [1, −1] gives −w·A of opposite signs."""
    logp = torch.zeros(1, 2, dtype=torch.float64, requires_grad=True)
    mask = torch.ones(1, 2, dtype=torch.bool)
    per_token, _ = policy_token_losses(logp, logp.detach(), torch.tensor([[1.0, -1.0]], dtype=torch.float64), mask)
    assert per_token.tolist() == [[-1.0, 1.0]]
    with pytest.raises(ValueError, match="advantages"):
        policy_token_losses(logp, logp.detach(), torch.zeros(1, 3), mask)
    with pytest.raises(ValueError, match="importance"):
        policy_token_losses(logp, logp.detach(), torch.zeros(1), mask, importance="tokens")  # type: ignore[arg-type]


# --- aggregation --------------------------------------------------------------------------------

def test_aggregations_by_hand():
    """l = [[1, 2, ·], [3, ·, ·]] (· off the mask): grpo = (1.5 + 3)/2 = 2.25; bnpo = dapo = 6/3 = 2;
    dr_grpo with L = 4: 6/(2·4) = 0.75."""
    per_token = torch.tensor([[1.0, 2.0, 9.0], [3.0, 9.0, 9.0]], dtype=torch.float64)
    mask = ragged_mask([2, 1], 3)
    expected = {"grpo": 2.25, "bnpo": 2.0, "dapo": 2.0, "dr_grpo": 0.75}
    assert {a: aggregate(per_token, mask, a, 4).item() for a in AGGREGATIONS} == pytest.approx(expected)
    assert [loss_units(mask, a, 4) for a in AGGREGATIONS] == [2.0, 1.0, 3.0, 8.0]


SPLITS = [[6], [3, 3], [1, 5], [2, 2, 2], [4, 1, 1], [1] * 6]


@pytest.mark.parametrize("aggregation", ["grpo", "dapo", "dr_grpo"])
def test_accumulation_over_micro_batches_is_the_full_batch_loss(aggregation):
    """Σ numerators / Σ units over any row split (micro-batches or ranks) = the full-batch
    aggregate, in value and gradient: each numerator is a sum over its rows, each unit a count."""
    logp, old, ref, advantages, mask = batch(7)
    per_token, _ = policy_token_losses(logp, old, advantages, mask, ref_logp=ref, beta=0.04)
    full = aggregate(per_token, mask, aggregation, 5)
    (full_grad,) = torch.autograd.grad(full, logp, retain_graph=True)
    for split in SPLITS:
        parts = list(zip(per_token.split(split), mask.split(split), strict=True))
        total = sum(loss_numerator(p, m, aggregation) for p, m in parts)
        units = sum(loss_units(m, aggregation, 5) for _, m in parts)
        (grad,) = torch.autograd.grad(total / units, logp, retain_graph=True)
        assert (total / units).item() == pytest.approx(full.item(), rel=1e-12), split
        assert torch.allclose(grad, full_grad, atol=1e-12), split


def test_bnpo_depends_on_the_split():
    """bnpo averages micro-batch token means: rows with 4 + 1 tokens then 3 + 4 + 2 + 3 tokens weigh
    a token of the small micro-batch 1/5 against 1/12, where the full batch weighs all 1/17. Only
    the one-micro-batch split reproduces it; TRL's bnpo has the same dependence."""
    logp, old, _, advantages, mask = batch(8)
    per_token, _ = policy_token_losses(logp, old, advantages, mask)
    full = aggregate(per_token, mask, "bnpo").item()
    for split, same in [([6], True), ([2, 4], False), ([1, 5], False)]:
        parts = list(zip(per_token.split(split), mask.split(split), strict=True))
        value = (sum(loss_numerator(p, m, "bnpo") for p, m in parts) / sum(loss_units(m, "bnpo") for _, m in parts)).item()
        assert (value == pytest.approx(full, rel=1e-12)) is same, split
    tokens = mask.sum(-1)
    manual = (per_token[:2].sum() / tokens[:2].sum() + per_token[2:].sum() / tokens[2:].sum()).item() / 2
    parts = list(zip(per_token.split([2, 4]), mask.split([2, 4]), strict=True))
    assert sum(loss_numerator(p, m, "bnpo") for p, m in parts).item() / 2 == pytest.approx(manual, rel=1e-12)


def test_aggregation_errors():
    """dr_grpo needs the generation limit, and no completion may exceed it; names are checked."""
    mask = ragged_mask([3, 1], 3)
    with pytest.raises(ValueError, match="max_completion_length"):
        loss_units(mask, "dr_grpo")
    with pytest.raises(ValueError, match="more than"):
        loss_units(mask, "dr_grpo", 2)
    with pytest.raises(ValueError, match="grpo, bnpo, dapo, dr_grpo"):
        loss_numerator(torch.zeros(2, 3), mask, "mean")  # type: ignore[arg-type]
    assert aggregate(torch.zeros(1, 2), torch.zeros(1, 2, dtype=torch.bool), "dapo").item() == 0.0
    assert math.isfinite(aggregate(torch.ones(1, 2), torch.zeros(1, 2, dtype=torch.bool), "grpo").item())
