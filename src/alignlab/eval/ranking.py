"""Ranking diagnostics for preference pairs (Chen et al. 2024) and the implicit rewards peers log.

Example: ``ranking_accuracy(policy_chosen_logps, policy_rejected_logps).value`` with inputs (P,)

Every function takes one value per preference pair (a tensor, array or list; float32 is accepted,
all arithmetic is float64 on the CPU) and returns floats in a frozen dataclass, JSON-ready through
``dataclasses.asdict``. Notation: w chosen, l rejected, ρ = log π − log πref, log π(y|x) summed
over the completion tokens (R, Chen et al. 2024, arXiv 2405.19534, Def. 2.3) or its per-token
mean (the length-normalised R̃).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from alignlab.errors import AlignlabError

TieRule = Literal["half", "correct", "wrong"]
TIE_CREDIT: dict[str, float] = {"half": 0.5, "correct": 1.0, "wrong": 0.0}
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
VectorLike = torch.Tensor | Sequence[float]


class MetricInputError(AlignlabError, ValueError):
    """Inputs a metric cannot score: bad shape, unequal lengths, empty, non-finite, out of range."""


# ---------------------------------------------------------------------------------------------
# Input handling and the tie rule


def as_vector(values: Any, name: str) -> torch.Tensor:
    """``values`` as a detached CPU float64 tensor (P,), checked to be finite."""
    try:
        tensor = torch.as_tensor(values)
    except (TypeError, ValueError, RuntimeError) as err:
        raise MetricInputError(f"{name}: cannot be read as numbers ({err}); pass a 1-D tensor "
                               "or a list of floats") from err
    tensor = tensor.detach().to("cpu", torch.float64)
    if tensor.dim() != 1:
        raise MetricInputError(f"{name}: expected one value per preference pair, shape (P,), got "
                               f"shape {tuple(tensor.shape)}; reduce token values to one per "
                               "sequence first (sum for R, mean for the length-normalised R̃)")
    bad = (~torch.isfinite(tensor)).nonzero()
    if len(bad):
        i = int(bad[0])
        raise MetricInputError(f"{name}[{i}] = {tensor[i].item()} is not finite; a log-prob of "
                               "-inf or NaN usually means an empty or fully masked completion")
    return tensor


def aligned(*, allow_empty: bool = False, **named: Any) -> tuple[torch.Tensor, ...]:
    """Each keyword as a vector (P,), all of one length P (> 0 unless ``allow_empty``)."""
    vectors = tuple(as_vector(v, k) for k, v in named.items())
    lengths = {k: len(v) for k, v in zip(named, vectors, strict=True)}
    if len(set(lengths.values())) > 1:
        raise MetricInputError(f"inputs need one entry per preference pair, but their lengths "
                               f"differ: {lengths}")
    if not allow_empty and not vectors[0].numel():
        raise MetricInputError(f"no preference pairs to score: {', '.join(named)} are empty")
    return vectors


def tie_credit(ties: str) -> float:
    """The credit a tied pair earns under the rule ``ties``."""
    if ties not in TIE_CREDIT:
        raise MetricInputError(f"ties={ties!r} is not a tie rule; use one of {sorted(TIE_CREDIT)}")
    return TIE_CREDIT[ties]


def pair_credit(margins: torch.Tensor, ties: str = "half", tolerance: float = 0.0) -> torch.Tensor:
    """Per pair: 1 for a margin > tolerance, the tie credit for |margin| ≤ tolerance, else 0.

    The one definition of a correctly ranked pair, also used for the ranking accuracy logged
    during training (where margins are tensors on any device).
    """
    credit = tie_credit(ties)
    if not tolerance >= 0:
        raise MetricInputError(f"tolerance must be >= 0 (a margin of |m| <= tolerance is a tie), "
                               f"got {tolerance}")
    tied = margins.abs() <= tolerance
    return torch.where(tied, credit, (margins > tolerance).to(margins.dtype)).to(margins.dtype)


def score_margins(margins: torch.Tensor, ties: str, tolerance: float) -> tuple[float, int]:
    """(share of margins > tolerance, ties credited by rule; count of |margin| ≤ tolerance)."""
    credits = pair_credit(margins, ties, tolerance)
    tied = int((margins.abs() <= tolerance).sum())
    return float(credits.sum()) / len(margins), tied


def binomial_stderr(p: float, n: int) -> float:
    """sqrt(p(1 − p)/n): with half-credited ties an upper bound on the score's standard error."""
    return math.sqrt(max(p * (1 - p), 0.0) / n)


def _check_beta(beta: float) -> None:
    if not (beta > 0 and math.isfinite(beta)):
        raise MetricInputError(f"beta must be a positive finite number, got {beta}")


def log_sigmoid_loss(z: torch.Tensor) -> torch.Tensor:
    """−log σ(z) = softplus(−z) = max(−z, 0) + log1p(e^−|z|): exact in float64 for any |z|."""
    return (-z).clamp(min=0) + torch.log1p(torch.exp(-z.abs()))


# ---------------------------------------------------------------------------------------------
# Ranking accuracy (Chen et al. Def. 2.3) and its idealized bound (Thm 3.1 / Cor. 3.3)


@dataclass(frozen=True)
class RankingAccuracy:
    value: float
    """Share of pairs whose chosen answer scores higher, each tie credited by ``tie_rule``."""
    n: int
    """Number of pairs."""
    ties: int
    """Number of tied pairs, |chosen − rejected| ≤ tolerance."""
    stderr: float
    """Binomial standard error sqrt(value(1 − value)/n)."""
    tie_rule: str = "half"
    """How a tie counted: "half" 0.5, "correct" 1 (Chen Def. 2.3's ≥), "wrong" 0."""


def ranking_accuracy(
    chosen: VectorLike, rejected: VectorLike, *, ties: TieRule = "half", tolerance: float = 0.0,
) -> RankingAccuracy:
    """Share of pairs with chosen > rejected, under the model itself (not its implicit reward).

    Pass summed log-probs S(y) for Chen et al.'s R, or mean token log-probs A(y) for the
    length-normalised R̃ (their exp(A) = 1/perplexity ranks identically, exp being increasing).

    A tie (|chosen − rejected| ≤ ``tolerance``, in log space; Chen's code's |ratio − 1| < 0.05 is
    about tolerance = log 1.05 ≈ 0.049) counts 0.5 by default: a model indifferent between two
    answers has not learned the ranking, and half credit scores such a pair at chance rather
    than perfect. A policy equal to its reference scores exactly the reference's accuracy (same
    inputs, same rule), and its implicit-reward accuracy (all margins 0) is exactly 0.5.
    ``ties="correct"`` is Chen et al. Def. 2.3 (≥); ``ties="wrong"`` matches a strict >.
    """
    chosen_v, rejected_v = aligned(chosen=chosen, rejected=rejected)
    value, tied = score_margins(chosen_v - rejected_v, ties, tolerance)
    return RankingAccuracy(value, len(chosen_v), tied, binomial_stderr(value, len(chosen_v)), ties)


@dataclass(frozen=True)
class IdealizedRankingAccuracy:
    value: float
    """Ranking accuracy of the exact RLHF/DPO optimum π* (ties credited by ``tie_rule``)."""
    n: int
    """Number of pairs."""
    ties: int
    """Pairs whose optimum log-ratio is within the tolerance of 0."""
    stderr: float
    """Binomial standard error sqrt(value(1 − value)/n)."""
    beta: float
    """The KL coefficient β of the optimum."""
    epsilon: float
    """Rater shares were clamped to [ε, 1 − ε]."""
    minority_pairs: int
    """Pairs with α < 0.5: most raters preferred the rejected answer."""
    tie_rule: str = "half"
    """How a tie counted: "half" 0.5, "correct" 1, "wrong" 0 (Thm 3.1's strict > 1)."""
    optimum_log_ratio: tuple[float, ...] = field(default=(), repr=False)
    """Per pair, log π*(y_w|x) − log π*(y_l|x)."""


def optimum_log_ratio(
    ref_chosen: VectorLike, ref_rejected: VectorLike, rater_share: VectorLike | float,
    beta: float, *, epsilon: float = 1e-3,
) -> torch.Tensor:
    """log π*(y_w)/π*(y_l) = (log πref(y_w) − log πref(y_l)) + (1/β)·log(α/(1 − α)), shape (P,).

    From π* ∝ πref·exp(r/β) with Bradley–Terry rewards r_w − r_l = log(α/(1 − α)), α the share of
    raters preferring y_w (Chen et al. Thm 3.1). α is clamped to [ε, 1 − ε]: at α = 1 (or 0) the
    optimum is at infinity, and the paper substitutes 1 − ε. A scalar α applies to every pair.
    """
    _check_beta(beta)
    if not 0 < epsilon < 0.5:
        raise MetricInputError(f"epsilon must lie in (0, 0.5), got {epsilon}")
    ref_w, ref_l = aligned(ref_chosen=ref_chosen, ref_rejected=ref_rejected)
    alpha = torch.as_tensor(rater_share, dtype=torch.float64)
    alpha = as_vector(alpha.expand(len(ref_w)) if alpha.dim() == 0 else alpha, "rater_share")
    if len(alpha) != len(ref_w):
        raise MetricInputError(f"rater_share has {len(alpha)} entries for {len(ref_w)} pairs; "
                               "pass one share per pair or a single assumed share")
    if ((alpha < 0) | (alpha > 1)).any():
        raise MetricInputError("rater_share must lie in [0, 1]: the fraction of raters who "
                               "preferred the chosen answer")
    return (ref_w - ref_l) + torch.logit(alpha.clamp(epsilon, 1 - epsilon)) / beta


def idealized_ranking_accuracy(
    ref_chosen: VectorLike, ref_rejected: VectorLike, rater_share: VectorLike | float,
    beta: float, *, epsilon: float = 1e-3, ties: TieRule = "half", tolerance: float = 0.0,
) -> IdealizedRankingAccuracy:
    """Ranking accuracy of the exact optimum of RLHF/DPO from ``πref`` (Chen et al. Cor. 3.3).

    A pair is ranked correctly when the optimum log-ratio (:func:`optimum_log_ratio`) is > 0.
    Pairs are never reoriented: with α < 0.5 the raters' majority preferred y_l, the reward term
    pulls π* toward y_l, and when it wins the pair counts as incorrect against the dataset's
    label, which is the point: it is what a perfectly optimised policy would score, so labels the
    raters' majority contradicts are expected misses. At α = 0.5 the reward term is log 1 = 0 and
    π* keeps πref's ordering exactly, so α = 0.5 everywhere gives the reference's own ranking
    accuracy (β → ∞ gives the same); β → 0 gives the share of pairs with α > 0.5 (α = 0.5 pairs
    keep the reference's order). ``rater_share`` may be a scalar ("assumed α", e.g. 0.9 for
    data without per-rater votes). Ties as :func:`ranking_accuracy`; inputs summed (R*) or mean
    (R̃*) reference log-probs.
    """
    ratios = optimum_log_ratio(ref_chosen, ref_rejected, rater_share, beta, epsilon=epsilon)
    value, tied = score_margins(ratios, ties, tolerance)
    alpha = torch.as_tensor(rater_share, dtype=torch.float64)
    minority = int((alpha.expand(len(ratios)) < 0.5).sum())
    return IdealizedRankingAccuracy(
        value, len(ratios), tied, binomial_stderr(value, len(ratios)), float(beta), float(epsilon),
        minority, ties, tuple(ratios.tolist()),
    )


def alignment_gap(idealized: float | Any, observed: float | Any) -> float:
    """Idealized minus observed ranking accuracy (floats or results with a ``.value``)."""
    ideal, seen = getattr(idealized, "value", idealized), getattr(observed, "value", observed)
    return float(ideal) - float(seen)


# ---------------------------------------------------------------------------------------------
# Difficulty (Thm 4.1)


def difficulty(ref_chosen: VectorLike, ref_rejected: VectorLike, beta: float) -> torch.Tensor:
    """Per pair the DPO loss threshold −log σ(βc), c = log πref(y_l) − log πref(y_w), shape (P,).

    Chen et al. Thm 4.1: the policy ranks the pair correctly (πθ(y_w) ≥ πθ(y_l)) exactly when
    L_DPO ≤ −log σ(βc). A **small** threshold is a **hard** pair: the reference prefers the loser
    (c ≫ 0) and DPO must drive the loss near 0 before the ranking flips. Softplus form, exact for
    |βc| up to float64 range.
    """
    _check_beta(beta)
    ref_w, ref_l = aligned(allow_empty=True, ref_chosen=ref_chosen, ref_rejected=ref_rejected)
    return log_sigmoid_loss(beta * (ref_l - ref_w))


def hardest(difficulty: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (k,) of the k hardest pairs, i.e. the k smallest loss thresholds, hardest first.

    Equal thresholds keep their data order; k larger than the number of pairs returns all of them.
    """
    if k < 0:
        raise MetricInputError(f"k must be >= 0, got {k}")
    thresholds = as_vector(difficulty, "difficulty")
    return torch.argsort(thresholds, stable=True)[:k]


# ---------------------------------------------------------------------------------------------
# What trainers log: implicit-reward accuracy and margins


@dataclass(frozen=True)
class RewardAccuracy:
    accuracy: float
    """Share of pairs with reward margin > 0, ties (margin exactly 0 by default) by the rule."""
    margin_mean: float
    """Mean of β·(ρ_w − ρ_l)."""
    margin_quantiles: dict[float, float]
    """Quantiles 0.1, 0.25, 0.5, 0.75, 0.9 of the margin (linear interpolation)."""
    chosen_reward_mean: float
    """Mean of β·ρ(y_w)."""
    rejected_reward_mean: float
    """Mean of β·ρ(y_l)."""
    n: int = 0
    """Number of pairs."""
    ties: int = 0
    """Number of pairs whose margin is a tie."""


def implicit_reward_accuracy(
    policy_chosen: VectorLike, policy_rejected: VectorLike,
    ref_chosen: VectorLike, ref_rejected: VectorLike, beta: float,
    *, ties: TieRule = "half", tolerance: float = 0.0,
) -> RewardAccuracy:
    """TRL's ``rewards/*`` (rewards β·(log π − log πref)) over the whole set, with a tie rule.

    TRL counts margin > 0, so a policy equal to its reference scores 0; here every margin is then 0
    and, under "half", the accuracy is exactly 0.5. This is not ranking accuracy: the reference's
    ranking is subtracted out (it compares β·ρ, not π itself; Chen et al. 2024, arXiv 2405.19534).
    """
    _check_beta(beta)
    pw, pl, rw, rl = aligned(policy_chosen=policy_chosen, policy_rejected=policy_rejected,
                             ref_chosen=ref_chosen, ref_rejected=ref_rejected)
    chosen_reward, rejected_reward = beta * (pw - rw), beta * (pl - rl)
    margins = chosen_reward - rejected_reward  # (P,)
    accuracy, tied = score_margins(margins, ties, tolerance)
    quantiles = torch.quantile(margins, torch.tensor(QUANTILES, dtype=torch.float64))
    return RewardAccuracy(
        accuracy, margins.mean().item(), dict(zip(QUANTILES, quantiles.tolist(), strict=True)),
        chosen_reward.mean().item(), rejected_reward.mean().item(), len(margins), tied,
    )


# ---------------------------------------------------------------------------------------------
# Breakdowns, length bias, win rate


def per_source(values: Any, sources: Sequence[str], fn: Callable[..., Any]) -> dict[str, Any]:
    """``{source: fn(*subsets)}``, each subset the rows of ``values`` from that source; sorted keys.

    ``values`` is one tensor (or list) with P rows, or a tuple of them (``(chosen, rejected)``),
    in which case ``fn`` gets one positional argument per tensor; to subset other data as well,
    pass ``torch.arange(P)`` and let ``fn`` index with it.
    """
    columns = values if isinstance(values, tuple) and values and not isinstance(
        values[0], (int, float)) else (values,)
    columns = tuple(torch.as_tensor(c) for c in columns)
    for i, column in enumerate(columns):
        if column.dim() == 0 or len(column) != len(sources):
            raise MetricInputError(f"values[{i}] has shape {tuple(column.shape)} but there are "
                                   f"{len(sources)} sources; pass one source name per row")
    groups: dict[str, list[int]] = {}
    for row, source in enumerate(sources):
        groups.setdefault(source, []).append(row)
    result = {}
    for source in sorted(groups):
        index = torch.tensor(groups[source], dtype=torch.long)
        result[source] = fn(*(column[index.to(column.device)] for column in columns))
    return result


def accuracy_by_source(
    chosen: VectorLike, rejected: VectorLike, sources: Sequence[str], **kwargs: Any,
) -> dict[str, RankingAccuracy]:
    """:func:`ranking_accuracy` per source; ``kwargs`` (ties, tolerance) pass through."""
    return per_source((chosen, rejected), sources, lambda c, r: ranking_accuracy(c, r, **kwargs))


@dataclass(frozen=True)
class LengthBias:
    chosen_longer_share: float | None
    """Among pairs of unequal length, the share whose chosen answer is longer (None if none)."""
    mean_length_difference: float
    """Mean of len(y_w) − len(y_l) over all pairs."""
    correlation: float | None
    """Pearson correlation of len(y_w) − len(y_l) with the margins; None if no margins were given
    or it is undefined (fewer than 2 pairs, or either side constant)."""
    n: int = 0
    """Number of pairs."""


def pearson(x: torch.Tensor, y: torch.Tensor) -> float | None:
    """Pearson correlation, or None where it is undefined (n < 2 or a constant side)."""
    if len(x) < 2:
        return None
    dx, dy = x - x.mean(), y - y.mean()
    denominator = math.sqrt((dx * dx).sum().item() * (dy * dy).sum().item())
    if denominator == 0 or not math.isfinite(denominator):
        return None
    return max(-1.0, min(1.0, (dx * dy).sum().item() / denominator))


def length_bias(
    chosen_lengths: VectorLike, rejected_lengths: VectorLike, margins: VectorLike | None = None,
) -> LengthBias:
    """How answer length relates to the labels and, given ``margins``, to the model's preference.

    ``margins`` is any per-pair preference for y_w (e.g. the policy's log πθ(y_w) − log πθ(y_l),
    or a reward margin): a positive correlation means the model favours the longer answer.
    """
    named = {"chosen_lengths": chosen_lengths, "rejected_lengths": rejected_lengths}
    if margins is not None:
        named["margins"] = margins
    vectors = aligned(**named)
    difference = vectors[0] - vectors[1]  # (P,)
    unequal = difference != 0
    share = (difference > 0).sum().item() / unequal.sum().item() if unequal.any() else None
    correlation = pearson(difference, vectors[2]) if margins is not None else None
    return LengthBias(share, difference.mean().item(), correlation, len(difference))


@dataclass(frozen=True)
class WinRate:
    value: float
    """Share of items where A scores higher than B, ties counting one half."""
    ties: int
    """Number of tied items."""
    n: int
    """Number of items."""
    stderr: float
    """Binomial standard error sqrt(value(1 − value)/n)."""


def win_rate(rewards_a: VectorLike, rewards_b: VectorLike, *, tolerance: float = 0.0) -> WinRate:
    """Win rate of A over B on the same prompts (item i of A against item i of B), ties half."""
    a, b = aligned(rewards_a=rewards_a, rewards_b=rewards_b)
    value, tied = score_margins(a - b, "half", tolerance)
    return WinRate(value, tied, len(a), binomial_stderr(value, len(a)))
