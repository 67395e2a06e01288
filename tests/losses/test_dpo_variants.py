"""Closed-form values and identities of the paired DPO variants (the ``loss_type`` options of TRL's
``DPOTrainer``; pairwise BCO, Jung et al. 2024, arXiv 2404.04656; dense DPO of RLHF-V, Yu et al. 2024,
Eq. 5): nca, apo_zero, apo_down, sppo_hard, exo, bco_pair, ddpo and dense_token_weights.

Each test's docstring gives the derivation of the expected number. The running example is
ρ_w = −10 − (−12) = 2, ρ_l = −20 − (−19) = −1, Δ = 3, usually with β = 0.5 (r_w = 1, r_l = −0.5).
"""

from __future__ import annotations

import math

import pytest
import torch

from alignlab.losses.dpo import dpo
from alignlab.losses.dpo_variants import (
    apo_down,
    apo_zero,
    bco_pair,
    ddpo,
    dense_token_weights,
    exo,
    nca,
    sppo_hard,
)
from alignlab.registry import LOSSES

LOG2 = math.log(2)
EXAMPLE = (-10.0, -20.0, -12.0, -19.0)  # ρ_w = 2, ρ_l = −1, Δ = 3
AT_INIT = (-7.0, -9.0, -7.0, -9.0)  # πθ = πref: ρ_w = ρ_l = 0
SEQUENCE_LOSSES = [nca, apo_zero, apo_down, sppo_hard, exo, bco_pair]


def pair(pc: float, pr: float, rc: float, rr: float) -> tuple[torch.Tensor, ...]:
    return tuple(torch.tensor([v], dtype=torch.float64) for v in (pc, pr, rc, rr))


def sig(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def softplus(z: float) -> float:
    """−log σ(−z) = log(1 + e^z)."""
    return math.log1p(math.exp(z))


def grad_chosen(fn, inputs: tuple[torch.Tensor, ...], **kw) -> float:
    """∂L/∂(log πθ(y_w)) by autograd."""
    pc = inputs[0].clone().requires_grad_(True)
    losses, _ = fn(pc, *inputs[1:], **kw)
    losses.sum().backward()
    return pc.grad.item()


# --- contracts ---------------------------------------------------------------------------------


def test_contracts_and_paper_defaults():
    """Every variant needs the reference; defaults are the papers' (TRL's paper index; for ddpo
    the RLHF-V paper's β = 0.5 with its weighted mean, Eq. 5)."""
    expected = {
        "nca": ("sum", {"beta": 0.01}),
        "apo_zero": ("sum", {"beta": 0.1}),
        "apo_down": ("sum", {"beta": 0.1}),
        "sppo_hard": ("sum", {"beta": 1e-3}),
        "exo": ("sum", {"beta": 0.1, "label_smoothing": 1e-3}),
        "bco_pair": ("sum", {"beta": 0.01, "delta": 0.0}),
        "ddpo": ("token", {"beta": 0.5, "average": True}),
    }
    for name, (logps, hyper) in expected.items():
        contract = LOSSES.get(name).contract
        assert contract.needs_ref and contract.data == "paired" and contract.logps == logps
        assert {h.name: h.default for h in contract.hyperparameters} == hyper
    assert LOSSES.get("ddpo").contract.inputs == (
        "policy_chosen_tokens", "policy_rejected_tokens",
        "ref_chosen_tokens", "ref_rejected_tokens", "chosen_mask", "rejected_mask",
        "chosen_weights", "rejected_weights")


# --- NCA ---------------------------------------------------------------------------------------


def test_nca_at_init_is_two_log2():
    """ρ = 0 ⇒ every σ(0) = ½: L = log 2 + ½ log 2 + ½ log 2 = 2 log 2, for any β."""
    for beta in (0.01, 1.0):
        assert nca(*pair(*AT_INIT), beta=beta)[0].item() == pytest.approx(2 * LOG2, abs=1e-12)


def test_nca_closed_form():
    """β = 0.5: r_w = 1, r_l = −0.5. L = log(1 + e^−1) + ½ log(1 + e^1) + ½ log(1 + e^−0.5)."""
    losses, metrics = nca(*pair(*EXAMPLE), beta=0.5)
    expected = softplus(-1.0) + 0.5 * softplus(1.0) + 0.5 * softplus(-0.5)
    assert losses.item() == pytest.approx(expected, abs=1e-12)
    assert metrics["rewards/chosen"].item() == pytest.approx(1.0)
    assert metrics["rewards/margins"].item() == pytest.approx(1.5)


def test_nca_gradient_and_chosen_optimum():
    """∂L/∂ρ_w = β[−σ(−r_w) + ½ σ(r_w)]: −β/4 at init (raises y_w), zero at r_w = log 2
    (σ = 2/3: −1/3 + 1/3), positive beyond. So NCA holds the chosen reward at log 2 > 0."""
    beta = 0.5
    assert grad_chosen(nca, pair(*AT_INIT), beta=beta) == pytest.approx(-beta / 4, abs=1e-12)
    at_opt = pair(2 * LOG2, -3.0, 0.0, 0.0)  # ρ_w = 2 log 2 ⇒ r_w = log 2
    assert grad_chosen(nca, at_opt, beta=beta) == pytest.approx(0.0, abs=1e-12)
    assert grad_chosen(nca, pair(*EXAMPLE), beta=beta) == pytest.approx(
        beta * (-sig(-1.0) + 0.5 * sig(1.0)), abs=1e-12)
    assert grad_chosen(nca, pair(*EXAMPLE), beta=beta) > 0  # r_w = 1 > log 2


# --- APO ---------------------------------------------------------------------------------------


def test_apo_at_init_is_one():
    """ρ = 0: apo_zero = (1 − ½) + ½ = 1; apo_down = ½ + (1 − ½) = 1."""
    inputs = pair(*AT_INIT)
    assert apo_zero(*inputs)[0].item() == pytest.approx(1.0, abs=1e-12)
    assert apo_down(*inputs)[0].item() == pytest.approx(1.0, abs=1e-12)


def test_apo_closed_forms():
    """β = 0.5, r_w = 1, r_l = −0.5, βΔ = 1.5:
    apo_zero = (1 − σ(1)) + σ(−0.5); apo_down = σ(1) + (1 − σ(1.5))."""
    assert apo_zero(*pair(*EXAMPLE), beta=0.5)[0].item() == pytest.approx(
        1 - sig(1.0) + sig(-0.5), abs=1e-12)
    assert apo_down(*pair(*EXAMPLE), beta=0.5)[0].item() == pytest.approx(
        sig(1.0) + 1 - sig(1.5), abs=1e-12)


def test_apo_gradients():
    """apo_zero: ∂L/∂ρ_w = −β σ'(r_w) < 0 always (σ' = σ(1 − σ)).
    apo_down: ∂L/∂ρ_w = β[σ'(r_w) − σ'(βΔ)]: 0 at init (¼ − ¼), β(σ'(1) − σ'(1.5)) > 0 at the
    example; its ∂L/∂ρ_l = β σ'(βΔ) = β/4 > 0 at init, so the rejected goes down first."""
    beta = 0.5
    for point in (pair(*EXAMPLE), pair(*AT_INIT), pair(30.0, 0.0, 0.0, 0.0)):
        assert grad_chosen(apo_zero, point, beta=beta) < 0
    assert grad_chosen(apo_zero, pair(*EXAMPLE), beta=beta) == pytest.approx(
        -beta * sig(1.0) * sig(-1.0), abs=1e-12)

    def dsig(z: float) -> float:
        return sig(z) * sig(-z)

    init = pair(*AT_INIT)
    assert grad_chosen(apo_down, init, beta=beta) == pytest.approx(0.0, abs=1e-12)
    assert grad_chosen(apo_down, pair(*EXAMPLE), beta=beta) == pytest.approx(
        beta * (dsig(1.0) - dsig(1.5)), abs=1e-12)
    pr = init[1].clone().requires_grad_(True)
    apo_down(init[0], pr, *init[2:], beta=beta)[0].sum().backward()
    assert pr.grad.item() == pytest.approx(beta / 4, abs=1e-12)


# --- SPPO (hard) -------------------------------------------------------------------------------


def test_sppo_hard_at_init():
    """ρ = 0: L = (1/(2β))² + (1/(2β))² = 1/(2β²): 50 for β = 0.1, 5·10⁵ at the default 1e-3."""
    inputs = pair(*AT_INIT)
    assert sppo_hard(*inputs, beta=0.1)[0].item() == pytest.approx(50.0, abs=1e-9)
    assert sppo_hard(*inputs)[0].item() == pytest.approx(5e5, rel=1e-12)


def test_sppo_hard_closed_form_and_minimum():
    """β is not applied to ρ (TRL): targets ±1/(2β).
    β = 0.5 (targets ±1): (2 − 1)² + (−1 + 1)² = 1; β = 0.1 (±5): (2 − 5)² + (−1 + 5)² = 25.
    Minimum 0 at ρ_w = 1/(2β), ρ_l = −1/(2β): β = 0.25 gives ρ = (2, −2)."""
    assert sppo_hard(*pair(*EXAMPLE), beta=0.5)[0].item() == pytest.approx(1.0, abs=1e-12)
    assert sppo_hard(*pair(*EXAMPLE), beta=0.1)[0].item() == pytest.approx(25.0, abs=1e-12)
    at_minimum = pair(2.0, -2.0, 0.0, 0.0)
    assert sppo_hard(*at_minimum, beta=0.25)[0].item() == pytest.approx(0.0, abs=1e-12)


def test_sppo_hard_gradient_and_no_shift_invariance():
    """∂L/∂ρ_w = 2(ρ_w − 1/(2β)): −1/β at init (raises y_w while ρ_w is under its target).
    Unlike DPO it sees each ratio, not Δ alone: shifting both ρ by +1 at β = 0.5 moves the
    example from 1 to (3 − 1)² + (0 + 1)² = 5, while DPO is unchanged."""
    assert grad_chosen(sppo_hard, pair(*AT_INIT), beta=0.1) == pytest.approx(-10.0)
    assert grad_chosen(sppo_hard, pair(*EXAMPLE), beta=0.1) == pytest.approx(2 * (2 - 5))
    shifted = pair(-9.0, -19.0, -12.0, -19.0)
    assert sppo_hard(*shifted, beta=0.5)[0].item() == pytest.approx(5.0, abs=1e-12)
    unshifted = dpo(*pair(*EXAMPLE), beta=0.5)[0].item()
    assert dpo(*shifted, beta=0.5)[0].item() == pytest.approx(unshifted)
    with pytest.raises(ValueError, match="beta > 0"):
        sppo_hard(*pair(*EXAMPLE), beta=0.0)


# --- EXO ---------------------------------------------------------------------------------------


def test_exo_at_init():
    """q = (½, ½), p = (1 − ε, ε):
    KL(q‖p) = ½ log(½/(1 − ε)) + ½ log(½/ε) = −log 2 − ½ log(ε(1 − ε))."""
    for eps in (1e-3, 0.1):
        value = exo(*pair(*AT_INIT), label_smoothing=eps)[0].item()
        assert value == pytest.approx(-LOG2 - 0.5 * math.log(eps * (1 - eps)), abs=1e-12)


def test_exo_closed_form_and_zero_at_label_distribution():
    """β = 0.5, ε = 0.1, z = βΔ = 1.5:
    L = σ(1.5)[log σ(1.5) − log 0.9] + σ(−1.5)[log σ(−1.5) − log 0.1].
    KL is 0 exactly when σ(z) = 1 − ε, i.e. z = log((1 − ε)/ε): β = 0.1, Δ = 10 log 999."""
    losses, _ = exo(*pair(*EXAMPLE), beta=0.5, label_smoothing=0.1)
    s = sig(1.5)
    expected = s * (math.log(s) - math.log(0.9)) + (1 - s) * (math.log(1 - s) - math.log(0.1))
    assert losses.item() == pytest.approx(expected, abs=1e-12)
    at_zero = pair(10 * math.log(999), 0.0, 0.0, 0.0)
    assert exo(*at_zero, beta=0.1, label_smoothing=1e-3)[0].item() == pytest.approx(0.0, abs=1e-12)
    grid = torch.linspace(-200, 200, 401, dtype=torch.float64)
    zeros = torch.zeros_like(grid)
    assert bool((exo(grid, zeros, zeros, zeros)[0] >= -1e-15).all())  # a KL is never negative


def test_exo_gradient_and_epsilon_checks():
    """L(s) with s = σ(z): dL/ds = logit(s) − logit(1 − ε), ds/dz = s(1 − s), so
    ∂L/∂ρ_w = β s(1 − s)(z − log((1 − ε)/ε)) < 0 while z is below the target.
    Example: 0.5·σ(1.5)σ(−1.5)(1.5 − log 9)."""
    assert grad_chosen(exo, pair(*EXAMPLE), beta=0.5, label_smoothing=0.1) == pytest.approx(
        0.5 * sig(1.5) * sig(-1.5) * (1.5 - math.log(9)), abs=1e-12)
    assert grad_chosen(exo, pair(*AT_INIT), beta=0.1) == pytest.approx(
        0.1 * 0.25 * -math.log(999), abs=1e-12)
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="0 < label_smoothing < 1"):
            exo(*pair(*EXAMPLE), label_smoothing=bad)


# --- BCO (pairwise) ----------------------------------------------------------------------------


def test_bco_pair_at_init():
    """ρ = 0: δ = 0 gives 2 log 2; δ = 0.3 gives log(1 + e^0.3) + log(1 + e^−0.3)."""
    inputs = pair(*AT_INIT)
    assert bco_pair(*inputs)[0].item() == pytest.approx(2 * LOG2, abs=1e-12)
    expected = softplus(0.3) + softplus(-0.3)
    assert bco_pair(*inputs, delta=0.3)[0].item() == pytest.approx(expected, abs=1e-12)


def test_bco_pair_closed_form():
    """β = 0.5, r_w = 1, r_l = −0.5. δ = 0 (TRL): log(1 + e^−1) + log(1 + e^−0.5).
    δ = 0.3: −log σ(1 − 0.3) − log σ(−(−0.5 − 0.3)) = log(1 + e^−0.7) + log(1 + e^−0.8)."""
    assert bco_pair(*pair(*EXAMPLE), beta=0.5)[0].item() == pytest.approx(
        softplus(-1.0) + softplus(-0.5), abs=1e-12)
    assert bco_pair(*pair(*EXAMPLE), beta=0.5, delta=0.3)[0].item() == pytest.approx(
        softplus(-0.7) + softplus(-0.8), abs=1e-12)


def test_bco_pair_upper_bounds_dpo_and_gradient():
    """σ(a)σ(−b) = 1/(1 + e^−a + e^b + e^(b−a)) ≤ σ(a − b), so −log σ(r_w − δ) − log σ(δ − r_l)
    ≥ −log σ(r_w − r_l) = DPO for every δ (the paper's bound). ∂L/∂ρ_w = −β σ(δ − r_w) < 0:
    at the example with δ = 0.3, −0.5 σ(−0.7)."""
    g = torch.Generator().manual_seed(0)
    inputs = [-40 * torch.rand(64, generator=g, dtype=torch.float64) for _ in range(4)]
    for delta in (0.0, 0.3, -2.0):
        bound = dpo(*inputs, beta=0.5)[0]
        assert bool((bco_pair(*inputs, beta=0.5, delta=delta)[0] >= bound).all())
    assert grad_chosen(bco_pair, pair(*EXAMPLE), beta=0.5, delta=0.3) == pytest.approx(
        -0.5 * sig(-0.7), abs=1e-12)


# --- shared checks for the sequence-level variants ---------------------------------------------


@pytest.mark.parametrize("fn", SEQUENCE_LOSSES, ids=lambda f: f.__name__)
def test_reference_changes_the_loss(fn):
    """Moving either reference log-prob by 1 changes every variant at the running example."""
    pc, pr, rc, rr = pair(*EXAMPLE)
    base = fn(pc, pr, rc, rr, beta=0.5)[0].item()
    assert fn(pc, pr, rc + 1, rr, beta=0.5)[0].item() != pytest.approx(base, abs=1e-9)
    assert fn(pc, pr, rc, rr + 1, beta=0.5)[0].item() != pytest.approx(base, abs=1e-9)


@pytest.mark.parametrize("fn", SEQUENCE_LOSSES, ids=lambda f: f.__name__)
def test_finite_at_extremes_and_in_bf16(fn):
    """Log-probs of ±1e4 give finite losses and gradients; bf16 inputs give finite losses."""
    for sign in (1.0, -1.0):
        pc = torch.full((3,), -1e4, dtype=torch.float64, requires_grad=True)
        pr = torch.full((3,), -0.01, dtype=torch.float64)
        ref = torch.full((3,), sign * 1e4, dtype=torch.float64)
        losses, _ = fn(pc, pr, ref, -ref)
        losses.sum().backward()
        assert bool(torch.isfinite(losses).all()) and bool(torch.isfinite(pc.grad).all())
    half = [t.to(torch.bfloat16) for t in pair(*EXAMPLE)]
    assert bool(torch.isfinite(fn(*half, beta=0.5)[0]).all())


# --- dense DPO (RLHF-V) ------------------------------------------------------------------------


def token_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """Two pairs, T = 5, ragged masks, per-token log-probs 0 where masked."""
    g = torch.Generator().manual_seed(seed)
    chosen_mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    rejected_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]], dtype=torch.bool)
    made = {}
    for name, mask in (("policy_chosen_tokens", chosen_mask), ("ref_chosen_tokens", chosen_mask),
                       ("policy_rejected_tokens", rejected_mask),
                       ("ref_rejected_tokens", rejected_mask)):
        made[name] = -3 * torch.rand(2, 5, generator=g, dtype=torch.float64) * mask
    made |= {"chosen_mask": chosen_mask, "rejected_mask": rejected_mask,
             "chosen_weights": torch.ones(2, 5, dtype=torch.float64),
             "rejected_weights": torch.ones(2, 5, dtype=torch.float64)}
    return made


def test_ddpo_gamma_one_sum_is_dpo():
    """γ = 1, average=False: s(y) = Σ_t log p_t = the summed log-prob, so DDPO is DPO exactly."""
    batch = token_batch()
    sums = [batch[n].sum(-1) for n in ("policy_chosen_tokens", "policy_rejected_tokens",
                                       "ref_chosen_tokens", "ref_rejected_tokens")]
    for beta in (0.1, 0.5):
        got = ddpo(**batch, beta=beta, average=False)[0]
        torch.testing.assert_close(got, dpo(*sums, beta=beta)[0], rtol=0, atol=1e-12)


def test_ddpo_gamma_one_average_is_dpo_on_token_means():
    """γ = 1, average=True: s(y) = Σ_t log p_t / |y| for both models, i.e. DPO on token means."""
    batch = token_batch(1)
    lengths = {"chosen": batch["chosen_mask"].sum(-1), "rejected": batch["rejected_mask"].sum(-1)}
    order = (("policy", "chosen"), ("policy", "rejected"), ("ref", "chosen"), ("ref", "rejected"))
    means = [batch[f"{who}_{side}_tokens"].sum(-1) / lengths[side] for who, side in order]
    torch.testing.assert_close(ddpo(**batch)[0], dpo(*means, beta=0.5)[0], rtol=0, atol=1e-12)


def test_ddpo_identical_responses_give_log2_and_no_gradient():
    """y_w == y_l (same tokens, mask and weights): the two weighted ratios cancel, z = 0 ⇒ log 2;
    ∂L/∂x = −β σ(0)(∂s_w/∂x − ∂s_l/∂x) = 0 for the shared per-token log-probs x."""
    batch = token_batch(2)
    weights = torch.tensor([dense_token_weights([5, 6, 7, 8, 9], [5, 6, 7, 8, 9], 5.0)[0]] * 2,
                           dtype=torch.float64)
    tokens = batch["policy_chosen_tokens"].clone().requires_grad_(True)
    mask = batch["chosen_mask"]
    for average in (True, False):
        losses, _ = ddpo(tokens, tokens, batch["ref_chosen_tokens"], batch["ref_chosen_tokens"],
                         mask, mask, weights, weights, average=average)
        log2 = torch.full((2,), LOG2, dtype=torch.float64)
        torch.testing.assert_close(losses, log2, rtol=0, atol=1e-12)
        losses.sum().backward()
        assert float(tokens.grad.abs().max()) == 0.0
        tokens.grad = None


def test_ddpo_weighted_closed_form_and_gradient():
    """T = 4, mask (1, 1, 1, 0), weights (1, 5, 1, 5): the masked weight does not count.
    Chosen token ratios (0, −1, −2): Σ w·ρ = −5 − 2 = −7, Σ w = 7. Rejected equals its reference.
    Sum: L = −log σ(0.5·(−7)) = log(1 + e^3.5); mean: L = log(1 + e^0.5).
    ∂L/∂(policy chosen token t) = −β σ(−z) w_t / Σw: for the mean,
    −0.5 σ(−(−0.5))·(1, 5, 1, 0)/7."""
    mask = torch.tensor([[True, True, True, False]])
    weights = torch.tensor([[1.0, 5.0, 1.0, 5.0]], dtype=torch.float64)
    pc = torch.tensor([[-1.0, -2.0, -3.0, 0.0]], dtype=torch.float64, requires_grad=True)
    rc = torch.tensor([[-1.0, -1.0, -1.0, 0.0]], dtype=torch.float64)
    rej = torch.tensor([[-0.5, -1.5, -2.5, 0.0]], dtype=torch.float64)
    ones = torch.ones(1, 4, dtype=torch.float64)
    total, metrics = ddpo(pc, rej, rc, rej, mask, mask, weights, ones, beta=0.5, average=False)
    assert total.item() == pytest.approx(softplus(3.5), abs=1e-12)
    assert metrics["rewards/chosen"].item() == pytest.approx(-3.5)
    mean, _ = ddpo(pc, rej, rc, rej, mask, mask, weights, ones, beta=0.5, average=True)
    assert mean.item() == pytest.approx(softplus(0.5), abs=1e-12)
    mean.sum().backward()
    expected = -0.5 * sig(0.5) * torch.tensor([[1.0, 5.0, 1.0, 0.0]], dtype=torch.float64) / 7
    torch.testing.assert_close(pc.grad, expected, rtol=0, atol=1e-12)
    moved, _ = ddpo(pc.detach(), rej, rc - 0.3 * mask, rej, mask, mask, weights, ones, beta=0.5)
    assert moved.item() != pytest.approx(mean.item(), abs=1e-6)  # the reference matters


def test_ddpo_finite_at_extremes_and_in_bf16():
    """Token log-probs of −1e4 against a reference of −0.01, and bf16 inputs, stay finite."""
    batch = token_batch()
    for name in ("policy_chosen_tokens", "policy_rejected_tokens"):
        mask = batch[name.split("_")[1] + "_mask"]
        batch[name] = torch.full((2, 5), -1e4, dtype=torch.float64) * mask
    for average in (True, False):
        pc = batch["policy_chosen_tokens"].clone().requires_grad_(True)
        losses, _ = ddpo(**(batch | {"policy_chosen_tokens": pc}), average=average)
        losses.sum().backward()
        assert bool(torch.isfinite(losses).all()) and bool(torch.isfinite(pc.grad).all())
    half = {k: v.bfloat16() if v.is_floating_point() else v for k, v in token_batch().items()}
    assert bool(torch.isfinite(ddpo(**half)[0]).all())


def test_dense_token_weights_replacement_only():
    """rejected 1 2 3 4 [8] 5 6 7 vs chosen 1 2 3 4 [9 9] 5 6 7: blocks 1-4 and 5-7 match; the gap
    is non-empty on both sides, a replacement, so γ on 8 and on both 9s. A pure insertion (chosen
    1 2 3 4 [9] 5 6 7 against 1 2 3 4 5 6 7) keeps every weight at 1."""
    chosen, rejected = [1, 2, 3, 4, 9, 9, 5, 6, 7], [1, 2, 3, 4, 8, 5, 6, 7]
    chosen_w, rejected_w = dense_token_weights(chosen, rejected, 5.0)
    assert chosen_w == [1.0, 1.0, 1.0, 1.0, 5.0, 5.0, 1.0, 1.0, 1.0]
    assert rejected_w == [1.0, 1.0, 1.0, 1.0, 5.0, 1.0, 1.0, 1.0]
    inserted, original = [1, 2, 3, 4, 9, 5, 6, 7], [1, 2, 3, 4, 5, 6, 7]
    assert dense_token_weights(inserted, original, 5.0) == ([1.0] * 8, [1.0] * 7)
    assert dense_token_weights(original, inserted, 5.0) == ([1.0] * 7, [1.0] * 8)
    assert dense_token_weights([4, 5, 6], [4, 5, 6], 5.0) == ([1.0] * 3, [1.0] * 3)


def test_dense_token_weights_short_matches_count_as_changed():
    """chosen 1 2 3 [10 7 11] 4 5 6 vs rejected 1 2 3 [20 7 21] 4 5 6: the lone shared 7 is a
    1-token block. min_match = 3 drops it, so positions 3-5 are one replaced span (γ on 7 too);
    min_match = 1 keeps it, leaving γ on positions 3 and 5 only. Both sides agree (symmetric)."""
    chosen, rejected = [1, 2, 3, 10, 7, 11, 4, 5, 6], [1, 2, 3, 20, 7, 21, 4, 5, 6]
    wide = [1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 1.0, 1.0, 1.0]
    assert dense_token_weights(chosen, rejected, 2.0) == (wide, wide)
    narrow = [1.0, 1.0, 1.0, 2.0, 1.0, 2.0, 1.0, 1.0, 1.0]
    assert dense_token_weights(chosen, rejected, 2.0, min_match=1) == (narrow, narrow)
    # swapping the roles swaps the weights
    a, b = [1, 2, 3, 4, 9, 9, 5, 6, 7], [1, 2, 3, 4, 8, 5, 6, 7]
    assert dense_token_weights(b, a, 3.0) == dense_token_weights(a, b, 3.0)[::-1]
    with pytest.raises(ValueError, match="min_match >= 1"):
        dense_token_weights(chosen, rejected, 2.0, min_match=0)
