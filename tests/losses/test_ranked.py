"""Closed-form values and identities of the ranked losses: all_pairs, all_pairs_free, plackett_luce.

Each test's docstring gives the derivation of the expected number. Ranked inputs are (B, K).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from alignlab.errors import ConfigError
from alignlab.losses import reward  # noqa: F401  (registers bradley_terry, a non-paired loss)
from alignlab.losses.contract import register_loss
from alignlab.losses.dpo import dpo
from alignlab.losses.ranked import all_pairs, all_pairs_free, plackett_luce
from alignlab.registry import LOSSES

FREE = "_test_free_mean_pair"


def t(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def ell(z: float) -> float:
    """−log σ(z) = log(1 + e^−z)."""
    return math.log1p(math.exp(-z))


def everyone(shape: tuple[int, int]) -> torch.Tensor:
    return torch.ones(shape, dtype=torch.bool)


@pytest.fixture
def free_pair_loss():
    """A reference-free paired loss on token means (SimPO with γ = 0), registered for one test:
    L = −log σ(β (A_w − A_l)). The registry has no unregister, so teardown removes the entry."""

    @register_loss(FREE, needs_ref=False, logps="mean", data="paired", paper="test",
                   equation="test")
    def free(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, *, beta: float = 1.0):
        return -F.logsigmoid(beta * (policy_chosen - policy_rejected)), {}

    yield FREE
    del LOSSES._entries[FREE]


def test_all_pairs_k2_equals_the_paired_loss():
    """K = 2: the one valid pair is (higher score, lower score), so each row is DPO on it; row 1
    lists the better response second. Pair metrics are the paired loss's own."""
    policy, ref = t([-10.0, -20.0], [-20.0, -10.0]), t([-12.0, -19.0], [-19.0, -12.0])
    scores = t([1.0, 0.0], [0.0, 1.0])
    lengths = t([5.0, 5.0], [5.0, 5.0])
    losses, metrics = all_pairs(policy, ref, lengths, scores, everyone((2, 2)),
                                pair_kwargs={"beta": 0.5})
    expected, dpo_metrics = dpo(*(torch.tensor([v, v], dtype=torch.float64)
                                  for v in (-10.0, -20.0, -12.0, -19.0)), beta=0.5)
    assert losses.tolist() == pytest.approx(expected.tolist(), abs=1e-12)
    assert losses.tolist() == pytest.approx([ell(1.5)] * 2, abs=1e-12)
    assert metrics["pairs"].tolist() == [1.0, 1.0]
    margins = dpo_metrics["rewards/margins"].tolist()
    assert metrics["rewards/margins"].tolist() == pytest.approx(margins, abs=1e-12)


def test_all_pairs_k3_is_the_mean_of_three_dpo_losses():
    """β = 0.5, ρ = policy − ref = (2, −1, −3), scores (3, 2, 1): pairs (0,1), (0,2), (1,2) with
    βΔ = 1.5, 2.5, 1.0 ⇒ L = [ℓ(1.5) + ℓ(2.5) + ℓ(1.0)]/3, ℓ(z) = log(1 + e^−z).
    Scores (1, 3, 2) rank 1 ≻ 2 ≻ 0 instead: βΔ = 0.5·(−1 − 2), 0.5·(−1 + 3), 0.5·(−3 − 2)."""
    policy, ref = t([-10.0, -14.0, -20.0]), t([-12.0, -13.0, -17.0])
    lengths = t([4.0, 4.0, 4.0])
    losses, metrics = all_pairs(policy, ref, lengths, t([3.0, 2.0, 1.0]), everyone((1, 3)))
    assert metrics["pairs"].item() == 3.0
    beta = 0.1  # DPO's default reaches the pair loss when pair_kwargs is None
    expected = (ell(beta * 3) + ell(beta * 5) + ell(beta * 2)) / 3
    assert losses.item() == pytest.approx(expected, abs=1e-12)
    losses, _ = all_pairs(policy, ref, lengths, t([3.0, 2.0, 1.0]), everyone((1, 3)),
                          pair_kwargs={"beta": 0.5})
    assert losses.item() == pytest.approx((ell(1.5) + ell(2.5) + ell(1.0)) / 3, abs=1e-12)
    losses, _ = all_pairs(policy, ref, lengths, t([1.0, 3.0, 2.0]), everyone((1, 3)),
                          pair_kwargs={"beta": 0.5})
    assert losses.item() == pytest.approx((ell(-1.5) + ell(1.0) + ell(-2.5)) / 3, abs=1e-12)


def test_all_pairs_skips_ties_and_missing_responses():
    """Row 0, scores (2, 2, 1): the tie (0, 1) is skipped ⇒ mean over (0,2), (1,2) of DPO.
    Row 1, response 1 missing (its log-probs NaN, to prove they never enter): only (0, 2).
    Row 2, all tied; row 3, one response: no valid pair ⇒ loss 0, ``pairs`` 0, gradient finite.
    β = 1, ρ = (2, −1, −3) in every row."""
    nan = float("nan")
    row_policy, row_ref = [-10.0, -14.0, -20.0], [-12.0, -13.0, -17.0]
    policy = t(row_policy, [-10.0, nan, -20.0], row_policy, row_policy).requires_grad_(True)
    ref = t(row_ref, [-12.0, nan, -17.0], row_ref, row_ref)
    scores = t([2.0, 2.0, 1.0], [3.0, 2.0, 1.0], [1.0, 1.0, 1.0], [3.0, 2.0, 1.0])
    mask = torch.tensor([[True] * 3, [True, False, True], [True] * 3, [True, False, False]])
    lengths = torch.full((4, 3), 3.0, dtype=torch.float64)
    losses, metrics = all_pairs(policy, ref, lengths, scores, mask, pair_kwargs={"beta": 1.0})
    expected = [(ell(5.0) + ell(2.0)) / 2, ell(5.0), 0.0, 0.0]
    assert losses.tolist() == pytest.approx(expected, abs=1e-12)
    assert metrics["pairs"].tolist() == [2.0, 1.0, 0.0, 0.0]
    losses.sum().backward()
    assert bool(torch.isfinite(policy.grad).all())
    assert policy.grad[2].abs().sum().item() == 0.0


def test_all_pairs_converts_sums_to_token_means_for_mean_losses():
    """ipo_mean (logps="mean") receives S/|y|: policy (−10, −30), ref (−15, −20), lengths (5, 10)
    ⇒ ρ̄ = (5/5, −10/10) = (1, −1), Δ̄ = 2; τ = 0.5 ⇒ (Δ̄ − 1/(2τ))² = (2 − 1)² = 1."""
    losses, _ = all_pairs(t([-10.0, -30.0]), t([-15.0, -20.0]), t([5.0, 10.0]), t([1.0, 0.0]),
                          everyone((1, 2)), pair_loss="ipo_mean", pair_kwargs={"beta": 0.5})
    assert losses.item() == pytest.approx(1.0, abs=1e-12)


def test_all_pairs_free_with_a_reference_free_mean_loss(free_pair_loss):
    """Token means A = S/|y| = (−10/5, −30/10) = (−2, −3); β = 1 ⇒ −log σ(1) = ℓ(1)."""
    losses, metrics = all_pairs_free(t([-10.0, -30.0]), t([5.0, 10.0]), t([1.0, 0.0]),
                                     everyone((1, 2)), pair_loss=free_pair_loss)
    assert losses.item() == pytest.approx(ell(1.0), abs=1e-12)
    assert metrics["pairs"].item() == 1.0


def test_all_pairs_errors_name_the_fix(free_pair_loss):
    """A pair loss of the wrong kind is refused with the loss to use instead."""
    args = (t([-1.0, -2.0]), t([-1.0, -2.0]), t([1.0, 1.0]), t([1.0, 0.0]), everyone((1, 2)))
    with pytest.raises(ConfigError, match="'all_pairs_free'"):
        all_pairs(*args, pair_loss=free_pair_loss)
    with pytest.raises(ConfigError, match="'all_pairs'"):
        all_pairs_free(args[0], *args[2:], pair_loss="dpo")
    with pytest.raises(ConfigError, match="paired loss on sequence log-probs"):
        all_pairs(*args, pair_loss="bradley_terry")  # data="reward"
    with pytest.raises(ConfigError, match="Did you mean 'beta'"):
        all_pairs(*args, pair_kwargs={"bta": 0.5})
    with pytest.raises(ConfigError, match="unknown loss"):
        all_pairs(*args, pair_loss="no_such_loss")


def test_plackett_luce_k2_equals_dpo():
    """K = 2: −log[e^{s_w}/(e^{s_w} + e^{s_l})] − log 1 = −log σ(s_w − s_l) = DPO, whichever
    column holds the better response."""
    policy, ref = t([-10.0, -20.0], [-20.0, -10.0]), t([-12.0, -19.0], [-19.0, -12.0])
    losses, _ = plackett_luce(policy, ref, t([1.0, 0.0], [0.0, 1.0]), everyone((2, 2)), beta=0.5)
    expected, _ = dpo(*(torch.tensor([v, v], dtype=torch.float64)
                        for v in (-10.0, -20.0, -12.0, -19.0)), beta=0.5)
    assert losses.tolist() == pytest.approx(expected.tolist(), abs=1e-12)


def test_plackett_luce_k3_by_hand_and_shift_invariance():
    """β = 0.5, ρ = (2, −1, −3) ⇒ s = (1, −0.5, −1.5); scores (1, 3, 2) ⇒ τ = (1, 2, 0), so the
    ordered s are (−0.5, −1.5, 1):
    L = −[−0.5 − log(e^−0.5 + e^−1.5 + e^1)] − [−1.5 − log(e^−1.5 + e^1)] − [1 − log e^1].
    Adding a constant to every s (to every policy log-prob) leaves each ratio, and L, unchanged."""
    policy, ref, scores = t([-10.0, -14.0, -20.0]), t([-12.0, -13.0, -17.0]), t([1.0, 3.0, 2.0])
    losses, metrics = plackett_luce(policy, ref, scores, everyone((1, 3)), beta=0.5)
    e = math.exp
    expected = (0.5 + math.log(e(-0.5) + e(-1.5) + e(1))) + (1.5 + math.log(e(-1.5) + e(1)))
    assert losses.item() == pytest.approx(expected, abs=1e-12)
    assert metrics["rewards/top1_accuracy"].item() == 0.0  # highest s = response 0, top score = 1
    shifted, _ = plackett_luce(policy + 37.0, ref, scores, everyone((1, 3)), beta=0.5)
    assert shifted.item() == pytest.approx(expected, abs=1e-12)


def test_plackett_luce_missing_responses_and_ties():
    """Response 1 absent (NaN log-probs): the list is (0 ≻ 2), i.e. DPO on (0, 2): β = 0.5,
    Δ = 2 − (−3) = 5 ⇒ ℓ(2.5). Tied scores (1, 1) keep input order: column 0 wins, ℓ(1.5).
    A row with no response has loss 0. Gradients stay finite."""
    nan = float("nan")
    policy = t([-10.0, nan, -20.0], [-10.0, -14.0, -20.0], [nan, nan, nan]).requires_grad_(True)
    ref = t([-12.0, nan, -17.0], [-12.0, -13.0, -17.0], [nan, nan, nan])
    scores = t([3.0, 2.0, 1.0], [1.0, 1.0, 0.0], [1.0, 2.0, 3.0])
    mask = torch.tensor([[True, False, True], [True, True, False], [False] * 3])
    losses, _ = plackett_luce(policy, ref, scores, mask, beta=0.5)
    assert losses.tolist() == pytest.approx([ell(2.5), ell(1.5), 0.0], abs=1e-12)
    losses.sum().backward()
    assert bool(torch.isfinite(policy.grad).all())


def test_plackett_luce_gradient_raises_the_best_lowers_the_worst():
    """∂L/∂s_τ(1) = −(1 − softmax share) < 0; the last-ranked appears only in denominators, so its
    gradient is positive."""
    policy = t([-10.0, -14.0, -20.0]).requires_grad_(True)
    ref, scores = t([-12.0, -13.0, -17.0]), t([3.0, 2.0, 1.0])
    losses, _ = plackett_luce(policy, ref, scores, everyone((1, 3)))
    losses.sum().backward()
    assert policy.grad[0, 0].item() < 0 < policy.grad[0, 2].item()


def test_ranked_losses_finite_for_extreme_and_bf16_inputs():
    """Log-probs of ±1e4 and bf16 give finite losses for all three losses."""
    for dtype in (torch.float32, torch.bfloat16):
        policy = torch.tensor([[-1e4, 1e4, 0.0]], dtype=dtype)
        ref = torch.tensor([[1e4, -1e4, -1e4]], dtype=dtype)
        lengths = torch.tensor([[1.0, 1e4, 3.0]], dtype=dtype)
        scores, mask = torch.tensor([[3.0, 2.0, 1.0]], dtype=dtype), everyone((1, 3))
        assert bool(torch.isfinite(all_pairs(policy, ref, lengths, scores, mask)[0]).all())
        assert bool(torch.isfinite(plackett_luce(policy, ref, scores, mask)[0]).all())
