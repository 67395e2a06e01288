"""Ranking accuracy, its idealized bound, Thm 4.1 difficulty, the logged metrics (Chen et al. 2024,
Preference Learning Algorithms Do Not Learn Preference Rankings, arXiv 2405.19534).

Each test's docstring gives the derivation of the expected number.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import asdict

import pytest
import torch

from alignlab.eval.ranking import (
    MetricInputError,
    accuracy_by_source,
    alignment_gap,
    difficulty,
    hardest,
    idealized_ranking_accuracy,
    implicit_reward_accuracy,
    length_bias,
    optimum_log_ratio,
    per_source,
    ranking_accuracy,
    win_rate,
)
from alignlab.losses.dpo import dpo


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def softplus(x: torch.Tensor) -> torch.Tensor:
    """softplus(x) = log(1 + e^x) in the overflow-free form max(x, 0) + log1p(e^−|x|)."""
    return x.clamp(min=0) + torch.log1p(torch.exp(-x.abs()))


def test_ranking_accuracy_tie_rules_and_stderr():
    """Margins chosen − rejected = [1, 0, −2, 3]: 2 wins, 1 tie, 1 loss.

    half: (2 + 0.5)/4 = 0.625; correct (Chen Def. 2.3, ≥): 3/4; wrong: 2/4.
    stderr = sqrt(0.625·0.375/4). With tolerance 1 the margins 1 and 0 are both ties:
    (1 + 2·0.5)/4 = 0.5.
    """
    chosen, rejected = t(1, 2, 3, 4), t(0, 2, 5, 1)
    half = ranking_accuracy(chosen, rejected)
    assert (half.value, half.n, half.ties, half.tie_rule) == (0.625, 4, 1, "half")
    assert half.stderr == pytest.approx(math.sqrt(0.625 * 0.375 / 4), abs=1e-15)
    assert ranking_accuracy(chosen, rejected, ties="correct").value == 0.75
    assert ranking_accuracy(chosen, rejected, ties="wrong").value == 0.5
    loose = ranking_accuracy(chosen, rejected, tolerance=1.0)
    assert (loose.value, loose.ties) == (0.5, 2)


def test_ranking_accuracy_accepts_lists_and_float32():
    """Float32 inputs are scored in float64; a list is one value per pair. Margins [1, −1, 2]: 2/3.

    One tied pair: value 0.5, stderr sqrt(0.5·0.5/1) = 0.5.
    """
    chosen32 = torch.tensor([-1.0, -3.0, 0.5], dtype=torch.float32)
    rejected = [-2.0, -2.0, -1.5]
    assert ranking_accuracy(chosen32, rejected).value == pytest.approx(2 / 3, abs=1e-15)
    single_tie = ranking_accuracy([0.0], [0.0])  # 0.5 credit, stderr sqrt(0.5·0.5/1) = 0.5
    assert (single_tie.value, single_tie.stderr) == (0.5, 0.5)


def test_policy_equal_to_reference():
    """πθ = πref ⇒ every ρ = 0 ⇒ every implicit-reward margin is 0 ⇒ all ties ⇒ accuracy 0.5
    under "half" (TRL's margin > 0 would report 0, i.e. our "wrong"), margin quantiles all 0.

    Its ranking accuracy is the reference's: log πref margins [2, −1, 0.5, 3] ⇒ 3/4.
    """
    ref_w, ref_l = t(-10, -12, -7.5, -4), t(-12, -11, -8, -7)
    rewards = implicit_reward_accuracy(ref_w, ref_l, ref_w.clone(), ref_l.clone(), beta=0.1)
    assert rewards.accuracy == 0.5 and rewards.ties == 4
    assert rewards.margin_mean == 0.0 and set(rewards.margin_quantiles.values()) == {0.0}
    trl = implicit_reward_accuracy(ref_w, ref_l, ref_w, ref_l, beta=0.1, ties="wrong")
    assert trl.accuracy == 0.0
    policy = ranking_accuracy(ref_w.clone(), ref_l.clone())
    assert policy == ranking_accuracy(ref_w, ref_l)
    assert policy.value == 0.75


def test_implicit_reward_accuracy_closed_form():
    """β = 0.5, ρ_w = [2, 0, 4], ρ_l = [0, 2, 0] ⇒ margins β(ρ_w − ρ_l) = [1, −1, 2].

    accuracy 2/3; margin mean 2/3; chosen mean 0.5·2 = 1; rejected mean 0.5·2/3 = 1/3.
    Quantile q of sorted [−1, 1, 2] (linear) sits at position 2q: 0.1 → −1 + 0.2·2 = −0.6;
    0.25 → 0; 0.5 → 1; 0.75 → 1.5; 0.9 → 1 + 0.8·1 = 1.8.
    """
    rw, rl = t(-10, -20, -30), t(-11, -21, -31)
    result = implicit_reward_accuracy(rw + t(2, 0, 4), rl + t(0, 2, 0), rw, rl, beta=0.5)
    assert result.accuracy == pytest.approx(2 / 3, abs=1e-15)
    assert result.margin_mean == pytest.approx(2 / 3, abs=1e-12)
    assert result.chosen_reward_mean == pytest.approx(1.0, abs=1e-12)
    assert result.rejected_reward_mean == pytest.approx(1 / 3, abs=1e-12)
    expected = {0.1: -0.6, 0.25: 0.0, 0.5: 1.0, 0.75: 1.5, 0.9: 1.8}
    assert result.margin_quantiles == pytest.approx(expected, abs=1e-12)
    json.dumps(asdict(result))


def test_idealized_ranking_accuracy_by_hand():
    """β = 0.5 (1/β = 2), ε = 1e-3; L* = (ref_w − ref_l) + 2·log(α/(1 − α)):

    1. ref −10 vs −7 (diff −3), α = 1 → 0.999: L* = −3 + 2·log 999 ≈ 10.81 > 0: correct.
    2. diff +0.5, α = 0.3 (minority label): L* = 0.5 + 2·log(3/7) ≈ −1.19 < 0: y_l first, wrong.
    3. diff −4, α = 0.9: L* = −4 + 2·log 9 ≈ 0.394 > 0: the reference's preference for y_l is
       overcome.
    4. diff −5, α = 0.9: L* = −5 + 2·log 9 ≈ −0.606 < 0: not overcome.
    Idealized accuracy 2/4 = 0.5; the reference itself ranks only pair 2 right (0.25).
    """
    ref_w, ref_l = t(-10, -5, -20, -21), t(-7, -5.5, -16, -16)
    alpha = [1.0, 0.3, 0.9, 0.9]
    result = idealized_ranking_accuracy(ref_w, ref_l, alpha, beta=0.5)
    expected = [-3 + 2 * math.log(999), 0.5 + 2 * math.log(3 / 7), -4 + 2 * math.log(9),
                -5 + 2 * math.log(9)]
    assert result.optimum_log_ratio == pytest.approx(expected, abs=1e-12)
    assert (result.value, result.n, result.ties, result.minority_pairs) == (0.5, 4, 0, 1)
    assert result.stderr == pytest.approx(0.25, abs=1e-15)  # sqrt(0.5·0.5/4)
    reference = ranking_accuracy(ref_w, ref_l)
    assert reference.value == 0.25
    assert alignment_gap(result, reference) == 0.25
    assert alignment_gap(0.9, 0.55) == pytest.approx(0.35, abs=1e-15)
    json.dumps(asdict(result))


def test_idealized_at_half_share_is_the_reference_and_beta_limits():
    """α = 0.5 ⇒ log(α/(1 − α)) = 0 ⇒ L* = ref_w − ref_l: exactly the reference's accuracy,
    ties included (pair 3 has equal reference log-probs: a tie, 0.5 under "half").

    A scalar assumed α = 0.9 with β → 0 (β = 1e-3, 2000·log 9 ≫ any reference gap) ranks every
    pair correctly; with β = 1e6 the reward term (≈2.2e-6) cannot move any |gap| ≥ 1.
    """
    ref_w, ref_l = t(-3, -9, -4, -1), t(-5, -8, -4, -6)
    half = idealized_ranking_accuracy(ref_w, ref_l, 0.5, beta=0.1)
    reference = ranking_accuracy(ref_w, ref_l)
    assert (half.value, half.ties) == (reference.value, reference.ties) == (0.625, 1)
    assert torch.equal(optimum_log_ratio(ref_w, ref_l, 0.5, 0.1), ref_w - ref_l)
    assert idealized_ranking_accuracy(ref_w, ref_l, 0.9, beta=1e-3).value == 1.0
    strong_ref = idealized_ranking_accuracy(t(-3, -9, -1), t(-5, -8, -6), 0.9, beta=1e6)
    assert strong_ref.value == pytest.approx(2 / 3, abs=1e-15)


def test_thm41_on_an_exact_grid():
    """Thm 4.1: L_DPO ≤ −log σ(βc) ⇔ πθ(y_w) ≥ πθ(y_l), c = log πref(y_l) − log πref(y_w).

    Proof: L = softplus(−βΔ), Δ = (pw − rw) − (pl − rl) = (pw − pl) + c, and softplus is
    increasing, so L ≤ softplus(−βc) ⇔ Δ ≥ c ⇔ pw ≥ pl. On quarter-integer log-probs and
    power-of-two β every step is exact in float64, so the equality case pw = pl is tested too.
    """
    grid = (-6.0, -3.5, -1.25, -0.5)
    rows = torch.tensor(list(itertools.product(grid, repeat=4)), dtype=torch.float64)
    pw, pl, rw, rl = rows.unbind(1)
    for beta in (0.5, 1.0, 2.0, 4.0):
        loss = softplus(-beta * ((pw - rw) - (pl - rl)))
        assert torch.allclose(loss, dpo(pw, pl, rw, rl, beta=beta)[0], rtol=0, atol=1e-12)
        threshold = difficulty(rw, rl, beta)
        assert torch.equal(loss <= threshold, pw >= pl)
        assert bool((loss[pw == pl] == threshold[pw == pl]).all())


def test_thm41_on_random_log_probs():
    """The same equivalence for random float64 log-probs, away from exact policy ties."""
    gen = torch.Generator().manual_seed(0)
    pw, pl, rw, rl = (-50 * torch.rand(20_000, generator=gen, dtype=torch.float64)
                      for _ in range(4))
    for beta in (0.01, 0.1, 1.0, 5.0):
        loss = softplus(-beta * ((pw - rw) - (pl - rl)))
        keep = (pw - pl).abs() > 1e-9
        assert torch.equal((loss <= difficulty(rw, rl, beta))[keep], (pw >= pl)[keep])


def test_difficulty_values_stability_and_hardest():
    """c = rl − rw. c = 0 ⇒ log 2. β = 1: c = 1e4 ⇒ softplus(−1e4) = 0 (in float64);
    c = −1e4 ⇒ softplus(1e4) = 1e4 exactly; c = 2 ⇒ log(1 + e^−2).
    Smaller threshold = harder: the order of [log 2, 0, 1e4, log(1 + e^−2)] is 1, 3, 0, 2.
    """
    rw, rl = t(-5, -1e4, 0, -7), t(-5, 0, -1e4, -5)
    values = difficulty(rw, rl, beta=1.0)
    assert values.dtype == torch.float64
    expected = t(math.log(2), 0.0, 1e4, math.log1p(math.exp(-2)))
    assert torch.allclose(values, expected, rtol=1e-15, atol=1e-300)
    assert hardest(values, 2).tolist() == [1, 3]
    assert hardest(values, 10).tolist() == [1, 3, 0, 2]
    assert hardest(t(1, 0.5, 1, 0.5), 3).tolist() == [1, 3, 0]  # ties keep data order


def test_per_source_and_accuracy_by_source():
    """Sources a, b, a, b; margins [1, −1, 0, 2]: a has [1, 0] → (1 + 0.5)/2 = 0.75; b has
    [−1, 2] → 0.5. A generic fn on an index tensor sees the rows of its source."""
    chosen, rejected = t(1, 0, 3, 4), t(0, 1, 3, 2)
    sources = ["b_src", "a_src", "b_src", "a_src"]
    by_source = accuracy_by_source(chosen, rejected, sources)
    assert list(by_source) == ["a_src", "b_src"]
    assert by_source["b_src"].value == 0.75 and by_source["a_src"].value == 0.5
    assert by_source["b_src"].n == 2 and by_source["b_src"].ties == 1
    rows = per_source(torch.arange(4), sources, lambda index: index.tolist())
    assert rows == {"a_src": [1, 3], "b_src": [0, 2]}
    loose = accuracy_by_source(chosen, rejected, sources, ties="correct")
    assert loose["b_src"].value == 1.0
    with pytest.raises(MetricInputError, match="source"):
        per_source(chosen, sources[:3], len)


def test_length_bias_by_hand():
    """len_w = [10, 20, 30, 40], len_l = [20, 10, 10, 40] ⇒ d = [−10, 10, 20, 0].

    Unequal pairs 3, chosen longer in 2 ⇒ 2/3. Mean d = 20/4 = 5.
    margins m = [−1, 1, 3, 1]: d − 5 = [−15, 5, 15, −5], m − 1 = [−2, 0, 2, 0];
    Σ = 30 + 30 = 60; Σ(d − 5)² = 500, Σ(m − 1)² = 8 ⇒ r = 60/√4000 = 3/√10.
    """
    result = length_bias([10, 20, 30, 40], [20, 10, 10, 40], margins=[-1.0, 1.0, 3.0, 1.0])
    assert result.chosen_longer_share == pytest.approx(2 / 3, abs=1e-15)
    assert result.mean_length_difference == 5.0
    assert result.correlation == pytest.approx(3 / math.sqrt(10), abs=1e-12)
    assert length_bias([10, 20], [20, 10]).correlation is None
    constant = length_bias([5, 5], [5, 5], margins=[1.0, 2.0])
    assert constant.chosen_longer_share is None and constant.correlation is None
    assert length_bias([3], [1], margins=[0.5]).correlation is None
    json.dumps(asdict(constant))


def test_win_rate_with_ties():
    """A = [3, 1, 2, 2, 5], B = [1, 1, 3, 2, 0]: 2 wins, 2 ties, 1 loss ⇒ (2 + 1)/5 = 0.6;
    stderr = sqrt(0.6·0.4/5)."""
    result = win_rate([3, 1, 2, 2, 5], [1, 1, 3, 2, 0])
    assert (result.value, result.ties, result.n) == (0.6, 2, 5)
    assert result.stderr == pytest.approx(math.sqrt(0.24 / 5), abs=1e-15)


def test_errors_say_what_to_fix():
    with pytest.raises(MetricInputError, match="lengths differ"):
        ranking_accuracy([1.0, 2.0], [1.0])
    with pytest.raises(MetricInputError, match=r"chosen\[1\] = nan"):
        ranking_accuracy([1.0, float("nan")], [0.0, 0.0])
    with pytest.raises(MetricInputError, match="shape"):
        ranking_accuracy(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(MetricInputError, match="tie rule"):
        ranking_accuracy([1.0], [0.0], ties="draw")
    with pytest.raises(MetricInputError, match="empty"):
        win_rate([], [])
    with pytest.raises(MetricInputError, match="rater_share"):
        idealized_ranking_accuracy([0.0], [0.0], 1.5, beta=0.1)
    with pytest.raises(MetricInputError, match="beta"):
        difficulty([0.0], [0.0], beta=0.0)
    assert issubclass(MetricInputError, ValueError)
