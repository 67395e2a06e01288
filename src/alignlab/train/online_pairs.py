"""Online and iterative DPO, and OPA-DPO: any paired loss of the library on the policy's own samples.

Example: ``phase = OnlinePairsPhase(config.rl, get_loss("dpo"), {"beta": 0.1}, prompts, model,
forward, reference, tokenizer, pad_id, eos_id, seed=0)``, then
``Trainer(config.train, forward, phase, order, run_dir, rollout=phase).fit()``

Online DPO (Guo et al. 2024, "Direct Language Model Alignment from Online AI Feedback", arXiv
2402.04792; Xiong et al. 2024, "Iterative Preference Learning from Human Feedback", arXiv
2312.11456). Each round samples K = ``rl.num_generations`` completions of every prompt of the step
from the current policy, scores them with ``rl.rewards`` and ranks them: ``rl.pairs: best_worst``
pairs the best against the worst, ``all`` every two completions with a strictly higher reward.
Ties are never paired (a prompt whose scorable completions all tie gives no pair: counted in
``pairs/tied_prompts``) and a completion a reward cannot score (None) is left out (counted in
``rewards/unscorable``), unless ``rl.unscorable_reward`` gives it a number. A round lasts
``rl.num_iterations`` optimizer steps: 1 is online DPO (fresh samples every step), more is
iterative DPO (the round's pairs are trained on that many times, and checkpointed with it).

The pairs go through the offline step unchanged (:func:`alignlab.train.steps.make_step` with the
paired data kind): any loss whose contract trains on "paired" data works, with its own reference
(a frozen copy or the adapters-off policy; a cache cannot hold log-probs of samples that change).
The loss of a step is the sum of its pairs' losses over the number of pairs in the step (global
over ranks, summed over micro-batches), so it does not depend on the accumulation split.

Sampling is seeded exactly as :class:`~alignlab.train.online.RolloutPhase`: seed =
``train.seed`` · 1_000_003 + the step that samples, one stream per prompt at its place in the
step's global batch, so a resumed run samples the same completions.

OPA-DPO (Yang et al. 2025, CVPR, "Mitigating Hallucinations in Large Vision-Language Models via
DPO: On-Policy Data Hold the Key", arXiv 2501.09695) is :func:`run_opa_dpo`: sample y_o from
π_0, a reviser rewrites it minimally into y_r, an SFT step on y_r (and the ground truth y_gt where
the data has one) makes π_OPA, and DPO starts from π_OPA with π_OPA as its frozen reference, on
the pairs (y_r ≻ y_o) and (y_gt ≻ y_o). The DPO here is sequence-level (Eq. 7 of DPO), not the
paper code's position-wise variant.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from alignlab.config import TrainConfig
from alignlab.decode.sampling import SamplingOptions, sample
from alignlab.errors import AlignlabError, ConfigError
from alignlab.kinds import get_kind
from alignlab.kinds.prompt import PromptItem
from alignlab.losses.contract import get_loss
from alignlab.models.reference import CopyReference, Reference
from alignlab.registry import Entry, import_named
from alignlab.train.loop import StepResult, Trainer
from alignlab.train.online import (
    SEED_STRIDE,
    Prepared,
    build_rewards,
    consecutive_positions,
    evaluate_prompts,
    global_sum,
    score_completions,
)
from alignlab.train.order import ExampleOrder
from alignlab.train.steps import make_step

PAIRINGS = ("best_worst", "all")
"""``rl.pairs``: the best against the worst completion of a prompt, or every ordered pair."""


@dataclass(frozen=True)
class SampledPair:
    """One preference pair of sampled completions: what the paired kind's ``collate`` reads
    (``prompt_ids``, ``chosen_ids``, ``rejected_ids`` and their token weights), and its origin."""

    prompt_index: int
    prompt_ids: tuple[int, ...]
    chosen_ids: tuple[int, ...]
    rejected_ids: tuple[int, ...]
    chosen_reward: float = math.nan
    rejected_reward: float = math.nan
    chosen_weights: tuple[float, ...] | None = None
    rejected_weights: tuple[float, ...] | None = None


def rank_pairs(rewards: Sequence[float | None], how: str = "best_worst") -> tuple[list[tuple[int, int]], str]:
    """(winner, loser) indices of one prompt's completions, and why there are none if so.

    ``rewards[k]`` is completion k's reward (None or NaN: unscorable, never paired). ``best_worst``:
    the first highest against the first lowest; ``all``: every (i, j) with rewards[i] > rewards[j],
    in order of i then j. The status is "paired", "tied" (at least two scorable completions, all
    equal) or "too_few" (fewer than two scorable)."""
    if how not in PAIRINGS:
        raise ConfigError(f"rl.pairs={how!r} is not one of {list(PAIRINGS)}")
    scored = [(k, float(r)) for k, r in enumerate(rewards) if r is not None and not math.isnan(float(r))]
    if len(scored) < 2:
        return [], "too_few"
    if how == "best_worst":
        best = max(scored, key=lambda kr: kr[1])  # max/min return the first of equals
        worst = min(scored, key=lambda kr: kr[1])
        pairs = [(best[0], worst[0])] if best[1] > worst[1] else []
    else:
        pairs = [(i, j) for i, ri in scored for j, rj in scored if ri > rj]
    return pairs, "paired" if pairs else "tied"


class OnlinePairsPhase:
    """Each round's sampled, ranked pairs, and the step function that trains a paired loss on them
    (the protocol of :class:`~alignlab.train.online.RolloutPhase`: pass it to the loop as both
    ``step`` and ``rollout``)."""

    def __init__(self, settings: Any, entry: Entry, loss_kwargs: Mapping[str, Any], prompts: Sequence[PromptItem],
                 model: Any, forward: torch.nn.Module, reference: Reference | None, tokenizer: Any, pad_id: int,
                 eos_id: int | Sequence[int], *, seed: int, rank: int = 0, world: int = 1,
                 rewards: Sequence[tuple[str, Any]] | None = None, state: Any = None) -> None:
        if entry.contract.data != "paired":
            raise ConfigError(f"online pairs train a loss on paired data, but {entry.name!r} trains on "
                              f"{entry.contract.data} data\n  hint: train.loss=dpo (or ipo, simpo, ...: "
                              "`alignlab losses list`)")
        self.settings, self.entry, self.prompts = settings, entry, prompts
        self.model, self.forward, self.reference, self.tokenizer = model, forward, reference, tokenizer
        self.pad_id, self.eos_id, self.seed, self.rank, self.world = pad_id, eos_id, seed, rank, world
        self.how = getattr(settings, "pairs", None) or "best_worst"
        if self.how not in PAIRINGS:
            raise ConfigError(f"rl.pairs={self.how!r} is not one of {list(PAIRINGS)}")
        if settings.num_generations < 2:
            raise ConfigError(f"online pairs need at least 2 completions a prompt to rank, got "
                              f"rl.num_generations={settings.num_generations}")
        self.rewards = list(rewards) if rewards is not None else build_rewards(settings)
        self.weights = list(getattr(settings, "reward_weights", None) or [1.0] * len(self.rewards))
        self.kind = get_kind("paired")
        self.items: list[SampledPair] = []  # the step function reads this list: refilled in place
        self.step_fn = make_step(entry, loss_kwargs, self.kind, self.items, forward, reference, pad_id, state)
        self.windows: list[list[int]] = []  # each micro-batch's pair indices into ``items``
        self.window_prompts: list[list[int]] = []
        self.fillers: list[int] = []  # a micro-batch without pairs: an index of a stand-in pair (weight 0)
        self.pending: deque[int] = deque()
        self.units = 0.0
        self.generated_at = -1

    @property
    def iterations(self) -> int:
        """Optimizer steps per round of samples (1: online DPO; more: iterative DPO)."""
        return self.settings.num_iterations

    def evaluate(self, prompts: Sequence[PromptItem]) -> dict[str, float]:
        """The rollout metrics (reward, lengths, KL to the reference) on held-out prompts, sampled
        as the rounds are: :func:`~alignlab.train.online.evaluate_prompts`; the KL's log-probs at
        temperature 1, where the paired loss (and its reference) read them."""
        return evaluate_prompts(prompts, self.model, self.tokenizer, self.settings, self.rewards, self.weights,
                                self.reference, self.pad_id, self.eos_id, self.seed, logp_temperature=1.0)

    # ---- the round's pairs ---------------------------------------------------------------------

    def prepare(self, step: int, windows: Sequence[Sequence[int]],
                positions: Sequence[Sequence[int]] | None = None) -> Prepared:
        """Sample, score and pair ``windows`` (this rank's micro-batches of prompt indices) at
        optimizer step ``step`` (0-based), or reuse the round's pairs within ``num_iterations``."""
        metrics: dict[str, float] = {}
        if step % self.iterations == 0 or self.generated_at < 0:
            if positions is None:
                positions = consecutive_positions(windows)
            start = step - step % self.iterations
            metrics = self._generate(start, windows, positions)
            self.generated_at = start
        if [list(w) for w in windows] != self.window_prompts:
            raise AlignlabError(f"step {step + 1}: micro-batches {list(map(list, windows))} are not the round's "
                                f"{self.window_prompts}")
        self.pending = deque(range(len(self.windows)))
        return Prepared(max(self.units, 1.0), metrics)

    def _generate(self, step: int, windows: Sequence[Sequence[int]], positions: Sequence[Sequence[int]]
                  ) -> dict[str, float]:
        flat = [i for window in windows for i in window]
        flat_positions = [p for window in positions for p in window]
        k = self.settings.num_generations
        options = SamplingOptions(max_new_tokens=self.settings.max_new_tokens, temperature=self.settings.temperature,
                                  top_p=self.settings.top_p, top_k=self.settings.top_k,
                                  seed=self.seed * SEED_STRIDE + step, batch_size=self.settings.batch_size)
        completions = sample(self.model, [self.prompts[i].prompt_ids for i in flat], k, options, eos_id=self.eos_id,
                             pad_id=self.pad_id, streams=flat_positions, progress=False)
        rows = [(i, c) for i, group in zip(flat, completions, strict=True) for c in group]
        texts = [self.tokenizer.decode(list(c), skip_special_tokens=True).strip() for _, c in rows]
        per_reward, combined = score_completions(self.rewards, self.weights, [self.prompts[i] for i, _ in rows],
                                                 texts, getattr(self.settings, "unscorable_reward", None))
        self.items.clear()
        self.windows, self.window_prompts, self.fillers = [], [list(w) for w in windows], []
        counts = {"tied": 0.0, "too_few": 0.0, "paired": 0.0}
        margin, row = 0.0, 0
        for window in windows:
            ids: list[int] = []
            filler = -1
            for i in window:
                group = rows[row:row + k]
                scores = combined[row:row + k]
                found, status = rank_pairs(scores, self.how)
                counts[status] += 1
                for w, lo in found:
                    ids.append(len(self.items))
                    self.items.append(SampledPair(i, tuple(self.prompts[i].prompt_ids), tuple(group[w][1]),
                                                  tuple(group[lo][1]), float(scores[w]), float(scores[lo])))
                    margin += float(scores[w]) - float(scores[lo])  # type: ignore[arg-type]
                if filler < 0:
                    filler = len(self.items)
                    self.items.append(SampledPair(i, tuple(self.prompts[i].prompt_ids), tuple(group[0][1]),
                                                  tuple(group[0][1])))
                row += k
            self.windows.append(ids)
            self.fillers.append(filler)
        # Statistics over the step's global batch: sums over this rank, then over the ranks.
        kept = [float(v) for v in combined if v is not None]
        lengths = [len(c) for _, c in rows]
        eos = {self.eos_id} if isinstance(self.eos_id, int) else set(self.eos_id)
        unscored = sum(any(per_reward[n][j] is None for n, _ in self.rewards) for j in range(len(rows)))
        local = [float(sum(len(w) for w in self.windows)), counts["tied"], counts["too_few"], float(len(flat)),
                 float(len(rows)), float(len(kept)), sum(kept), sum(v * v for v in kept), float(unscored),
                 margin, float(sum(lengths)), float(sum(bool(c) and c[-1] in eos for _, c in rows))]
        for name, _ in self.rewards:
            values = [v for v in per_reward[name] if v is not None]
            local += [float(len(values)), sum(values)]
        total = global_sum(local, self.world, self.forward)
        pairs, tied, too_few, n_prompts, n_rows, n_kept, r_sum, r_sq, unscored_total, margin_sum = total[:10]
        length_sum, ended = total[10:12]
        self.units = pairs
        mean = r_sum / n_kept if n_kept else math.nan
        var = (r_sq - n_kept * mean * mean) / (n_kept - 1) if n_kept > 1 else 0.0
        out = {"reward": mean, "reward_std": math.sqrt(max(var, 0.0)), "rewards/unscorable": unscored_total / n_rows,
               "pairs": pairs, "pairs/per_prompt": pairs / max(n_prompts, 1.0),
               "pairs/tied_prompts": tied / max(n_prompts, 1.0), "pairs/unrankable_prompts": too_few / max(n_prompts, 1.0),
               "pairs/reward_margin": margin_sum / pairs if pairs else 0.0,
               "completions/mean_length": length_sum / n_rows,
               "completions/clipped_ratio": 1.0 - ended / n_rows}
        for n, (name, _) in enumerate(self.rewards):
            count, value = total[12 + 2 * n], total[13 + 2 * n]
            if count:
                out[f"rewards/{name}/mean"] = value / count
        if n_kept == 0:
            raise AlignlabError(f"no completion of step {step + 1} could be scored by the rewards "
                                f"{[n for n, _ in self.rewards]}\n  hint: check the rewards' columns "
                                "(`alignlab rewards show NAME`) against the prompt file's fields")
        return out

    # ---- the step on the pairs -----------------------------------------------------------------

    def __call__(self, indices: list[int]) -> StepResult:
        if not self.pending:
            raise AlignlabError("the online pairs step ran without pairs: prepare() must run before each "
                                "optimizer step's micro-batches")
        window = self.pending.popleft()
        if self.window_prompts[window] != list(indices):
            raise AlignlabError(f"micro-batch {indices} does not match the prepared pairs")
        if self.windows[window]:
            return self.step_fn(self.windows[window])
        # No pair here: the forward still runs (DDP's all-reduce waits for every rank's backward),
        # on a completion against itself, with weight 0; it counts no example.
        result = self.step_fn([self.fillers[window]])
        # The same metric names as a real micro-batch (ranks all-reduce them as one vector), valued 0.
        return StepResult(loss_sum=result.loss_sum * 0.0, examples=0, tokens=0,  # nothing trained on
                          metrics=dict.fromkeys(result.metrics, 0.0),
                          loss_metrics={k: v * 0 for k, v in result.loss_metrics.items()})

    # ---- checkpoints ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The round's pairs, which later steps of the round reuse (none when every step samples)."""
        if self.iterations == 1:
            return {}
        return {"generated_at": self.generated_at, "units": self.units, "items": [asdict(p) for p in self.items],
                "windows": self.windows, "window_prompts": self.window_prompts, "fillers": self.fillers}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if not state:
            return
        self.generated_at, self.units = int(state["generated_at"]), float(state["units"])
        self.items[:] = [_pair(p) for p in state["items"]]
        self.windows = [list(w) for w in state["windows"]]
        self.window_prompts = [list(w) for w in state["window_prompts"]]
        self.fillers = list(state["fillers"])


def _pair(row: Mapping[str, Any]) -> SampledPair:
    weights = {n: None if row.get(n) is None else tuple(row[n]) for n in ("chosen_weights", "rejected_weights")}
    return SampledPair(int(row["prompt_index"]), tuple(row["prompt_ids"]), tuple(row["chosen_ids"]),
                       tuple(row["rejected_ids"]), float(row["chosen_reward"]), float(row["rejected_reward"]),
                       **weights)


def online_pairs_reference_mode(mode: str, lora: bool, entry: Entry) -> str:
    """The reference mode of online pairs: copy or adapters ("auto": adapters with LoRA, else a
    copy), none for a reference-free loss; never a cache (its log-probs are of fixed data)."""
    if mode == "cache":
        raise ConfigError(f"train.reference=cache cannot serve online {entry.name!r}: a cache holds the "
                          "reference log-probs of fixed data, and online pairs are sampled anew every round\n"
                          "  hint: use train.reference=copy (or adapters with LoRA)")
    if not entry.contract.needs_ref:
        if mode not in ("auto", "none"):
            raise ConfigError(f"train.reference={mode!r} but loss {entry.name!r} uses no reference: "
                              "remove the option (it would be silently ignored)")
        return "none"
    if mode == "none":
        raise ConfigError(f"loss {entry.name!r} needs a reference model; train.reference cannot be none")
    if mode == "adapters" and not lora:
        raise ConfigError("train.reference=adapters needs model.lora.enabled=true")
    if mode == "auto":
        return "adapters" if lora else "copy"
    return mode


# ---- OPA-DPO ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A (prompt, completion) to imitate in OPA's SFT step: what the sft kind's ``collate`` reads."""

    prompt_index: int
    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]
    source: str
    """"revised" (y_r) or "ground_truth" (y_gt)."""


@dataclass
class OPAData:
    """Steps 1 and 2 of OPA-DPO: the samples of π_0, their revisions, and what trains on them."""

    targets: list[Target]
    """OPA's SFT data: every y_r and every y_gt."""
    pairs: list[SampledPair]
    """DPO's pairs: (y_r ≻ y_o) where the reviser changed y_o, and (y_gt ≻ y_o)."""
    stats: dict[str, int]


def load_reviser(spec: str | Callable[..., str | None]) -> Callable[..., str | None]:
    """A reviser: a callable ``f(prompt, completion, **columns) -> str | None``, or the name of one,
    ``"module:function"`` (imported because the user named it)."""
    if callable(spec):
        return spec
    target = import_named(spec, "rl.opa.reviser")
    if not callable(target):
        raise ConfigError(f"rl.opa.reviser={spec!r} is not callable")
    return target


def opa_data(prompts: Sequence[PromptItem], model: Any, tokenizer: Any, encoder: Any,
             reviser: Callable[..., str | None], settings: Any, *, seed: int, pad_id: int,
             ground_truth_column: str | None = None) -> OPAData:
    """OPA-DPO's steps 1 and 2: ``rl.num_generations`` samples y_o of every prompt from ``model``
    (π_0; seeded by ``seed`` and the prompt's index), each revised into y_r by ``reviser(prompt,
    completion, **columns)`` (None drops that revision; an unchanged one gives no pair), and the
    ground truth y_gt of ``ground_truth_column`` where a prompt has one. ``encoder`` is the run's
    :class:`~alignlab.data.tokenize.RecordTokenizer` (the revised text is tokenized as data is)."""
    options = SamplingOptions(max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                              top_p=settings.top_p, top_k=settings.top_k, seed=seed * SEED_STRIDE,
                              batch_size=settings.batch_size)
    samples = sample(model, [p.prompt_ids for p in prompts], settings.num_generations, options,
                     eos_id=encoder.eos_id, pad_id=pad_id, progress=False)
    targets: list[Target] = []
    pairs: list[SampledPair] = []
    stats = {"samples": 0, "revised": 0, "dropped": 0, "unchanged": 0, "ground_truth": 0, "too_long": 0}
    for index, (prompt, group) in enumerate(zip(prompts, samples, strict=True)):
        ids = tuple(prompt.prompt_ids)
        truth = None
        if ground_truth_column is not None and prompt.columns.get(ground_truth_column) is not None:
            truth = _encode(encoder, prompt, str(prompt.columns[ground_truth_column]), stats)
            if truth is not None:
                targets.append(Target(index, ids, truth, "ground_truth"))
                stats["ground_truth"] += 1
        for original in group:
            original = tuple(original)
            stats["samples"] += 1
            text = tokenizer.decode(list(original), skip_special_tokens=True).strip()
            revised_text = reviser(prompt.prompt, text, **dict(prompt.columns))
            revised = None if revised_text is None else _encode(encoder, prompt, str(revised_text), stats)
            if revised_text is None:
                stats["dropped"] += 1
            elif revised is not None and revised != original:
                stats["revised"] += 1
                targets.append(Target(index, ids, revised, "revised"))
                pairs.append(SampledPair(index, ids, revised, original))
            elif revised is not None:
                stats["unchanged"] += 1
            if truth is not None and truth != original:
                pairs.append(SampledPair(index, ids, truth, original))
    return OPAData(targets, pairs, stats)


def _encode(encoder: Any, prompt: PromptItem, completion: str, stats: dict[str, int]) -> tuple[int, ...] | None:
    encoded = encoder.encode(prompt.prompt, completion)
    if encoded is None:
        stats["too_long"] += 1
        return None
    if tuple(encoded.prompt_ids) != tuple(prompt.prompt_ids):
        raise AlignlabError(f"the prompt {prompt.prompt!r} tokenizes differently with a completion than alone; "
                            "its revision cannot be paired with its samples")
    return tuple(encoded.completion_ids)


def opa_align(data: OPAData, forward: torch.nn.Module, settings: TrainConfig, run_dir: str | Path, pad_id: int,
              console: Console | None = None) -> dict[str, float]:
    """OPA-DPO's step 3, "OPA alignment": SFT (token-mean NLL) of the policy behind ``forward`` on
    the revisions and ground truths, through the loop with ``settings`` (its loss is set to nll;
    lr, steps, batch as given). The policy is π_OPA afterwards. Returns the last step's metrics."""
    if not data.targets:
        raise AlignlabError("OPA alignment has nothing to imitate: no revision and no ground truth survived\n"
                            f"  hint: check the reviser and rl.opa.ground_truth_column ({data.stats})")
    entry = get_loss("nll")
    step = make_step(entry, {}, get_kind("sft"), data.targets, forward, None, pad_id)
    settings = dataclasses.replace(settings, loss="nll", loss_kwargs={}, output_dir=str(Path(run_dir)))
    order = ExampleOrder(len(data.targets), settings.batch_size, settings.seed)
    return Trainer(settings, forward, step, order, Path(run_dir), console=console or Console(quiet=True)).fit()


def opa_dpo(data: OPAData, model: Any, forward: torch.nn.Module, settings: TrainConfig, run_dir: str | Path,
            pad_id: int, console: Console | None = None) -> tuple[dict[str, float], Reference]:
    """OPA-DPO's step 4: a paired loss (``settings.loss``, DPO with β = 0.1 unless its kwargs say
    otherwise) from the current policy, whose frozen copy taken now (π_OPA) is the reference.
    Returns the last step's metrics and the reference."""
    entry = get_loss(settings.loss)
    if entry.contract.data != "paired":
        raise ConfigError(f"OPA-DPO trains a paired loss, not {entry.name!r} ({entry.contract.data} data)")
    if not data.pairs:
        raise AlignlabError(f"OPA-DPO has no pair to train on ({data.stats})")
    kwargs = dict(settings.loss_kwargs)
    if any(h.name == "beta" for h in entry.contract.hyperparameters):
        kwargs.setdefault("beta", 0.1)  # the paper's β
    reference = CopyReference(model, settings.chunk_size, precision=settings.precision)
    step = make_step(entry, kwargs, get_kind("paired"), data.pairs, forward, reference, pad_id)
    settings = dataclasses.replace(settings, output_dir=str(Path(run_dir)))
    order = ExampleOrder(len(data.pairs), settings.batch_size, settings.seed)
    last = Trainer(settings, forward, step, order, Path(run_dir), console=console or Console(quiet=True)).fit()
    return last, reference


def run_opa_dpo(prompts: Sequence[PromptItem], model: Any, forward: torch.nn.Module, tokenizer: Any, encoder: Any,
                reviser: str | Callable[..., str | None], settings: Any, sft: TrainConfig, dpo: TrainConfig,
                run_dir: str | Path, *, pad_id: int, ground_truth_column: str | None = None,
                console: Console | None = None) -> tuple[OPAData, dict[str, float], dict[str, float], Reference]:
    """OPA-DPO end to end on the loop: samples and revisions (:func:`opa_data`), OPA alignment in
    ``run_dir/opa`` (:func:`opa_align`), DPO on π_OPA in ``run_dir/dpo`` (:func:`opa_dpo`).

    ``model`` is π_0 (the LM that samples; trained in place), ``forward`` its
    :class:`~alignlab.forward.CompletionLogps`, ``settings`` the ``rl`` section (sampling),
    ``sft``/``dpo`` the two stages' train settings. Returns the data, both stages' last metrics
    and the reference (π_OPA)."""
    data = opa_data(prompts, model, tokenizer, encoder, load_reviser(reviser), settings, seed=dpo.seed,
                    pad_id=pad_id, ground_truth_column=ground_truth_column)
    aligned = opa_align(data, forward, sft, Path(run_dir) / "opa", pad_id, console)
    last, reference = opa_dpo(data, model, forward, dpo, Path(run_dir) / "dpo", pad_id, console)
    return data, aligned, last, reference


def opa_stage_settings(train: TrainConfig, opa: Any) -> TrainConfig:
    """The OPA alignment (SFT) stage's train settings: ``train``'s, with the loss nll, and the
    lr and epochs (or max_steps) of ``rl.opa`` where it sets them (``sft_lr``, ``sft_epochs``,
    ``sft_steps``)."""
    lr = getattr(opa, "sft_lr", None) or train.lr
    steps = getattr(opa, "sft_steps", None)
    epochs = getattr(opa, "sft_epochs", None) or 1.0
    return dataclasses.replace(train, loss="nll", loss_kwargs={}, lr=lr, epochs=epochs, max_steps=steps,
                               save_every=None, eval_every=None)


def run_opa_from_config(config: Any, model: Any, forward: torch.nn.Module, tokenizer: Any, encoder: Any,
                        prompts: Sequence[PromptItem], pad_id: int, console: Console | None = None
                        ) -> tuple[OPAData, dict[str, float], dict[str, float], Reference]:
    """:func:`run_opa_dpo` as ``alignlab train`` runs it: ``rl.opa.reviser`` (module:function),
    ``rl.opa.ground_truth_column``, the SFT stage of :func:`opa_stage_settings`, the DPO stage of
    ``train`` (β = 0.1 unless train.loss_kwargs sets it), in ``train.output_dir``/opa and /dpo."""
    opa = config.rl.opa
    if config.train.reference not in ("auto", "copy"):
        raise ConfigError(f"train.reference={config.train.reference!r}: OPA-DPO's reference is the policy after "
                          "its OPA alignment step, a frozen copy\n  hint: train.reference=copy (or auto)")
    return run_opa_dpo(prompts, model, forward, tokenizer, encoder, opa.reviser, config.rl,
                       opa_stage_settings(config.train, opa), config.train, config.train.output_dir, pad_id=pad_id,
                       ground_truth_column=getattr(opa, "ground_truth_column", None), console=console)
