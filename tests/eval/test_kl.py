"""KL from samples against exact next-token KL, reward-KL points, and best-of-N's exact KL.

Example: ``pytest tests/eval/test_kl.py``
"""

from __future__ import annotations

import copy
import itertools
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM

from alignlab.decode import SamplingOptions, sample, score
from alignlab.eval.kl import (
    best_of_n_kl_bound,
    best_of_n_kl_exact,
    best_of_n_pmf,
    best_of_n_win_rate_bound,
    best_of_n_win_rate_exact,
    kl_from_samples,
    reward_kl_point,
)
from alignlab.models.tiny import init_tiny_model

EOS, PAD, BOS = 1, 2, 0
PROMPT = [BOS, 40, 41, 42, 43]


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The tiny model with its output layer ×20 (next-token entropy ≈ 3.5 nats)."""
    path: Path = init_tiny_model(tmp_path_factory.mktemp("tiny") / "model")
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(20)
    return model


@pytest.fixture(scope="module")
def perturbed(policy: Any) -> Any:
    """A copy whose output layer carries N(0, 0.1²) noise."""
    model = copy.deepcopy(policy)
    noise = torch.randn(model.lm_head.weight.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.lm_head.weight.add_(0.1 * noise)
    return model


def _next_logps(model: Any) -> torch.Tensor:
    with torch.no_grad():
        return torch.log_softmax(model(torch.tensor([PROMPT])).logits[0, -1].double(), -1)


# Sample-based KL ----------------------------------------------------------------------------

def test_kl_of_a_model_against_itself_is_zero(policy: Any) -> None:
    prompts = [PROMPT, [BOS, 7]]
    ys = sample(policy, prompts, 8, SamplingOptions(max_new_tokens=6, seed=1), eos_id=EOS,
                pad_id=PAD)
    a, b = score(policy, prompts, ys, PAD), score(policy, prompts, ys, PAD, batch_size=3)
    for estimator in ("k1", "k3"):
        kl = kl_from_samples(a.sum, b.sum, estimator=estimator)
        # Other batch sizes pack the rows differently: equal up to float32 rounding.
        assert kl.n == 16 and abs(kl.value) < 1e-6 and kl.stderr < 1e-6


@pytest.fixture(scope="module")
def one_token_scores(policy: Any, perturbed: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """3000 one-token completions of PROMPT sampled from ``policy``, scored by both models."""
    (ys,) = sample(policy, [PROMPT], 3000, SamplingOptions(max_new_tokens=1, seed=11),
                   eos_id=EOS, pad_id=PAD)
    return (score(policy, [PROMPT], [ys], PAD, batch_size=3000).sum,
            score(perturbed, [PROMPT], [ys], PAD, batch_size=3000).sum)


@pytest.mark.parametrize("estimator", ["k1", "k3"])
def test_one_token_kl_estimate_matches_the_exact_kl(
    policy: Any, perturbed: Any, one_token_scores: tuple[torch.Tensor, torch.Tensor],
    estimator: str,
) -> None:
    """max_new_tokens = 1: a completion is one token v ~ p, and KL(p‖q) = Σ_v p(v) log(p/q)
    exactly from the two next-token distributions. The estimate lies within 4 standard errors."""
    lp, lq = _next_logps(policy), _next_logps(perturbed)
    exact = float((lp.exp() * (lp - lq)).sum())
    assert 0.05 < exact < 1.0
    kl = kl_from_samples(*one_token_scores, estimator=estimator)  # type: ignore[arg-type]
    assert kl.n == 3000 and kl.value > 0
    assert abs(kl.value - exact) < 4 * kl.stderr


def test_k1_and_k3_on_a_categorical_pair() -> None:
    """Both estimators are unbiased for KL(p‖q) under y ~ p; k3's terms are ≥ 0 and, with p
    and q close, its standard error is far smaller than k1's."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, generator=g, dtype=torch.float64)
    lp = torch.log_softmax(logits, -1)
    lq = torch.log_softmax(logits + 0.2 * torch.randn(50, generator=g, dtype=torch.float64), -1)
    exact = float((lp.exp() * (lp - lq)).sum())
    y = torch.multinomial(lp.exp(), 20000, replacement=True, generator=g)
    k1 = kl_from_samples(lp[y], lq[y])
    k3 = kl_from_samples(lp[y], lq[y], estimator="k3")
    for est in (k1, k3):
        assert abs(est.value - exact) < 4 * est.stderr
    assert k3.stderr < k1.stderr / 5
    terms = torch.expm1(lq[y] - lp[y]) - (lq[y] - lp[y])
    assert (terms >= 0).all()
    assert k3.value == pytest.approx(float(terms.mean()))


def test_estimate_of_hand_numbers_and_reward_kl_point() -> None:
    """Log-ratios 0.1, 0.2, 0.3, 0.4: mean 0.25, sample std sqrt(1/60) ≈ 0.1291, stderr half
    that. Rewards 1, 2, 3, 4: mean 2.5, std sqrt(5/3), stderr sqrt(5/3)/2 ≈ 0.6455."""
    ref = [-1.0, -2.0, -3.0, -4.0]
    policy = [r + d for r, d in zip(ref, (0.1, 0.2, 0.3, 0.4), strict=True)]
    kl = kl_from_samples(policy, ref)
    assert kl.value == pytest.approx(0.25)
    assert kl.stderr == pytest.approx(math.sqrt(1 / 60) / 2)
    point = reward_kl_point([1.0, 2.0, 3.0, 4.0], policy, ref)
    assert (point.reward_mean, point.kl, point.n) == (pytest.approx(2.5), pytest.approx(0.25), 4)
    assert point.reward_stderr == pytest.approx(math.sqrt(5 / 3) / 2)
    assert point.kl_stderr == pytest.approx(kl.stderr)
    assert math.isnan(kl_from_samples([0.5], [0.0]).stderr)


def test_mismatched_or_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="same samples"):
        kl_from_samples([0.0, 1.0], [0.0])
    with pytest.raises(ValueError, match="k1"):
        kl_from_samples([0.0], [0.0], estimator="k2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one per sample"):
        reward_kl_point([1.0], [0.0, 1.0], [0.0, 1.0])
    with pytest.raises(ValueError, match="sum to 1"):
        best_of_n_pmf([0.5, 0.6], [0.0, 1.0], 2)
    with pytest.raises(ValueError, match="positive integer"):
        best_of_n_kl_bound(0)


# Best-of-N ----------------------------------------------------------------------------------

def test_bound_values() -> None:
    """log n − (n−1)/n: 0 at n = 1, log 2 − 1/2 ≈ 0.19315 at 2, log 16 − 15/16 ≈ 1.8351 at 16.
    Win rate n/(n+1): 1/2, 2/3, 16/17."""
    assert best_of_n_kl_bound(1) == 0.0
    assert best_of_n_kl_bound(2) == pytest.approx(math.log(2) - 0.5)
    assert best_of_n_kl_bound(16) == pytest.approx(1.8350887222)
    assert [best_of_n_win_rate_bound(n) for n in (1, 2, 16)] == [0.5, 2 / 3, 16 / 17]


def test_pmf_is_the_best_of_n_draws_by_enumeration_with_ties() -> None:
    """All 4³ = 64 triples of draws, each weighted by its probability, keeping the first draw
    of highest reward: the pmf, ties split in proportion to p, and the win rate with ties as ½."""
    p = [0.1, 0.4, 0.3, 0.2]
    r = [0.0, 1.0, 1.0, 2.0]  # outcomes 1 and 2 tie
    n = 3
    brute = [0.0] * 4
    for draws in itertools.product(range(4), repeat=n):
        kept = max(draws, key=lambda k: r[k])  # first of the highest: ignores identity
        brute[kept] += math.prod(p[k] for k in draws)
    pmf = best_of_n_pmf(p, r, n)
    assert pmf.tolist() == pytest.approx(brute, abs=1e-15)
    # By hand: F = 0.1, 0.8, 0.8, 1: π = 0.001, (0.512 − 0.001)·4/7, ·3/7, 1 − 0.512 = 0.488.
    assert pmf.tolist() == pytest.approx([0.001, 0.511 * 4 / 7, 0.511 * 3 / 7, 0.488])
    wins = sum(pmf[a] * p[b] * (1.0 if r[a] > r[b] else 0.5 if r[a] == r[b] else 0.0)
               for a in range(4) for b in range(4))
    assert best_of_n_win_rate_exact(p, r, n) == pytest.approx(float(wins))
    kl = sum(float(pmf[k]) * math.log(float(pmf[k]) / p[k]) for k in range(4))
    assert best_of_n_kl_exact(p, r, n) == pytest.approx(kl)


def test_binary_uniform_n16_is_log2_minus_a_tiny_entropy() -> None:
    """K = 2, p = (½, ½), N = 16: π_BoN(low) = ε = 2⁻¹⁶, π_BoN(high) = 1 − ε, so
    KL = (1−ε) log(2(1−ε)) + ε log(2ε) = log 2 − H(ε) ≈ 0.693147 − 0.000185 = 0.692963, below
    the bound 1.8351 and below log 2. A value of 0.75 for "K = 2, N = 16", quoted without p, is
    not this one (nor any p-independent one): a binary p reaches 0.75 only at P(high) ≈ 0.0325 or
    ≈ 0.472."""
    eps = 2.0**-16
    by_hand = math.log(2) + (1 - eps) * math.log1p(-eps) + eps * math.log(eps)
    got = best_of_n_kl_exact([0.5, 0.5], [0.0, 1.0], 16)
    assert got == pytest.approx(by_hand, rel=1e-12)
    assert got == pytest.approx(0.692963, abs=1e-6)
    assert got < math.log(2) < best_of_n_kl_bound(16)


def test_binary_kl_is_not_capped_at_log2_for_a_rare_best_outcome() -> None:
    """P(high) = s = 1/16, N = 16: q = 1 − (15/16)¹⁶ ≈ 0.6439 and KL = q log(q/s) +
    (1−q) log((1−q)/(1−s)) ≈ 1.1572 > log 2, still under the bound 1.8351. (The binary maximum
    at N = 16 is ≈ 1.504, at s ≈ 0.148.) So "KL ≤ log 2 for every N" holds for p = (½, ½), not
    for every binary p."""
    s = 1 / 16
    q = 1 - (1 - s) ** 16
    by_hand = q * math.log(q / s) + (1 - q) * math.log((1 - q) / (1 - s))
    got = best_of_n_kl_exact([1 - s, s], [0.0, 1.0], 16)
    assert got == pytest.approx(by_hand, rel=1e-12)
    assert got == pytest.approx(1.1572, abs=1e-4)
    assert math.log(2) < got < best_of_n_kl_bound(16)
    assert best_of_n_kl_exact([1 - 0.148, 0.148], [0.0, 1.0], 16) == pytest.approx(1.504, abs=1e-3)


def test_many_distinct_outcomes_approach_the_bound() -> None:
    """Uniform p over K outcomes with distinct rewards, N = 16: the exact KL is below
    log N − (N−1)/N by about 0.107/K² (computed: 1.07e-3 at K = 100, 1.07e-5 at K = 1000), so
    near-continuous outcomes match the bound to 1e-4 at K = 1000, with room to spare."""
    bound = best_of_n_kl_bound(16)
    gaps = {k: bound - best_of_n_kl_exact(torch.full((k,), 1 / k), torch.arange(k).double(), 16)
            for k in (100, 1000)}
    assert 0 < gaps[1000] < 1e-4
    assert gaps[1000] == pytest.approx(1.0714e-5, rel=1e-3)
    assert gaps[100] == pytest.approx(1.0709e-3, rel=1e-3)


def test_pmf_tends_to_n_f_pow_n_minus_1_p_for_distinct_rewards() -> None:
    """Distinct rewards, random p: the pmf sums to 1 and is F^N − F⁻^N exactly. Taylor with
    remainder, x^N at F minus at F − p, gives |π_BoN − N·F^(N−1)·p| ≤ C(N, 2)·p² for every
    outcome, so relative to the largest mass (≈ N·max p) the gap shrinks as max p → 0."""
    n = 8
    g = torch.Generator().manual_seed(0)
    errors = []
    for k in (100, 1000, 10000):
        p = -torch.rand(k, generator=g, dtype=torch.float64).log()  # Dirichlet(1, …, 1)
        p = p / p.sum()
        r = torch.randperm(k, generator=g).double()
        pmf = best_of_n_pmf(p, r, n)
        assert float(pmf.sum()) == pytest.approx(1.0, abs=1e-12)
        rank = r.argsort()
        f = torch.empty_like(p).scatter_(0, rank, p[rank].cumsum(0))  # P(r(Y) ≤ r(y))
        assert pmf.tolist() == pytest.approx((f**n - (f - p) ** n).tolist(), abs=1e-14)
        gap = (pmf - n * f ** (n - 1) * p).abs()
        assert (gap <= math.comb(n, 2) * p**2 + 1e-15).all()
        errors.append(float(gap.max() / pmf.max()))
    assert errors[2] < errors[1] < errors[0]
    assert errors[2] < 5e-3


@pytest.mark.parametrize("seed", range(5))
def test_random_discrete_cases_respect_both_bounds(seed: int) -> None:
    """Random p (some zeros) and integer rewards with many ties, N from 1 to 20: the pmf sums
    to 1, KL ≤ log N − (N−1)/N, the win rate with ties as ½ ≤ N/(N+1); N = 1 is p itself
    (KL 0, win rate exactly ½)."""
    g = torch.Generator().manual_seed(seed)
    k = int(torch.randint(2, 40, (1,), generator=g))
    p = torch.rand(k, generator=g, dtype=torch.float64) ** 3
    p[torch.rand(k, generator=g) < 0.2] = 0.0
    p[0] += 0.1
    p = p / p.sum()
    r = torch.randint(0, max(2, k // 3), (k,), generator=g).double()
    for n in range(1, 21):
        pmf = best_of_n_pmf(p, r, n)
        assert float(pmf.sum()) == pytest.approx(1.0, abs=1e-12)
        assert (pmf[p == 0] == 0).all()
        assert best_of_n_kl_exact(p, r, n) <= best_of_n_kl_bound(n) + 1e-12
        assert best_of_n_win_rate_exact(p, r, n) <= best_of_n_win_rate_bound(n) + 1e-12
    assert best_of_n_kl_exact(p, r, 1) == pytest.approx(0.0, abs=1e-15)
    assert best_of_n_win_rate_exact(p, r, 1) == pytest.approx(0.5, abs=1e-15)


def test_tiny_top_mass_keeps_precision() -> None:
    """One outcome of mass 1e-12 above the rest: F^N − F⁻^N by subtraction would lose about
    four digits to cancellation; the mass must be 1 − (1 − 1e-12)^N ≈ N·1e-12 to 1e-9."""
    p = torch.tensor([1 - 1e-12, 1e-12], dtype=torch.float64)
    pmf = best_of_n_pmf(p, [0.0, 1.0], 16)
    assert float(pmf[1]) == pytest.approx(-math.expm1(16 * math.log1p(-1e-12)), rel=1e-9)
