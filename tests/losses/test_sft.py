"""Closed-form values and identities of the SFT and unlearning losses (NLL; PoFT, Fan et al. 2025,
§3; gradient ascent; NPO). Each test's docstring gives the derivation of the expected number.
"""

from __future__ import annotations

import math

import pytest
import torch

from alignlab.losses.sft import gradient_ascent, nll, npo, poft
from alignlab.registry import LOSSES

LOG2 = math.log(2)


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def token_logps(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits (B=2, T=4, V=5) with grad, per-token log-probs of fixed targets, and a ragged mask."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 4, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([[1, 0, 3, 2], [4, 4, 1, 0]])
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    tokens = logits.log_softmax(-1).gather(-1, targets[..., None]).squeeze(-1)  # (B, T)
    return logits, tokens, mask


# --- NLL ---------------------------------------------------------------------------------------

def test_nll_token_mean():
    """Row 1: log-probs log ½, log ¼ on the mask, −99 off it: L = (log 2 + log 4)/2 = 1.5 log 2.
    Row 2: no completion token: L = 0. Row 3: one token log ⅛: L = 3 log 2 (each row its own mean).
    ∂L/∂log p_t = −1/n_b on the mask of row b, 0 off it."""
    tokens = torch.tensor([[math.log(0.5), math.log(0.25), -99.0], [-1.0, -2.0, -3.0],
                           [-5.0, math.log(0.125), float("nan")]], dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, True, False], [False, False, False], [False, True, False]])
    losses, metrics = nll(tokens, mask)
    losses.sum().backward()
    assert losses.tolist() == pytest.approx([1.5 * LOG2, 0.0, 3 * LOG2], abs=1e-12)
    assert metrics["completion_tokens"].tolist() == [2.0, 0.0, 1.0]
    assert tokens.grad.tolist() == [[-0.5, -0.5, 0.0], [0.0, 0.0, 0.0], [0.0, -1.0, 0.0]]


# --- PoFT --------------------------------------------------------------------------------------

def test_poft_closed_form():
    """r_θ = −1, r_j = −2, −0.5, −1.5 ⇒ r̄ = −4/3, r_θ − r̄ = 1/3: L = log(1 + e^(−1/3)),
    weight σ(r̄ − r_θ) = σ(−1/3)."""
    losses, metrics = poft(t(-1.0), t(-2.0, -0.5, -1.5)[None])
    assert losses.item() == pytest.approx(math.log1p(math.exp(-1 / 3)), abs=1e-12)
    assert metrics["weight"].item() == pytest.approx(sigmoid(-1 / 3), abs=1e-12)


def test_poft_gradient_is_weighted_cross_entropy():
    """r_θ = A(y) = −nll ⇒ ∇L_PoFT = σ(r̄ − r_θ) · ∇L_CE, on the logits of a real softmax."""
    logits, tokens, mask = token_logps()
    ce, _ = nll(tokens, mask)
    ce_grads = [torch.autograd.grad(ce[i], logits, retain_graph=True)[0] for i in range(2)]
    aligned = t(-1.0, -2.5, -0.2, -3.0, -1.1, -0.4).reshape(2, 3)
    losses, metrics = poft(-ce, aligned)
    for i in range(2):
        grad = torch.autograd.grad(losses[i], logits, retain_graph=True)[0]
        torch.testing.assert_close(grad, metrics["weight"][i] * ce_grads[i], rtol=0, atol=1e-12)
        assert 0 < metrics["weight"][i].item() < 1


def test_poft_limits():
    """r̄ = −1e4 ≪ r_θ: L = log(1 + e^−9999) = 0 and ∂L/∂r_θ = −σ(−9999) = 0.
    r̄ = 0 ≫ r_θ = −50: weight σ(50) ≈ 1, L = 50 + log(1 + e^−50), ∂L/∂r_θ = −1 (cross-entropy)."""
    policy = t(-1.0).requires_grad_()
    losses, _ = poft(policy, t(-1e4, -1e4)[None])
    losses.sum().backward()
    assert losses.item() == 0.0 and policy.grad.item() == 0.0
    policy = t(-50.0).requires_grad_()
    losses, _ = poft(policy, t(0.0, 0.0)[None])
    losses.sum().backward()
    assert losses.item() == pytest.approx(50 + math.log1p(math.exp(-50)), abs=1e-12)
    assert policy.grad.item() == pytest.approx(-1.0, abs=1e-12)


def test_poft_permutation_invariant():
    """L depends on the aligned LLMs only through their mean: any column order, same loss."""
    aligned = t(-1.0, -2.5, -0.25, -3.0, -1.125, -0.5).reshape(2, 3)
    base, _ = poft(t(-1.0, -2.0), aligned)
    for order in ([2, 0, 1], [1, 2, 0], [2, 1, 0]):
        torch.testing.assert_close(poft(t(-1.0, -2.0), aligned[:, order])[0], base, rtol=0, atol=1e-12)


# --- gradient ascent ---------------------------------------------------------------------------

def test_gradient_ascent_is_negated_nll():
    """L = A(y) = −NLL: on token-mean inputs it equals −nll(tokens), and ∂L/∂A = +1 (minimising
    lowers the forget set's likelihood)."""
    logits, tokens, mask = token_logps(seed=1)
    mean_logp = (tokens * mask).sum(-1) / mask.sum(-1)
    losses, metrics = gradient_ascent(mean_logp)
    torch.testing.assert_close(losses, -nll(tokens, mask)[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(metrics["nll"], nll(tokens, mask)[0].detach(), rtol=0, atol=1e-12)
    policy = t(-2.0, -0.5).requires_grad_()
    gradient_ascent(policy)[0].sum().backward()
    assert policy.grad.tolist() == [1.0, 1.0]


# --- NPO ---------------------------------------------------------------------------------------

def test_npo_at_init_is_two_over_beta_log2():
    """πθ = πref ⇒ ρ = 0 ⇒ L = (2/β) log(1 + 1) = (2/β) log 2; weight 2σ(0) = 1."""
    for beta in (0.05, 0.1, 1.0):
        losses, metrics = npo(t(-30.0), t(-30.0), beta=beta)
        assert losses.item() == pytest.approx(2 / beta * LOG2, abs=1e-12)
        assert metrics["weight"].item() == 1.0


def test_npo_closed_form_and_reference_dependence():
    """S_θ = −10, S_ref = −13 ⇒ ρ = 3, β = 0.5: L = (2/0.5) log(1 + e^1.5) = 4 log(1 + e^1.5).
    A different reference (S_ref = −10) gives ρ = 0 and L = 4 log 2."""
    assert npo(t(-10.0), t(-13.0), beta=0.5)[0].item() == pytest.approx(4 * math.log1p(math.exp(1.5)), abs=1e-12)
    assert npo(t(-10.0), t(-10.0), beta=0.5)[0].item() == pytest.approx(4 * LOG2, abs=1e-12)


def test_npo_gradient_approaches_gradient_ascent():
    """∂L/∂S_θ = 2σ(βρ) = −∂L/∂S_ref. At ρ = 0 it is 1 for every β, as gradient ascent on summed
    log-probs (L = S_θ). For β → 0 it is 1 at any ρ: β = 1e-8, ρ = 5 gives 2σ(5e-8) = 1 + 2.5e-8."""
    for beta, rho in ((0.05, 0.0), (0.1, 0.0), (2.0, 0.0), (0.5, 3.0), (1e-8, 5.0)):
        policy, ref = t(-20.0 + rho).requires_grad_(), t(-20.0).requires_grad_()
        npo(policy, ref, beta=beta)[0].sum().backward()
        assert policy.grad.item() == pytest.approx(2 * sigmoid(beta * rho), abs=1e-12)
        assert ref.grad.item() == pytest.approx(-2 * sigmoid(beta * rho), abs=1e-12)
    assert 2 * sigmoid(1e-8 * 5.0) == pytest.approx(1.0, abs=1e-7)
    with pytest.raises(ValueError, match="beta > 0"):
        npo(t(-1.0), t(-1.0), beta=0.0)


# --- all losses --------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_finite_for_extreme_and_bf16_inputs(dtype: torch.dtype):
    """Log-probs ±1e4 in float32 and bf16: every loss and gradient finite, metrics detached."""
    a = torch.tensor([1e4, -1e4, 0.0, -1e4], dtype=dtype, requires_grad=True)
    b = torch.tensor([-1e4, 1e4, 0.0, -1e4], dtype=dtype)
    tokens = torch.tensor([[1e4, -1e4, 5.0], [-1e4, -1e4, -1e4]], dtype=dtype, requires_grad=True)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    runs = [(nll(tokens, mask), tokens), (poft(a, torch.stack([b, b], dim=1)), a),
            (gradient_ascent(a), a), (npo(a, b), a)]
    for (losses, metrics), leaf in runs:
        leaf.grad = None
        losses.sum().backward()
        assert bool(torch.isfinite(losses).all()) and bool(torch.isfinite(leaf.grad).all())
        assert all(not m.requires_grad for m in metrics.values())


def test_contracts():
    """SFT-data contracts; only NPO needs the reference."""
    expected = {
        "nll": (False, "token", ("policy_tokens", "mask"), {}),
        "poft": (False, "mean", ("policy", "aligned_scores"), {}),
        "gradient_ascent": (False, "mean", ("policy",), {}),
        "npo": (True, "sum", ("policy", "ref"), {"beta": 0.1}),
    }
    for name, (needs_ref, logps, inputs, hyper) in expected.items():
        contract = LOSSES.get(name).contract
        assert (contract.needs_ref, contract.logps, contract.data) == (needs_ref, logps, "sft")
        assert contract.inputs == inputs and contract.verified is True
        assert {h.name: h.default for h in contract.hyperparameters} == hyper
