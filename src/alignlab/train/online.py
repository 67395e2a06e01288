"""Online RL's rollout phase: each optimizer step samples from the policy, scores, and trains.

Example: ``phase = RolloutPhase(config.rl, entry, kwargs, prompts, ...)``; the loop calls
``phase.prepare(step, windows)`` before a step's micro-batches and ``phase(indices)`` for each

Before its micro-batches, an optimizer step (:class:`alignlab.train.loop.Trainer`) hands the
phase all of them at once: every prompt is sampled G times in one call (its prompt encoded once
for the G), every completion is scored by the rewards, and the advantages are computed over
groups (and, for batch scaling, over the whole global batch), which needs every rollout of the
step before the first backward. The phase also returns the step's loss denominator (its
``units``: sequences, or active tokens for the DAPO aggregation, summed over micro-batches and
ranks), so that the result does not depend on how the step is split into micro-batches.

Sampling is seeded by (``train.seed``, the step that generated) and each prompt's position in
the step, so a resumed run draws the same completions. With ``rl.num_iterations`` = μ > 1 one
set of rollouts serves μ optimizer steps and their log-probs at sampling time are the "old"
policy of the ratio; the set is checkpointed, so a resume in the middle of the μ continues it.

A completion a reward cannot score (None) gets advantage 0 and stays out of its group's
statistics, unless ``rl.unscorable_reward`` names the reward it gets instead; either way the
share is logged as ``rewards/unscorable``, never silently read as a reward of 0.
"""

from __future__ import annotations

import inspect
import json
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from alignlab.config import RolloutConfig
from alignlab.decode.sampling import SamplingOptions, sample
from alignlab.errors import AlignlabError, ConfigError
from alignlab.forward import autocast_for, collate_sequences, eval_mode, frozen_logps
from alignlab.kinds import DataKind, select
from alignlab.kinds.prompt import PromptItem, Rollout
from alignlab.losses.advantages import token_rewards
from alignlab.losses.policy import loss_units
from alignlab.models.reference import Reference
from alignlab.registry import ADVANTAGES, Entry
from alignlab.rewards import build_reward
from alignlab.train.loop import StepResult

SEED_STRIDE = 1_000_003
"""Seeds of successive generation steps (and ranks' prompt streams) are this far apart."""
EVAL_SEED = SEED_STRIDE - 1
"""The evaluations' generation "step": one no training run reaches, the same at every evaluation."""


@dataclass(frozen=True)
class _Row:
    """What the step-wide statistics need of one completion (picklable, for the ranks' gather)."""

    position: int
    """Its place in the step's global batch: prompt position · G + sample."""
    reward: float
    """The combined reward, NaN where unscorable."""
    scores: Mapping[str, float | None]
    length: int
    ended: bool
    """It ends with EOS (not clipped at the length limit)."""
    kl: list[float] | None
    """Per-token k1 to the reference, for the KL in the reward."""
    values: list[float] | None = None
    """PPO: the critic's per-token values at sampling time."""


@dataclass(frozen=True)
class Prepared:
    """What the rollout phase tells the loop about a step."""

    units: float
    """The step's global loss denominator (see the module docstring)."""
    metrics: Mapping[str, float]
    """Reward and completion statistics of the rollouts, global over ranks."""


class RolloutPhase:
    """The rollouts of each optimizer step, and the step function that trains on them."""

    def __init__(self, settings: RolloutConfig, entry: Entry, loss_kwargs: Mapping[str, Any], kind: DataKind,
                 prompts: Sequence[PromptItem], model: Any, forward: torch.nn.Module, reference: Reference | None,
                 tokenizer: Any, pad_id: int, eos_id: int | Sequence[int], *, seed: int, rank: int = 0,
                 world: int = 1, precision: str | None = None,
                 rewards: Sequence[tuple[str, Any]] | None = None, critic: torch.nn.Module | None = None,
                 completions_path: Path | None = None) -> None:
        self.settings, self.entry, self.kind, self.prompts = settings, entry, kind, prompts
        self.loss_kwargs = dict(loss_kwargs)
        self.model, self.forward, self.reference, self.tokenizer = model, forward, reference, tokenizer
        self.pad_id, self.eos_id, self.seed, self.rank, self.world = pad_id, eos_id, seed, rank, world
        self.precision = precision
        self.critic = critic  # PPO's value model (its training runs through ``forward``), else None
        self.completions_path = completions_path  # rl.log_completions writes here (rank 0)
        hyper = {h.name: h.default for h in entry.contract.hyperparameters}
        self.aggregation = self.loss_kwargs.get("aggregation", hyper.get("aggregation", "grpo"))
        self.beta = float(self.loss_kwargs.get("beta", hyper.get("beta", 0.0)))
        self.advantage = advantage_estimator(settings, entry)
        self.advantage_name = self.advantage.name
        self.rewards = list(rewards) if rewards is not None else build_rewards(settings)
        self.weights = list(settings.reward_weights or [1.0] * len(self.rewards))
        self.pending: deque[list[Rollout]] = deque()
        self.current: list[list[Rollout]] = []  # the set a num_iterations > 1 run reuses
        self.generated_at = -1

    @property
    def iterations(self) -> int:
        """Optimizer steps per set of rollouts (μ)."""
        return self.settings.num_iterations

    # ---- the rollout phase ---------------------------------------------------------------------

    def prepare(self, step: int, windows: Sequence[Sequence[int]],
                positions: Sequence[Sequence[int]] | None = None) -> Prepared:
        """Sample, score and compute advantages for ``windows`` (this rank's micro-batches of
        prompt indices) at optimizer step ``step`` (0-based); reuse the last set within μ.

        ``positions`` are each prompt's place in the step's global batch (over micro-batches and
        ranks; consecutive by default): its sampling stream, so that the completions do not
        depend on how the step is split over micro-batches or ranks."""
        metrics: dict[str, float] = {}
        if step % self.iterations == 0 or self.generated_at < 0:
            if positions is None:
                positions = consecutive_positions(windows)
            self.current, metrics = self._generate(step, windows, positions)
            self.generated_at = step - step % self.iterations
        self.pending = deque(self.current)
        units = sum(loss_units(self._mask(w), self.aggregation, self.settings.max_new_tokens) for w in self.current)
        return Prepared(max(global_sum([float(units)], self.world, self.forward)[0], 1.0), metrics)

    def _generate(self, step: int, windows: Sequence[Sequence[int]], positions: Sequence[Sequence[int]]
                  ) -> tuple[list[list[Rollout]], dict[str, float]]:
        flat = [i for window in windows for i in window]
        flat_positions = [p for window in positions for p in window]
        g = self.settings.num_generations
        options = SamplingOptions(max_new_tokens=self.settings.max_new_tokens, temperature=self.settings.temperature,
                                  top_p=self.settings.top_p, top_k=self.settings.top_k,
                                  seed=self.seed * SEED_STRIDE + step, batch_size=self.settings.batch_size)
        prompt_ids = [self.prompts[i].prompt_ids for i in flat]
        completions = sample(self.model, prompt_ids, g, options, eos_id=self.eos_id, pad_id=self.pad_id,
                             streams=list(flat_positions), progress=False)
        eos = {self.eos_id} if isinstance(self.eos_id, int) else set(self.eos_id)
        rows = [(i, c) for i, group in zip(flat, completions, strict=True) for c in group]
        texts = [self.tokenizer.decode(list(c), skip_special_tokens=True).strip() for _, c in rows]
        per_reward, combined = self._score([i for i, _ in rows], texts)
        pairs = [(self.prompts[i].prompt_ids, c) for i, c in rows]
        kl_needed = self.settings.kl_in_reward > 0
        old = self._frozen(pairs, self._sampling_policy()) if self.iterations > 1 or kl_needed else None
        kl_tokens = [o - r for o, r in zip(old, self._frozen(pairs, self.reference), strict=True)] if kl_needed else None
        values = self._values(pairs) if self.critic is not None else None
        # Advantages and statistics are over the step's global batch: every rank's rows, in order.
        local = [_Row(position * g + j, math.nan if combined[k] is None else float(combined[k]),
                      {name: scores[k] for name, scores in per_reward.items()}, len(c), bool(c) and c[-1] in eos,
                      None if kl_tokens is None else kl_tokens[k].tolist(),
                      None if values is None else values[k].tolist())
                 for k, ((_, c), position, j) in enumerate(zip(rows, [p for p in flat_positions for _ in range(g)],
                                                              [j for _ in flat for j in range(g)], strict=True))]
        everyone = self._gather(local)
        rewards = torch.tensor([r.reward for r in everyone], dtype=torch.float64)
        scorable = ~rewards.isnan()
        if not bool(scorable.any()):
            raise AlignlabError(f"no completion of step {step + 1} could be scored by the rewards "
                                f"{[n for n, _ in self.rewards]}\n  hint: check the rewards' columns "
                                "(`alignlab rewards show NAME`) against the prompt file's fields")
        masks = [torch.ones(r.length, dtype=torch.bool) for r in everyone]
        kl_all = None if kl_tokens is None else [torch.tensor(r.kl, dtype=torch.float64) for r in everyone]
        values_all = None if values is None else [torch.tensor(r.values, dtype=torch.float64) for r in everyone]
        advantages, returns = self._advantages(rewards, scorable, g, masks, kl_all, values_all)
        kl_sums = None if kl_all is None else torch.tensor([float(k.sum()) for k in kl_all], dtype=torch.float64)
        if kl_sums is not None and self.advantage.contract.level == "sequence":
            rewards = rewards - self.settings.kl_in_reward * kl_sums  # what the advantages saw
        every = self.settings.log_completions
        if every and self.completions_path is not None and (step // self.iterations) % every == 0:
            texts_at = {r.position: (self.prompts[i].prompt, text) for r, (i, _), text in zip(local, rows, texts,
                                                                                            strict=True)}
            self._log_completions(step, everyone, advantages, texts_at)
        at = {r.position: k for k, r in enumerate(everyone)}
        rollouts, k = [], 0
        for window in windows:
            batch = []
            for _ in window:
                for _ in range(g):
                    i, c = rows[k]
                    row = at[local[k].position]
                    batch.append(Rollout(i, tuple(self.prompts[i].prompt_ids), tuple(c), advantages[row],
                                         float(rewards[row]) if scorable[row] else math.nan,
                                         not (c and c[-1] in eos),
                                         None if old is None or self.iterations == 1 else tuple(old[k].tolist()),
                                         None if values is None else tuple(values[k].tolist()),
                                         None if returns is None else returns[row]))
                    k += 1
            rollouts.append(batch)
        return rollouts, rollout_metrics(everyone, rewards, scorable, g, [name for name, _ in self.rewards], kl_sums)

    def _log_completions(self, step: int, everyone: Sequence[_Row], advantages: Sequence[Any],
                         texts_at: dict[int, tuple[Any, str]]) -> None:
        """One JSON line per rollout of the step, every rank's, in the global batch's order. The
        reward is the rewards' weighted sum before any KL in the reward (null: unscorable); a
        token-level estimator's advantage is given as its mean over the completion's tokens."""
        if self.world > 1 and torch.distributed.is_initialized():
            parts: list[Any] = [None] * self.world
            torch.distributed.all_gather_object(parts, texts_at)  # every rank calls: the condition is the step's
            texts_at = {position: pair for part in parts for position, pair in part.items()}
        if self.rank != 0:
            return
        lines = []
        for row, r in enumerate(everyone):
            prompt, completion = texts_at[r.position]
            advantage = advantages[row]
            entry = {"step": step + 1, "prompt": prompt if isinstance(prompt, str) else [dict(m) for m in prompt],
                     "completion": completion, "reward": None if math.isnan(r.reward) else r.reward,
                     "rewards": dict(r.scores), "length": r.length, "clipped": not r.ended}
            if isinstance(advantage, float):
                entry["advantage"] = advantage
            else:
                entry["advantage/token_mean"] = sum(advantage) / max(len(advantage), 1)
            lines.append(json.dumps(entry, ensure_ascii=False))
        self.completions_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.completions_path, "a", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")

    def _gather(self, rows: list[_Row]) -> list[_Row]:
        """Every rank's rows, ordered by their place in the global batch."""
        if self.world > 1 and torch.distributed.is_initialized():
            parts: list[Any] = [None] * self.world
            torch.distributed.all_gather_object(parts, rows)
            rows = [r for part in parts for r in part]
        return sorted(rows, key=lambda r: r.position)

    def _score(self, prompt_rows: Sequence[int], texts: Sequence[str]) -> tuple[dict[str, list[float | None]],
                                                                                list[float | None]]:
        return score_completions(self.rewards, self.weights, [self.prompts[i] for i in prompt_rows], texts,
                                 self.settings.unscorable_reward)

    def _advantages(self, rewards: torch.Tensor, scorable: torch.Tensor, g: int, masks: Sequence[torch.Tensor],
                    kl_tokens: Sequence[torch.Tensor] | None, values: Sequence[torch.Tensor] | None
                    ) -> tuple[list[float | tuple[float, ...]], list[tuple[float, ...]] | None]:
        """Advantages in row order (and GAE's value targets, for PPO); unscorable completions are
        outside every statistic and get 0.

        The KL in the reward (β = rl.kl_in_reward) is subtracted from a sequence estimator's reward
        as its sum over the completion, and placed per token for a token estimator (so a token's
        return carries the KL of the tokens after it only)."""
        contract = self.advantage.contract
        beta = self.settings.kl_in_reward
        valid = scorable.view(-1, g)
        filled = torch.where(scorable, rewards, 0.0)
        options = self._advantage_options()
        if contract.level == "sequence":
            if kl_tokens is not None:
                filled = filled - beta * torch.tensor([float(k.sum()) for k in kl_tokens], dtype=filled.dtype)
            out = self.advantage.obj(filled.view(-1, g), valid=valid, **options).reshape(-1)
            return [float(v) for v in out], None
        mask, per_token_kl, per_token_values = _padded(masks, scorable, kl_tokens, values)
        returns = None
        if contract.rewards == "grouped":
            out = self.advantage.obj(filled.view(-1, g), mask, per_token_kl, beta, valid=valid, **options)
        elif contract.needs_values:
            out, returns = self.advantage.obj(token_rewards(filled, mask, per_token_kl, beta), per_token_values,
                                              mask, **options)
        else:
            out = self.advantage.obj(token_rewards(filled, mask, per_token_kl, beta), mask, **options)
        rows = [tuple(out[r, :len(m)].tolist()) for r, m in enumerate(masks)]
        return rows, None if returns is None else [tuple(returns[r, :len(m)].tolist()) for r, m in enumerate(masks)]

    def _advantage_options(self) -> dict[str, Any]:
        return advantage_options(self.settings, self.advantage)

    # ---- evaluation on held-out prompts ---------------------------------------------------------

    def evaluate(self, prompts: Sequence[PromptItem]) -> dict[str, float]:
        """The rollout metrics on held-out prompts: :func:`evaluate_prompts`."""
        return evaluate_prompts(prompts, self.model, self.tokenizer, self.settings, self.rewards, self.weights,
                                self.reference, self.pad_id, self.eos_id, self.seed, self.precision)

    # ---- the step on the rollouts --------------------------------------------------------------

    def __call__(self, indices: list[int]) -> StepResult:
        if not self.pending:
            raise AlignlabError("the online step ran without rollouts: prepare() must run before each "
                                "optimizer step's micro-batches")
        rollouts = self.pending.popleft()
        if [r.prompt_index for r in rollouts[::self.settings.num_generations]] != list(indices):
            raise AlignlabError(f"micro-batch {indices} does not match the prepared rollouts")
        contract = self.entry.contract
        device = next(self.forward.parameters()).device
        batch = self.kind.collate(rollouts, range(len(rollouts)), self.pad_id, contract).to(device)
        policy_out = self.forward(batch.sequences)
        ref_out = self.reference.logps(batch.sequences) if self._needs_reference() else None
        available = self.kind.inputs(contract, batch, policy_out, ref_out)
        # Without a reference the KL term has weight 0: the policy's own (detached) log-probs make it exactly 0.
        available.setdefault("ref_tokens", policy_out.tokens.detach())
        if self.settings.mask_truncated:  # DAPO's overlong filtering: a clipped completion trains nothing
            kept = torch.tensor([not r.truncated for r in rollouts], device=device)
            available["mask"] = available["mask"] & kept[:, None]
        losses, metrics = self.entry.obj(**select(contract, available, self.entry.name), **self.loss_kwargs)
        if ref_out is None:  # the KL against the policy's own log-probs is 0 by construction: not a measurement
            metrics = {k: v for k, v in metrics.items() if k != "kl"}
        metrics = {**metrics, **self.kind.diagnostics(available)}
        n = len(rollouts)
        sums = {k: float(v.detach().float().sum()) if v.dim() > 0 else float(v) * n for k, v in metrics.items()}
        return StepResult(loss_sum=losses.sum(), examples=n, tokens=batch.sequences.tokens, metrics=sums)

    def _needs_reference(self) -> bool:
        return self.beta > 0

    # ---- helpers -------------------------------------------------------------------------------

    def _mask(self, rollouts: Sequence[Rollout]) -> torch.Tensor:
        width = max(len(r.completion_ids) for r in rollouts)
        mask = torch.zeros(len(rollouts), width, dtype=torch.bool)
        for row, r in enumerate(rollouts):
            mask[row, :len(r.completion_ids)] = not (r.truncated and self.settings.mask_truncated)
        return mask

    def _sampling_policy(self) -> Any:
        return self.model

    def _values(self, rows: Sequence[tuple[Sequence[int], Sequence[int]]]) -> list[torch.Tensor]:
        """The critic's per-token values of each row's completion, without gradients (GAE's V)."""
        out = []
        device = next(self.critic.parameters()).device
        with torch.no_grad(), eval_mode(self.critic):
            for start in range(0, len(rows), 64):
                chunk = rows[start:start + 64]
                batch = collate_sequences(chunk, self.pad_id).to(device)
                with autocast_for(self.precision, device):
                    v = self.critic(batch).float()
                for row, (p, c) in enumerate(chunk):
                    out.append(v[row, len(p):len(p) + len(c)].detach().cpu())
        return out

    def _frozen(self, rows: Sequence[tuple[Sequence[int], Sequence[int]]], model: Any) -> list[torch.Tensor]:
        return completion_logps_of(rows, model, self.pad_id, self.precision, self.settings.temperature)

    # ---- checkpoints ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The rollouts later steps reuse (none when every step samples anew)."""
        if self.iterations == 1:
            return {}
        return {"generated_at": self.generated_at, "rollouts": [[asdict(r) for r in w] for w in self.current]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if not state:
            return
        self.generated_at = int(state["generated_at"])
        self.current = [[_rollout(r) for r in w] for w in state["rollouts"]]


def _padded(masks: Sequence[torch.Tensor], scorable: torch.Tensor, *per_token: Sequence[torch.Tensor] | None
            ) -> tuple[torch.Tensor, ...]:
    """(B, T) mask of the scorable rows' tokens, and each per-token list right-padded to (B, T)
    (None stays None)."""
    width = max(len(m) for m in masks)
    mask = torch.zeros(len(masks), width, dtype=torch.bool)
    for r, m in enumerate(masks):
        mask[r, :len(m)] = m & scorable[r]
    padded: list[Any] = []
    for values in per_token:
        if values is None:
            padded.append(None)
            continue
        out = torch.zeros(len(masks), width, dtype=torch.float64)
        for r, v in enumerate(values):
            out[r, :len(v)] = v.to(torch.float64)
        padded.append(out)
    return (mask, *padded)


def _rollout(row: Mapping[str, Any]) -> Rollout:
    advantage = row["advantage"]
    old = row["old_logps"]
    optional = {name: None if row.get(name) is None else tuple(row[name]) for name in ("old_values", "returns")}
    return Rollout(int(row["prompt_index"]), tuple(row["prompt_ids"]), tuple(row["completion_ids"]),
                   tuple(advantage) if isinstance(advantage, list) else float(advantage), float(row["reward"]),
                   bool(row["truncated"]), None if old is None else tuple(old), **optional)


def consecutive_positions(windows: Sequence[Sequence[int]]) -> list[list[int]]:
    """Places in the step's batch when the caller gives none: the windows' prompts in order."""
    out, start = [], 0
    for window in windows:
        out.append(list(range(start, start + len(window))))
        start += len(window)
    return out


def global_sum(values: list[float], world: int, module: torch.nn.Module) -> list[float]:
    """``values`` summed over the ranks (as they are in one process), on ``module``'s device."""
    if world == 1 or not torch.distributed.is_initialized():
        return values
    total = torch.tensor(values, dtype=torch.float64, device=next(module.parameters()).device)
    torch.distributed.all_reduce(total)
    return total.tolist()


def score_completions(rewards: Sequence[tuple[str, Any]], weights: Sequence[float], prompts: Sequence[PromptItem],
                      texts: Sequence[str], unscorable: float | None = None
                      ) -> tuple[dict[str, list[float | None]], list[float | None]]:
    """Every reward's scores of ``texts`` (completion k of prompt ``prompts[k]``, whose columns the
    rewards see), and their weighted sum (None where a reward cannot score, unless ``unscorable``)."""
    names = sorted({n for p in prompts for n in p.columns})
    columns = {n: [p.columns.get(n) for p in prompts] for n in names}
    per_reward: dict[str, list[float | None]] = {}
    for name, reward in rewards:
        scores = list(reward([p.prompt for p in prompts], list(texts), columns))
        if len(scores) != len(texts):
            raise AlignlabError(f"reward {name!r} returned {len(scores)} scores for {len(texts)} completions")
        per_reward[name] = [None if s is None else float(s) for s in scores]
        bad = [k for k, v in enumerate(per_reward[name]) if v is not None and not math.isfinite(v)]
        if bad:  # None is "cannot score"; NaN or inf is a broken reward, not a missing score
            k = bad[0]
            raise AlignlabError(f"reward {name!r} returned {per_reward[name][k]} for completion {k} of prompt "
                                f"{prompts[k].prompt!r}: {texts[k][:80]!r}\n  hint: return None where a completion "
                                "cannot be scored; a reward must be finite otherwise")
    combined: list[float | None] = []
    for k in range(len(texts)):
        values = [per_reward[name][k] for name, _ in rewards]
        if any(v is None for v in values):
            combined.append(unscorable)
        else:
            combined.append(sum(w * v for w, v in zip(weights, values, strict=True)))  # type: ignore[misc]
    return per_reward, combined


def advantage_estimator(settings: RolloutConfig, entry: Entry) -> Entry:
    """The estimator ``rl.advantage`` names ("auto": the loss's own), checked against the loss
    and rl.scale_rewards before any model loads."""
    name = settings.advantage if settings.advantage != "auto" else entry.contract.advantage
    try:
        estimator = ADVANTAGES.get(name)
    except ConfigError as error:
        raise ConfigError(f"rl.advantage: {error}") from None
    trains_critic = "values" in entry.contract.inputs
    if estimator.contract.needs_values and not trains_critic:
        raise ConfigError(f"rl.advantage={name!r} reads a value model's estimates, which loss {entry.name!r} "
                          "does not train\n  hint: use train.loss=ppo, or an estimator without values "
                          "(grpo, rloo, reinforce_pp)")
    if trains_critic and not estimator.contract.needs_values:
        raise ConfigError(f"loss {entry.name!r} trains a value model on GAE's returns, which rl.advantage={name!r} "
                          "does not give\n  hint: rl.advantage=auto (gae)")
    advantage_options(settings, estimator)
    return estimator


def advantage_options(settings: RolloutConfig, estimator: Entry) -> dict[str, Any]:
    """The rl settings an estimator takes: scale (GRPO's, from rl.scale_rewards; a non-default
    scale for an estimator without one is a mistake the user should hear of), gamma, lam
    (rl.gae_lambda), whiten (on: GAE's advantages whitened over the batch, as TRL's PPO)."""
    parameters = inspect.signature(estimator.obj).parameters
    options: dict[str, Any] = {}
    for option, value in (("gamma", settings.gamma), ("lam", settings.gae_lambda), ("whiten", True)):
        if option in parameters:
            options[option] = value
    if "scale" in parameters:
        return {**options, "scale": settings.scale_rewards}
    if settings.scale_rewards != "group":
        raise ConfigError(f"rl.scale_rewards={settings.scale_rewards!r} but the advantage estimator "
                          f"{estimator.name!r} has no scale option\n  hint: remove rl.scale_rewards, "
                          "or use rl.advantage=grpo")
    return options


def build_rewards(settings: RolloutConfig) -> list[tuple[str, Any]]:
    """(name, reward) of every ``rl.rewards`` spec; built before any model loads, so that a
    typo fails in a second."""
    if not settings.rewards:
        raise ConfigError("online RL needs at least one reward\n  hint: rl.rewards: [\"NAME\"] "
                          "(`alignlab rewards list`), e.g. rl.rewards=[\"length_target(target=20)\"]")
    built: list[tuple[str, Any]] = []
    for k, spec in enumerate(settings.rewards):
        try:
            reward = build_reward(spec)
        except ConfigError as error:
            raise ConfigError(f"rl.rewards[{k}]: {error}") from None
        name, taken = reward_name(spec), {n for n, _ in built}
        if name in taken:  # the same reward twice (other options): rewards/NAME_2/mean, ...
            name = next(f"{name}_{n}" for n in range(2, len(built) + 3) if f"{name}_{n}" not in taken)
        built.append((name, reward))
    return built


def reward_name(spec: Any) -> str:
    """A reward spec's name for its metrics (TRL's: the function's): "length_target" of
    "length_target(target=5)", "my_reward" of "my_module:my_reward"."""
    if isinstance(spec, Mapping):
        return str(spec.get("name", "reward"))
    text = str(spec).split("(", 1)[0].strip() or str(spec)
    return text.rsplit(":", 1)[-1]


def completion_logps_of(rows: Sequence[tuple[Sequence[int], Sequence[int]]], model: Any, pad_id: int,
                        precision: str | None, temperature: float) -> list[torch.Tensor]:
    """Per-token log-probs (logits divided by ``temperature``, no gradients) of each row's
    completion, from a model or a Reference (which applies its own temperature)."""
    out = []
    for start in range(0, len(rows), 64):
        chunk = rows[start:start + 64]
        batch = collate_sequences(chunk, pad_id)
        if isinstance(model, torch.nn.Module):
            lp = frozen_logps(model, batch, precision=precision, temperature=temperature)
        else:  # a Reference
            lp = model.logps(batch)
        for row, (p, c) in enumerate(chunk):
            out.append(lp.tokens[row, len(p):len(p) + len(c)].detach().cpu())
    return out


def rollout_metrics(rows: Sequence[_Row], rewards: torch.Tensor, scorable: torch.Tensor, g: int,
                    reward_names: Sequence[str], kl_sums: torch.Tensor | None) -> dict[str, float]:
    """TRL's GRPO metrics over a batch of rollouts (G consecutive rows per prompt)."""
    lengths = torch.tensor([r.length for r in rows], dtype=torch.float64)
    ended = torch.tensor([r.ended for r in rows])
    grouped = rewards.view(-1, g)
    zero_std = [bool(row[~row.isnan()].std(unbiased=False) == 0) for row in grouped if (~row.isnan()).sum() > 0]
    kept = rewards[scorable]
    unscored = sum(any(v is None for v in r.scores.values()) for r in rows)
    out = {"reward": float(kept.mean()), "reward_std": float(kept.std()) if len(kept) > 1 else 0.0,
           "frac_reward_zero_std": sum(zero_std) / max(len(zero_std), 1), "rewards/unscorable": unscored / len(rows),
           "completions/mean_length": float(lengths.mean()), "completions/min_length": float(lengths.min()),
           "completions/max_length": float(lengths.max()),
           "completions/clipped_ratio": float((~ended).double().mean()),
           "completions/mean_terminated_length": float(lengths[ended].mean()) if bool(ended.any()) else 0.0}
    for name in reward_names:
        values = torch.tensor([r.scores[name] for r in rows if r.scores[name] is not None], dtype=torch.float64)
        if len(values):
            out[f"rewards/{name}/mean"] = float(values.mean())
            out[f"rewards/{name}/std"] = float(values.std()) if len(values) > 1 else 0.0
    if kl_sums is not None:
        out["kl_in_reward"] = float(kl_sums.mean())
    return out


def evaluate_prompts(prompts: Sequence[PromptItem], model: Any, tokenizer: Any, settings: RolloutConfig,
                     rewards: Sequence[tuple[str, Any]], weights: Sequence[float], reference: Any, pad_id: int,
                     eos_id: int | Sequence[int], seed: int, precision: str | None = None,
                     logp_temperature: float | None = None) -> dict[str, float]:
    """The rollout metrics on held-out prompts (data.eval_path): G completions of each, sampled as
    the rollouts are (the policy in eval mode) and scored by the same rewards; with a reference,
    ``kl``: the mean over completions of Σ_t log π(y_t)/π_ref(y_t), an estimate of KL(π‖π_ref)
    per completion, with both log-probs at ``logp_temperature`` (default: the sampling
    temperature, as online RL's reference reads them). Every evaluation draws from the same random
    streams, so two evaluations differ by the policy alone, not by sampling luck. Each rank
    evaluates every prompt (as the offline evaluation does): the numbers need no collective."""
    g = settings.num_generations
    options = SamplingOptions(max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                              top_p=settings.top_p, top_k=settings.top_k, seed=seed * SEED_STRIDE + EVAL_SEED,
                              batch_size=settings.batch_size)
    with eval_mode(model):
        completions = sample(model, [p.prompt_ids for p in prompts], g, options, eos_id=eos_id, pad_id=pad_id,
                             progress=False)
        rows = [(p, c) for p, group in zip(prompts, completions, strict=True) for c in group]
        texts = [tokenizer.decode(list(c), skip_special_tokens=True).strip() for _, c in rows]
        per_reward, combined = score_completions(rewards, weights, [p for p, _ in rows], texts,
                                                 settings.unscorable_reward)
        kl = None
        if reference is not None:
            pairs = [(p.prompt_ids, c) for p, c in rows]
            temperature = settings.temperature if logp_temperature is None else logp_temperature
            policy_lp = completion_logps_of(pairs, model, pad_id, precision, temperature)
            reference_lp = completion_logps_of(pairs, reference, pad_id, precision, temperature)
            kl = torch.tensor([float((a - b).sum()) for a, b in zip(policy_lp, reference_lp, strict=True)],
                              dtype=torch.float64)
    eos = {eos_id} if isinstance(eos_id, int) else set(eos_id)
    summary = [_Row(k, math.nan if combined[k] is None else float(combined[k]),
                    {name: scores[k] for name, scores in per_reward.items()}, len(c), bool(c) and c[-1] in eos, None)
               for k, (_, c) in enumerate(rows)]
    values = torch.tensor([r.reward for r in summary], dtype=torch.float64)
    if not bool((~values.isnan()).any()):
        raise AlignlabError(f"no completion of the {len(prompts)} evaluation prompts could be scored by the "
                            f"rewards {[n for n, _ in rewards]}\n  hint: check the eval file's fields against "
                            "the rewards' columns (`alignlab rewards show NAME`)")
    metrics = rollout_metrics(summary, values, ~values.isnan(), g, [n for n, _ in rewards], None)
    if kl is not None:
        metrics["kl"] = float(kl.mean())
    return metrics
