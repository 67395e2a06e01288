"""Closed-form values and identities of the reference-free losses: SimPO (Meng et al. 2024), CPO
(Xu et al. 2024), ORPO (Hong et al. 2024) and AFT (Wang et al. 2023, arXiv 2309.02144; its constraint
forms unverified). Each test's docstring gives the derivation of the expected number.
"""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch

from alignlab.losses.dpo import dpo
from alignlab.losses.reference_free import AFT_CONSTRAINTS, aft, cpo, orpo, simpo
from alignlab.registry import LOSSES

LOG2 = math.log(2)


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def softplus(z: float) -> float:
    return math.log1p(math.exp(z))


def sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


# --- SimPO -------------------------------------------------------------------------------------

def test_simpo_equal_means_keeps_pushing():
    """A_w = A_l ⇒ L = −log σ(−γ) = log(1 + e^γ): log(1 + e^0.5) > log 2 for γ = 0.5, log 2 for γ = 0."""
    assert simpo(t(-0.9), t(-0.9))[0].item() == pytest.approx(softplus(0.5), abs=1e-12)
    assert simpo(t(-0.9), t(-0.9), gamma=0.0)[0].item() == pytest.approx(LOG2, abs=1e-12)


def test_simpo_closed_form_and_trl_form():
    """A_w = −0.8, A_l = −1.3, β = 2, γ = 0.5: z = 2·0.5 − 0.5 = 0.5, L = log(1 + e^−0.5).

    TRL's form −log σ(β (A_w − A_l − γ/β)) = −log σ(2·(0.5 − 0.25)) is the same z. Rewards β·A.
    """
    losses, metrics = simpo(t(-0.8), t(-1.3), beta=2.0, gamma=0.5)
    assert losses.item() == pytest.approx(softplus(-0.5), abs=1e-12)
    assert losses.item() == pytest.approx(softplus(-2.0 * (0.5 - 0.5 / 2.0)), abs=1e-12)
    assert metrics["rewards/chosen"].item() == pytest.approx(-1.6)
    assert metrics["rewards/margins"].item() == pytest.approx(1.0)


def test_simpo_gradient():
    """∂L/∂A_w = −β σ(−z), ∂L/∂A_l = +β σ(−z); z = 0.5, β = 2 ⇒ ∓2σ(−0.5)."""
    chosen, rejected = t(-0.8).requires_grad_(), t(-1.3).requires_grad_()
    simpo(chosen, rejected, beta=2.0, gamma=0.5)[0].sum().backward()
    assert chosen.grad.item() == pytest.approx(-2 * sigmoid(-0.5), abs=1e-12)
    assert rejected.grad.item() == pytest.approx(2 * sigmoid(-0.5), abs=1e-12)


# --- CPO ---------------------------------------------------------------------------------------

def test_cpo_closed_form():
    """S_w = −10, S_l = −20, |y_w| = 4, β = 0.1, α = 1: L = log(1 + e^−1) + 10/4."""
    losses, metrics = cpo(t(-10.0), t(-20.0), t(4.0))
    assert losses.item() == pytest.approx(softplus(-1.0) + 2.5, abs=1e-12)
    assert metrics["nll"].item() == pytest.approx(2.5, abs=1e-12)
    assert metrics["rewards/chosen"].item() == pytest.approx(-1.0)


def test_cpo_alpha_zero_is_dpo_without_reference_and_nll_gradient():
    """α = 0 is DPO with πref uniform (ref log-probs 0). The NLL adds −α/|y_w| to ∂L/∂S_w:

    ∂L/∂S_w = −β σ(−β ΔS) − α/|y_w| = −0.1 σ(−1) − 1/4.
    """
    args = t(-10.0), t(-20.0)
    zeros = t(0.0), t(0.0)
    assert cpo(*args, t(4.0), alpha=0.0)[0].item() == pytest.approx(dpo(*args, *zeros)[0].item(), abs=1e-12)
    chosen = t(-10.0).requires_grad_()
    cpo(chosen, t(-20.0), t(4.0))[0].sum().backward()
    assert chosen.grad.item() == pytest.approx(-0.1 * sigmoid(-1.0) - 0.25, abs=1e-12)


# --- ORPO --------------------------------------------------------------------------------------

def test_orpo_equal_means_or_term_is_lambda_log2():
    """A_w = A_l ⇒ log-odds difference 0 ⇒ −λ log σ(0) = λ log 2; L = −A_w + λ log 2."""
    for lam in (0.1, 1.0):
        losses, metrics = orpo(t(-0.7), t(-0.7), lambda_=lam)
        assert losses.item() == pytest.approx(0.7 + lam * LOG2, abs=1e-12)
        assert metrics["log_odds_chosen"].item() == pytest.approx(0.0, abs=1e-12)


def test_orpo_closed_form():
    """A_w = log ½ ⇒ odds 1; A_l = log ⅕ ⇒ odds ¼; log-odds difference log 4, σ(log 4) = 4/5.

    L = −log ½ − λ log(4/5) = log 2 + λ log(5/4).
    """
    losses, metrics = orpo(t(math.log(0.5)), t(math.log(0.2)), lambda_=0.1)
    assert losses.item() == pytest.approx(LOG2 + 0.1 * math.log(1.25), abs=1e-12)
    assert metrics["log_odds_chosen"].item() == pytest.approx(math.log(4.0), abs=1e-12)
    assert metrics["log_odds_ratio"].item() == pytest.approx(math.log(0.8), abs=1e-12)
    assert metrics["nll"].item() == pytest.approx(LOG2, abs=1e-12)


def test_orpo_log_odds_matches_naive_formula_on_both_branches():
    """Away from 0, log odds = A − log1p(−e^A) exactly (TRL's form): both log1mexp branches
    (A > −log 2 and below) and the switch point A = −log 2, where odds = 1 and log odds = 0."""
    for a in (-0.01, -0.5, -LOG2, -0.7, -3.0, -40.0):
        metrics = orpo(t(a), t(-1.0))[1]
        assert metrics["log_odds_chosen"].item() == pytest.approx(
            (a - math.log1p(-math.exp(a))) - (-1.0 - math.log1p(-math.exp(-1.0))), abs=1e-12)


def test_orpo_finite_at_zero_mean_logprob():
    """A = 0 (P = 1) has infinite odds; A is clamped to −1e-6 for the odds term, so
    log odds = −1e-6 − log(−expm1(−1e-6)) ≈ 13.8, the OR term has zero gradient and the NLL's
    gradient −1 remains: ∂L/∂A_w = −1 at A_w = 0 and at A_w = −1e-12."""
    capped = -1e-6 - math.log(-math.expm1(-1e-6))
    for a in (0.0, -1e-12):
        chosen = t(a).requires_grad_()
        losses, metrics = orpo(chosen, t(math.log(0.5)), lambda_=0.1)
        losses.sum().backward()
        assert metrics["log_odds_chosen"].item() == pytest.approx(capped, abs=1e-9)
        assert losses.item() == pytest.approx(-a + 0.1 * softplus(-capped), abs=1e-12)
        assert chosen.grad.item() == pytest.approx(-1.0, abs=1e-12)


def test_orpo_log_odds_accurate_in_float32_near_zero():
    """A = −1e-5 in float32: log(−expm1(A)) keeps ~7 digits of log(1 − e^A) ≈ log(1e-5), while the
    naive log1p(−exp(A)) loses ~3 of them (e^A sits 170 float32 steps below 1). Expected value in
    float64: A − log(−expm1(A)) ≈ 11.5129."""
    a = -1e-5
    metrics = orpo(torch.tensor([a]), torch.tensor([math.log(0.5)]))[1]
    assert metrics["log_odds_chosen"].item() == pytest.approx(a - math.log(-math.expm1(a)), abs=1e-5)


# --- AFT ---------------------------------------------------------------------------------------

def ranked(s: list[float], scores: list[float], mask: list[bool] | None = None) -> tuple[torch.Tensor, ...]:
    mask = [True] * len(s) if mask is None else mask
    return (torch.tensor([s], dtype=torch.float64, requires_grad=True),
            torch.tensor([scores], dtype=torch.float64), torch.tensor([mask]))


def test_aft_one_pair_is_softplus():
    """One positive (s_p = −1.2), one negative (s_n = −0.7): L_A = softplus(s_n − s_p) =
    log(1 + e^0.5) for "none", "detached" and "boundary" (0.5 > −τ); "boundary_threshold" adds
    log(1 + e^(T − s_n)), T = s_p − B = −2.2, i.e. log(1 + e^−1.5)."""
    for constraint in ("none", "detached", "boundary"):
        losses, metrics = aft(*ranked([-1.2, -0.7], [1, 0]), constraint=constraint)
        assert losses.item() == pytest.approx(softplus(0.5), abs=1e-12)
        assert metrics["pairs"].item() == 1 and metrics["pair_accuracy"].item() == 0.0
    losses, metrics = aft(*ranked([-1.2, -0.7], [1, 0]), constraint="boundary_threshold", boundary=1.0)
    assert losses.item() == pytest.approx(softplus(0.5) + softplus(-1.5), abs=1e-12)
    assert metrics["constraint_term"].item() == pytest.approx(softplus(-1.5), abs=1e-12)


def test_aft_detached_stops_the_negative_gradient():
    """d = s_n − s_p = 0.5. "none": ∂L/∂s_p = −σ(d), ∂L/∂s_n = +σ(d) (negatives pushed down).
    "detached": ∂L/∂s_n = 0 and ∂L/∂s_p = −σ(d) unchanged."""
    for constraint, negative_grad in (("none", sigmoid(0.5)), ("detached", 0.0)):
        s, scores, mask = ranked([-1.2, -0.7], [1, 0])
        aft(s, scores, mask, constraint=constraint)[0].sum().backward()
        assert s.grad[0, 0].item() == pytest.approx(-sigmoid(0.5), abs=1e-12)
        assert s.grad[0, 1].item() == pytest.approx(negative_grad, abs=1e-12)


def test_aft_boundary_stops_pushing_past_tau():
    """s_p − s_n = 1.5 > τ = 1: max(s_n − s_p, −τ) = −1, L = log(1 + e^−1), gradient 0.
    Inside the boundary (s_p − s_n = 0.5) the gradient is the unconstrained one, ∓σ(−0.5)."""
    s, scores, mask = ranked([-1.0, -2.5], [1, 0])
    losses, _ = aft(s, scores, mask, constraint="boundary", tau=1.0)
    losses.sum().backward()
    assert losses.item() == pytest.approx(softplus(-1.0), abs=1e-12)
    assert s.grad.abs().max().item() == 0.0
    s, scores, mask = ranked([-1.0, -1.5], [1, 0])
    aft(s, scores, mask, constraint="boundary", tau=1.0)[0].sum().backward()
    assert s.grad[0].tolist() == pytest.approx([-sigmoid(-0.5), sigmoid(-0.5)], abs=1e-12)


def test_aft_binary_and_ranked_by_hand():
    """Binary, scores [1, 0, 1, 0], s = [−1, −2, −1.5, −0.5]: pairs (p, n) ∈ {0, 2} × {1, 3},
    s_n − s_p = −1, 0.5, −0.5, 1 ⇒ L = log(1 + e^−1 + e^0.5 + e^−0.5 + e^1); 2 of 4 pairs right.

    Ranked, scores [2, 3, 1] (response 1 best, order by score not position), s = [−2, −1, −0.5]:
    pairs (1≻0): −2 + 1 = −1; (1≻2): −0.5 + 1 = 0.5; (0≻2): −0.5 + 2 = 1.5
    ⇒ L = log(1 + e^−1 + e^0.5 + e^1.5); 1 of 3 pairs right.
    """
    losses, metrics = aft(*ranked([-1.0, -2.0, -1.5, -0.5], [1, 0, 1, 0]), constraint="none")
    expected = math.log(1 + sum(math.exp(d) for d in (-1.0, 0.5, -0.5, 1.0)))
    assert losses.item() == pytest.approx(expected, abs=1e-12)
    assert metrics["pairs"].item() == 4 and metrics["pair_accuracy"].item() == 0.5
    losses, metrics = aft(*ranked([-2.0, -1.0, -0.5], [2, 3, 1]), constraint="none")
    expected = math.log(1 + math.exp(-1.0) + math.exp(0.5) + math.exp(1.5))
    assert losses.item() == pytest.approx(expected, abs=1e-12)
    assert metrics["pairs"].item() == 3 and metrics["pair_accuracy"].item() == pytest.approx(1 / 3)


def test_aft_boundary_threshold_by_hand():
    """Positives s = −1, −2, negative s_n = −4, B = 1: T = min(−1, −2) − 1 = −3.
    L_A = log(1 + e^−3 + e^−2); constraint log(1 + e^(T − s_n)) = log(1 + e^1).
    ∂/∂s_n of the constraint is −σ(T − s_n) (it raises the negative), and the L_A part gives
    +(e^−3 + e^−2)/(1 + e^−3 + e^−2)."""
    s, scores, mask = ranked([-1.0, -2.0, -4.0], [1, 1, 0])
    losses, _ = aft(s, scores, mask, constraint="boundary_threshold", boundary=1.0)
    losses.sum().backward()
    total = math.exp(-3.0) + math.exp(-2.0)
    assert losses.item() == pytest.approx(math.log1p(total) + softplus(1.0), abs=1e-12)
    assert s.grad[0, 2].item() == pytest.approx(total / (1 + total) - sigmoid(1.0), abs=1e-12)


def test_aft_mask_ties_and_prompts_without_pairs():
    """A masked response (NaN log-prob) is ignored: [s_p, NaN, s_n] equals the one-pair case.
    All-equal scores (every CoT correct) give no pair: L = log(1 + 0) = 0 with zero, finite gradient."""
    s, scores, mask = ranked([-1.2, float("nan"), -0.7], [1, 1, 0], [True, False, True])
    losses, _ = aft(s, scores, mask)
    losses.sum().backward()
    assert losses.item() == pytest.approx(softplus(0.5), abs=1e-12)
    assert bool(torch.isfinite(s.grad).all())
    for constraint in ("none", "boundary_threshold"):
        s, scores, mask = ranked([-1.0, -2.0, -3.0], [1, 1, 1])
        losses, metrics = aft(s, scores, mask, constraint=constraint)
        losses.sum().backward()
        assert losses.item() == 0.0 and metrics["pairs"].item() == 0
        assert s.grad.abs().max().item() == 0.0


def test_aft_errors():
    with pytest.raises(ValueError, match="unknown constraint 'detach'"):
        aft(*ranked([-1.0, -2.0], [1, 0]), constraint="detach")
    with pytest.raises(ValueError, match=r"must all be \(B, K\)"):
        aft(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2, 2, dtype=torch.bool))


# --- all losses --------------------------------------------------------------------------------

def aft_as_pair(chosen: torch.Tensor, rejected: torch.Tensor, constraint: str) -> tuple:
    """AFT with K = 2 per prompt: chosen correct (score 1), rejected wrong (score 0)."""
    scores = torch.tensor([[1, 0]] * len(chosen))
    return aft(torch.stack([chosen, rejected], dim=1), scores, torch.ones_like(scores, dtype=torch.bool),
               constraint=constraint)


CASES = {
    "simpo": simpo,
    "cpo": lambda a, b: cpo(a, b, torch.full_like(a, 3.0)),
    "orpo": orpo,
    **{f"aft_{c}": partial(aft_as_pair, constraint=c) for c in AFT_CONSTRAINTS},
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_finite_for_extreme_and_bf16_inputs(name: str, dtype: torch.dtype):
    """Log-probs ±1e4 (and 0, the ORPO edge) in float32 and bf16: finite losses and gradients."""
    values = [(1e4, -1e4), (-1e4, 1e4), (0.0, -1e4), (0.0, 0.0), (-1e4, -1e4), (-0.3, -1.1)]
    a = torch.tensor([v[0] for v in values], dtype=dtype, requires_grad=True)
    b = torch.tensor([v[1] for v in values], dtype=dtype, requires_grad=True)
    losses, metrics = CASES[name](a, b)
    losses.sum().backward()
    assert losses.shape == (len(values),)
    assert bool(torch.isfinite(losses).all()) and bool(torch.isfinite(a.grad).all())
    assert bool(torch.isfinite(b.grad).all())
    assert all(not m.requires_grad for m in metrics.values())


def test_contracts():
    """Reference-free contracts, the paper defaults, and AFT marked unverified."""
    expected = {
        "simpo": ("mean", "paired", True, ("policy_chosen", "policy_rejected"), {"beta": 2.0, "gamma": 0.5}),
        "cpo": ("sum", "paired", True, ("policy_chosen", "policy_rejected", "chosen_lengths"),
                {"beta": 0.1, "alpha": 1.0}),
        "orpo": ("mean", "paired", True, ("policy_chosen", "policy_rejected"), {"lambda_": 0.1}),
        "aft": ("mean", "ranked", False, ("policy", "scores", "response_mask"),
                {"constraint": "detached", "tau": 1.0, "boundary": 1.0}),
    }
    for name, (logps, data, verified, inputs, hyper) in expected.items():
        contract = LOSSES.get(name).contract
        assert contract.needs_ref is False
        assert (contract.logps, contract.data, contract.verified) == (logps, data, verified)
        assert contract.inputs == inputs
        assert {h.name: h.default for h in contract.hyperparameters} == hyper
