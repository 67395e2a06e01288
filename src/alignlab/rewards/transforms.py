"""Reward transforms and combinations: LSC transform, z-scores, weighted sums, the logical AND.

Example: ``LSCTransform(rm, ReferenceRewards.from_samples(rm, base_samples))(prompts, completions)``

Each wrapper takes any :class:`Reward` (or a spec, through :func:`build_reward`) and is a
:class:`Reward` itself, so wrappers nest and can be named in a config (``lsc``, ``whiten``,
``weighted_sum``, ``normalize_sum``, ``and``). A None score of an inner reward stays None, and a
combination is None wherever any of its components is: a sum missing a term is not comparable
with the complete sums beside it, and reading the missing term as 0 would let the other
properties score a completion that one property could not.

The LSC transform and the AND follow Wang, Nagpal, Berant, Eisenstein, D'Amour, Koyejo and Veitch
(2024), "Transforming and Combining Rewards for Aligning Large Language Models", arXiv
2402.00742 (ICML 2024): u(x, y) = log σ(r(x, y) − r_ref(x)), and for K properties
Σ_k log σ(r_k − r_k^ref(x)) = log Π_k σ(r_k − r_k^ref(x)), the log-probability that y is good on
every property at once. A plain Σ_k r_k is not that: a high score on one property buys back a
low one on another.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignlab.data.records import Text
from alignlab.errors import ConfigError
from alignlab.rewards.base import Columns, Reward, Scores, build_reward, register_reward
from alignlab.rewards.reference import ReferenceRewards, RewardLike, finite_number

PAPER = ("Wang, Nagpal, Berant, Eisenstein, D'Amour, Koyejo, Veitch 2024, Transforming and "
         "Combining Rewards for Aligning Large Language Models, arXiv 2402.00742")

"""A reward or its spec (``"NAME(key=value)"``, a YAML mapping, ``"module:function"``)."""


def log_sigmoid(z: float) -> float:
    """log σ(z) = −softplus(−z), accurate in float64 at both ends.

    Example: ``log_sigmoid(0.0)  # -0.693... = log ½``
    """
    # min(z, 0) − log1p(e^−|z|): the exponent is never positive (no overflow), and log1p keeps
    # the e^−z tail for large z, where log(1 + e^−z) would round to 0.
    return min(z, 0.0) - math.log1p(math.exp(-abs(z)))


def lsc_utility(r: float, r_ref: float) -> float:
    """The LSC transform of one reward: log σ(r − r_ref) ≤ 0, log ½ at r = r_ref.

    Example: ``lsc_utility(3.0, 3.0)  # log ½``
    """
    return log_sigmoid(r - r_ref)


def _listed(option: str, values: Any, what: str) -> list[Any]:
    # A lone spec string is iterable too: name the mistake instead of building one reward a letter.
    if isinstance(values, str | Mapping | Reward | Path | ReferenceRewards) \
            or not isinstance(values, Iterable):
        raise ConfigError(f"{option} must be a list of {what}, got {values!r}\n  hint: write "
                          f"{option}=[..., ...], one per reward")
    return list(values)


def _rewards(rewards: Any) -> list[Reward]:
    built = [build_reward(r) for r in _listed("rewards", rewards, "rewards (specs)")]
    if not built:
        raise ConfigError("rewards is empty: a combination needs at least one reward")
    return built


def _per_reward(option: str, values: Any, rewards: Sequence[Reward], what: str) -> list[Any]:
    values = _listed(option, values, what)
    if len(values) != len(rewards):
        raise ConfigError(f"{len(values)} {option} for {len(rewards)} rewards: give one per "
                          "reward, in the same order")
    return values


# ------------------------------------------------------------------------------- transforms


@register_reward("lsc", summary="log-sigmoid-centred reward log σ(r − r_ref(x)), r_ref from base "
                 "samples", family="transform", source=PAPER)
class LSCTransform(Reward):
    """u(x, y) = log σ(r(x, y) − r_ref(x)) of an inner reward (Wang et al. 2024, arXiv 2402.00742).

    Example: ``LSCTransform("reward_model(...)", "ref.json")(prompts, completions)``

    ``reference`` is a :class:`ReferenceRewards` or the path of a saved one, built with the same
    reward (by name). u ≤ 0, u → 0 as r → ∞ and ∂u/∂r = σ(r_ref − r): gains shrink once r is well
    above the reference, which damps reward hacking and favours improving poor outputs.
    """

    def __init__(self, reward: RewardLike, reference: ReferenceRewards | str | Path) -> None:
        self.reward = build_reward(reward)
        self.reference = reference if isinstance(reference, ReferenceRewards) \
            else ReferenceRewards.load(reference, reward=self.reward)
        if self.reference.reward != self.reward.name:
            raise ConfigError(f"the reference rewards were built with reward "
                              f"{self.reference.reward!r}, not {self.reward.name!r}: r − r_ref "
                              "would mix two scales\n  hint: build the reference with the reward "
                              "you transform")
        self.columns = self.reward.columns
        self.name = f"lsc({self.reward.name})"

    def score(self, prompts: Sequence[Text], completions: Sequence[str],
              columns: Columns) -> Scores:
        references = [self.reference[p] for p in prompts]  # a missing prompt fails before scoring
        scores = self.reward(prompts, completions, columns)
        return [None if r is None else lsc_utility(r, ref)
                for r, ref in zip(scores, references, strict=True)]


@dataclass(frozen=True)
class Stats:
    """Mean and population standard deviation of a reward's scores on a calibration set."""

    mean: float
    std: float
    scored: int = 0
    unscorable: int = 0

    @classmethod
    def of(cls, scores: Scores, name: str = "reward") -> Stats:
        """Statistics of the non-None scores; fewer than two, or all equal, is an error.

        Example: ``Stats.of([1.0, 3.0, None])  # Stats(mean=2.0, std=1.0, scored=2, unscorable=1)``
        """
        kept = [s for s in scores if s is not None]
        if len(kept) < 2:
            raise ConfigError(f"reward {name!r} scored {len(kept)} of {len(scores)} calibration "
                              "completions: its mean and spread need at least two scores")
        mean = math.fsum(kept) / len(kept)
        std = math.sqrt(math.fsum((s - mean) ** 2 for s in kept) / len(kept))
        if std == 0.0:
            raise ConfigError(f"reward {name!r} gave every calibration completion the same score "
                              f"({mean!r}), so its std is 0 and it cannot be whitened\n  hint: "
                              "calibrate on more varied completions")
        return cls(mean, std, len(kept), len(scores) - len(kept))


@register_reward("whiten", summary="z-score of a reward: (r − mean) / std", family="transform")
class Whiten(Reward):
    """(r − mean) / std of an inner reward, so that rewards on different scales can be added.

    Example: ``Whiten.fit(rm, prompts, completions)(new_prompts, new_completions)``
    """

    def __init__(self, reward: RewardLike, mean: float, std: float) -> None:
        self.reward = build_reward(reward)
        self.mean = finite_number("mean", mean)
        self.std = finite_number("std", std)
        if self.std <= 0.0:
            raise ConfigError(f"std must be positive, got {std!r} (reward {self.reward.name!r})")
        self.columns = self.reward.columns
        self.name = f"whiten({self.reward.name})"

    @classmethod
    def fit(cls, reward: RewardLike, prompts: Sequence[Text], completions: Sequence[str],
            columns: Columns | None = None) -> Whiten:
        """Whitened by the mean and std of ``reward`` on a calibration set (Nones left out)."""
        reward = build_reward(reward)
        stats = Stats.of(reward(prompts, completions, columns), reward.name)
        return cls(reward, stats.mean, stats.std)

    def score(self, prompts: Sequence[Text], completions: Sequence[str],
              columns: Columns) -> Scores:
        return [None if r is None else (r - self.mean) / self.std
                for r in self.reward(prompts, completions, columns)]


class _Sum(Reward):
    """Σ_k w_k·c_k over component rewards; None wherever any component is None."""

    def __init__(self, components: list[Reward], weights: Sequence[float], name: str) -> None:
        self.components = components
        self.weights = list(weights)
        self.columns = tuple(dict.fromkeys(c for r in components for c in r.columns))
        self.name = name

    def score(self, prompts: Sequence[Text], completions: Sequence[str],
              columns: Columns) -> Scores:
        each = [r(prompts, completions, columns) for r in self.components]
        return [None if any(s is None for s in row)
                else math.fsum(w * s for w, s in zip(self.weights, row, strict=True))
                for row in zip(*each, strict=True)]


@register_reward("weighted_sum", summary="Σ_k w_k·r_k of several rewards (None if any is None)",
                 family="transform")
class WeightedSum(_Sum):
    """Σ_k w_k·r_k. The rewards should share a scale (:class:`NormalizeThenSum`), and a sum lets
    one property make up for another (:class:`AndCombination` does not).

    Example: ``WeightedSum(["length_target(target=3)", rm], [1.0, 0.5])(prompts, completions)``
    """

    def __init__(self, rewards: Sequence[RewardLike], weights: Sequence[float]) -> None:
        built = _rewards(rewards)
        weights = [finite_number(f"weights[{i}]", w)
                   for i, w in enumerate(_per_reward("weights", weights, built, "numbers"))]
        terms = ", ".join(f"{w:g}*{r.name}" for w, r in zip(weights, built, strict=True))
        super().__init__(built, weights, f"weighted_sum({terms})")


class NormalizeThenSum(_Sum):
    """Σ_k (r_k − mean_k) / std_k: each reward whitened by its own statistics, then summed.

    Example: ``NormalizeThenSum.fit([rm_a, rm_b], prompts, completions)(prompts2, completions2)``
    """

    def __init__(self, rewards: Sequence[RewardLike],
                 stats: Sequence[Stats | tuple[float, float]]) -> None:
        built = _rewards(rewards)
        stats = _per_reward("stats", stats, built, "Stats or (mean, std) pairs")
        parts = [Whiten(r, s.mean, s.std) if isinstance(s, Stats) else Whiten(r, *s)
                 for r, s in zip(built, stats, strict=True)]
        names = ", ".join(r.name for r in built)
        super().__init__(parts, [1.0] * len(parts), f"normalize_sum({names})")

    @classmethod
    def fit(cls, rewards: Sequence[RewardLike], prompts: Sequence[Text],
            completions: Sequence[str], columns: Columns | None = None) -> NormalizeThenSum:
        """Each reward's mean and std on one calibration set (each leaving out its own Nones)."""
        built = _rewards(rewards)
        return cls(built, [Stats.of(r(prompts, completions, columns), r.name) for r in built])


@register_reward("normalize_sum", summary="Σ_k (r_k − mean_k) / std_k: whitened rewards, summed",
                 family="transform")
def normalize_sum(rewards: list, means: list[float], stds: list[float]) -> NormalizeThenSum:
    """The spec form of :class:`NormalizeThenSum`, one mean and one std per reward.

    Example: ``build_reward("normalize_sum(rewards=['a', 'b'], means=[0, 1], stds=[1, 2])")``
    """
    built = _rewards(rewards)
    means = _per_reward("means", means, built, "numbers")
    stds = _per_reward("stds", stds, built, "numbers")
    return NormalizeThenSum(built, list(zip(means, stds, strict=True)))


@register_reward("and", summary="logical AND of properties: Σ_k log σ(r_k − r_k^ref(x))",
                 family="transform", source=PAPER)
class AndCombination(_Sum):
    """Σ_k log σ(r_k − r_k^ref(x)) = log Π_k σ(·), the log-probability of being good on every
    property (Wang et al. 2024, arXiv 2402.00742); no greater than any of its terms, so no
    property can make up for another.

    Example: ``AndCombination([helpful, harmless], ["helpful_ref.json", "harmless_ref.json"])``
    """

    def __init__(self, rewards: Sequence[RewardLike],
                 references: Sequence[ReferenceRewards | str | Path]) -> None:
        built = _rewards(rewards)
        references = _per_reward("references", references, built,
                                 "ReferenceRewards or paths of saved ones")
        parts = [LSCTransform(r, ref) for r, ref in zip(built, references, strict=True)]
        names = ", ".join(r.name for r in built)
        super().__init__(parts, [1.0] * len(parts), f"and({names})")
