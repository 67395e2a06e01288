"""KL to the reference from samples, reward-KL points, and best-of-N's exact and bounded KL.

Example: ``kl = kl_from_samples(policy.sum, ref.sum); kl.value, kl.stderr``

Sample-based estimates take summed sequence log-probs of samples y ~ π (from
:func:`alignlab.decode.sample` at temperature 1, no top-k/top-p, scored by
:func:`alignlab.decode.score`): samples drawn any other way are not from π, and the estimate is
then of nothing in particular. Best-of-N follows Beirami et al. 2024, Theoretical guarantees on the
best-of-n alignment policy, arXiv 2401.01879: π_BoN(y) = F(y)^N − F⁻(y)^N for outcomes ordered by
reward, and KL(π_BoN‖p) ≤ log N − (N − 1)/N.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

Values = Tensor | Sequence[float]


@dataclass(frozen=True)
class Estimate:
    """A Monte-Carlo mean with its standard error."""

    value: float
    stderr: float
    """std (n − 1 denominator) / sqrt(n); NaN when n = 1."""
    n: int


@dataclass(frozen=True)
class RewardKL:
    """One point of a reward-vs-KL curve, with standard errors."""

    reward_mean: float
    reward_stderr: float
    kl: float
    kl_stderr: float
    n: int


def kl_from_samples(
    policy_logps: Values, ref_logps: Values, *, estimator: Literal["k1", "k3"] = "k1"
) -> Estimate:
    """KL(π‖π_ref) from log π(y) and log π_ref(y) of samples y ~ π, each (S,).

    ``k1`` (default): the mean of log π(y) − log π_ref(y). Unbiased; a single term can be
    negative, so a small estimate can be below 0.

    ``k3`` (Schulman, "Approximating KL divergence", 2020): the mean of (r − 1) − log r with
    r = π_ref(y)/π(y). Also unbiased (E_π[r] = 1 wherever π_ref puts no mass outside π's support,
    true for softmax models), every term is ≥ 0, and the variance is much lower while π and
    π_ref are close. When π_ref is far likelier than π on some sample, r is huge and so is its
    term: a heavy right tail, and over long sequences r can overflow to inf.
    """
    policy, ref = _pair(policy_logps, ref_logps)
    log_ratio = policy - ref  # (S,) log π/π_ref
    if estimator == "k1":
        terms = log_ratio
    elif estimator == "k3":
        terms = torch.expm1(-log_ratio) + log_ratio  # (r − 1) − log r, r = exp(−log_ratio)
    else:
        raise ValueError(f"estimator must be 'k1' or 'k3', got {estimator!r}")
    return _mean(terms)


def reward_kl_point(
    rewards: Values,
    policy_logps: Values,
    ref_logps: Values,
    *,
    estimator: Literal["k1", "k3"] = "k1",
) -> RewardKL:
    """Mean reward and KL(π‖π_ref) over the same samples y ~ π, each input (S,)."""
    reward = _vector(rewards, "rewards")
    kl = kl_from_samples(policy_logps, ref_logps, estimator=estimator)
    if len(reward) != kl.n:
        raise ValueError(f"{len(reward)} rewards for {kl.n} log-probs: give one per sample")
    r = _mean(reward)
    return RewardKL(r.value, r.stderr, kl.value, kl.stderr, kl.n)


def best_of_n_kl_bound(n: int) -> float:
    """log n − (n − 1)/n: KL(π_BoN‖p) exactly for continuous rewards without ties, and an upper
    bound for every discrete case (Beirami et al. 2024, arXiv 2401.01879), a loose one when a few
    outcomes carry much of the mass: for p = (½, ½) the KL stays below log 2 for every n."""
    _check_n(n)
    return math.log(n) - (n - 1) / n


def best_of_n_win_rate_bound(n: int) -> float:
    """n/(n + 1): the chance that the best of n samples beats one more, without ties; with ties
    counted as half a win it bounds every case."""
    _check_n(n)
    return n / (n + 1)


def best_of_n_pmf(probs: Values, rewards: Values, n: int) -> Tensor:
    """Exact distribution (K,) float64 of the best of ``n`` draws from ``probs`` (K,).

    With F(y) = P(r(Y) ≤ r(y)) and F⁻(y) = P(r(Y) < r(y)), the outcomes sharing the reward r(y)
    get together F(y)^n − F⁻(y)^n, the chance that the best reward drawn is r(y). They split it in
    proportion to p: which of several equally rewarded draws is kept does not depend on which
    outcome it is, so given the reward it is distributed as p restricted to those outcomes. For
    distinct rewards this is Beirami et al.'s F(y)^n − F⁻(y)^n, and as K grows with no outcome
    carrying much mass it approaches n·F(y)^(n−1)·p(y).
    """
    p, mass, best, _, group = _groups(probs, rewards, n)
    share = torch.where(mass > 0, best / mass.clamp(min=1e-300), 0.0)  # (G,) π_BoN/p per group
    return p * share[group]


def best_of_n_kl_exact(probs: Values, rewards: Values, n: int) -> float:
    """KL(π_BoN‖p) in nats for the exact best-of-``n`` distribution of :func:`best_of_n_pmf`.

    Within a group of equal rewards π_BoN/p is constant, so KL = Σ_groups M log(M/P), with P the
    group's mass under p and M under π_BoN.
    """
    _, mass, best, _, _ = _groups(probs, rewards, n)
    kept = best > 0
    return float((best[kept] * (best[kept].log() - mass[kept].log())).sum())


def best_of_n_win_rate_exact(probs: Values, rewards: Values, n: int) -> float:
    """P(r(Y_BoN) > r(Y)) + ½ P(r(Y_BoN) = r(Y)), Y ~ p independent: the exact win rate of
    best-of-``n`` against one sample of p, ties counted as half (at most n/(n + 1))."""
    _, mass, best, below, _ = _groups(probs, rewards, n)
    return float((best * (below + mass / 2)).sum())


def _groups(
    probs: Values, rewards: Values, n: int
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """p (K,), and per group of equal rewards in increasing order (G,): the mass P under p, the
    mass M = F^n − F⁻^n under best-of-n, F⁻; and each outcome's group (K,)."""
    _check_n(n)
    p = _vector(probs, "probs")
    r = _vector(rewards, "rewards")
    if p.shape != r.shape:
        raise ValueError(f"probs has {len(p)} outcomes but rewards {len(r)}: give one reward each")
    if (p < 0).any() or not math.isclose(float(p.sum()), 1.0, abs_tol=1e-6):
        raise ValueError(f"probs must be >= 0 and sum to 1, got sum {float(p.sum()):.9g}")
    p = p / p.sum()
    _, group = torch.unique(r, sorted=True, return_inverse=True)  # (K,) rank of each reward
    mass = torch.zeros(int(group.max()) + 1, dtype=torch.float64).index_add_(0, group, p)  # (G,)
    upper = mass.cumsum(0).clamp(max=1.0)  # F
    below = torch.cat([upper.new_zeros(1), upper[:-1]])  # F⁻
    # F^n − F⁻^n = F^n (1 − (1 − P/F)^n): no cancellation when P is tiny next to F ≈ 1.
    safe = upper.clamp(min=1e-300)
    best = upper**n * -torch.expm1(n * torch.log1p(-(mass / safe).clamp(max=1.0)))
    best = torch.where(upper > 0, best, 0.0)
    return p, mass, best, below, group


def _mean(values: Tensor) -> Estimate:
    count = len(values)
    stderr = float(values.std() / math.sqrt(count)) if count > 1 else math.nan
    return Estimate(float(values.mean()), stderr, count)


def _pair(policy_logps: Values, ref_logps: Values) -> tuple[Tensor, Tensor]:
    policy = _vector(policy_logps, "policy_logps")
    ref = _vector(ref_logps, "ref_logps")
    if policy.shape != ref.shape:
        raise ValueError(
            f"policy_logps has {len(policy)} samples but ref_logps {len(ref)}: score the same "
            "samples under both models"
        )
    return policy, ref


def _vector(values: Values, name: str) -> Tensor:
    tensor = torch.as_tensor(values, dtype=torch.float64).detach().cpu()
    if tensor.dim() != 1 or len(tensor) == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence, got shape {tuple(tensor.shape)}")
    return tensor


def _check_n(n: int) -> None:
    if int(n) != n or n < 1:
        raise ValueError(f"n (the N of best-of-N) must be a positive integer, got {n}")
