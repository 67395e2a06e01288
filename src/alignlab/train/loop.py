"""The one training loop: accumulation, precision, clipping, schedule, guards, eval, checkpoints.

Example: ``Trainer(settings, params, step, order, run_dir).fit()``

A step function computes per-example losses for a list of example indices; the loop owns every
reduction. The loss of an optimizer step is the sum of per-example losses over all its
micro-batches (and ranks) divided by their number of examples, so batch 8 × 1 equals 2 × 4.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from alignlab.config import TrainConfig
from alignlab.errors import AlignlabError
from alignlab.forward import autocast_for
from alignlab.train.best import BEST_DIR, BestTracker
from alignlab.train.checkpoint import (
    TrainingState,
    capture_rng,
    load_latest,
    restore_rng,
    save_checkpoint,
)
from alignlab.train.fsdp import (
    full_optimizer_state,
    full_state,
    load_full_optimizer_state,
    load_full_state,
)
from alignlab.train.order import ExampleOrder
from alignlab.train.tracking import Trackers, check_trackers


class NonFiniteError(AlignlabError):
    """A NaN or infinite loss or gradient stopped the run."""


@dataclass
class StepResult:
    """What a step function returns for one micro-batch."""

    loss_sum: torch.Tensor
    """Sum of the per-example losses (scalar, with gradient)."""
    examples: int
    metrics: dict[str, float] = field(default_factory=dict)
    """Sums over the micro-batch's examples (the loop divides by the step's example count)."""
    tokens: int = 0
    loss_metrics: dict[str, torch.Tensor] = field(default_factory=dict)
    """The loss's own detached per-example metrics, for a loss state (BCO's running mean)."""


StepFn = Callable[[list[int]], StepResult]


def lr_lambda(schedule: str, warmup: int, total: int) -> Callable[[int], float]:
    """Multiplier of the peak learning rate at optimizer step ``s`` (0-based)."""
    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        if schedule == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return factor


class Trainer:
    def __init__(
        self,
        settings: TrainConfig,
        model: torch.nn.Module,
        step: StepFn,
        order: ExampleOrder,
        run_dir: Path,
        *,
        loss_state: Any = None,
        rollout: Any = None,
        evaluate: Callable[[], dict[str, float]] | None = None,
        console: Console | None = None,
        rank: int = 0,
        sharded: bool = False,
        export: Callable[[Path], Any] | None = None,
        callbacks: Sequence[Any] = (),
        trackers: Trackers | None = None,
        engine: Any = None,
    ) -> None:
        self.settings, self.model, self.step_fn, self.order = settings, model, step, order
        self.run_dir, self.loss_state, self.evaluate = Path(run_dir), loss_state, evaluate
        self.rollout = rollout  # online RL: samples before each step (alignlab.train.online.RolloutPhase)
        self.console, self.rank, self.sharded = console or Console(), rank, sharded
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise AlignlabError("the model has no trainable parameters")
        self.names = {id(p): n for n, p in model.named_parameters() if p.requires_grad}
        # DeepSpeed (alignlab.train.zero.ZeroEngine, also ``model``): its engine backpropagates,
        # reduces, clips and steps the client AdamW it was built with; the loop does the rest.
        self.engine = engine
        self.optimizer = engine.optimizer if engine is not None else adamw(settings, self.params, sharded)
        per_epoch = order.batches_per_epoch()
        # A set of rollouts serves `iterations` optimizer steps without consuming new prompts.
        reuse = rollout.iterations if rollout is not None else 1
        self.total_steps = settings.max_steps or max(
            1, math.ceil(settings.epochs * per_epoch * reuse / settings.grad_accum))
        warmup = int(settings.warmup_ratio * self.total_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(settings.schedule, warmup, self.total_steps))
        self.step, self.micro_batches, self.counters = 0, 0, {"skipped_nonfinite": 0, "tokens": 0}
        self.checkpoints = self.run_dir / "checkpoints"
        # The best evaluation (keep_best, early stopping); ``export`` writes the model to a folder.
        self.best = BestTracker(settings, self.run_dir, export)
        self.callbacks = list(callbacks)  # objects with any of on_step, on_evaluate, on_save(trainer, ...)
        self.trackers = trackers  # made on the first log when not given (rank 0 only)
        self.scaler = loss_scaler(settings, self.params) if engine is None else None
        if self.scaler is not None:
            self.counters["skipped_overflow"] = 0

    # ---- the loop ------------------------------------------------------------------------------

    def fit(self) -> dict[str, float]:
        self._resume()
        if not self.sharded and self.engine is None:  # ZeRO allocates on its partitions
            allocate_adamw_state(self.optimizer)
        last: dict[str, float] = {}
        device = next(iter(self.params)).device
        with self._progress() as progress:
            task = progress.add_task("training", total=self.total_steps, completed=self.step, loss=float("nan"),
                                     speed=0.0, reward=float("nan"))
            while self.step < self.total_steps and not self.best.stopped:
                started = time.perf_counter()
                last = self._optimizer_step(device)
                self.step += 1
                elapsed = time.perf_counter() - started
                last.update(step=self.step, lr=self.scheduler.get_last_lr()[0], seconds=elapsed)
                last["tokens_per_second"] = last.get("tokens", 0) / max(elapsed, 1e-9)
                progress.update(task, advance=1, loss=last.get("loss", float("nan")), speed=last["tokens_per_second"],
                                reward=last.get("reward", float("nan")))
                if self.step % self.settings.log_every == 0 or self.step == self.total_steps:
                    self.log({"split": "train", **last})
                self._notify("on_step", {"split": "train", **last})
                stop = False
                if self.evaluate and self.settings.eval_every and self.step % self.settings.eval_every == 0:
                    stop = self._evaluated(self.evaluate())
                if stop or (self.settings.save_every and self.step % self.settings.save_every == 0):
                    self._save()
        if not (self.settings.save_every and self.step % self.settings.save_every == 0) and not self.best.stopped:
            self._save()
        return last

    def _evaluated(self, metrics: Mapping[str, float]) -> bool:
        """Log an evaluation, update the best one; True when early stopping ends the run now."""
        record = {"split": "eval", "step": self.step, **metrics}
        self.log(record)
        self._notify("on_evaluate", record)
        if not self.best.active:
            return False
        was_best = self.best.best_step
        stop = self.best.update(self.step, metrics, writer=self.rank == 0)
        if self.best.keep and self.best.best_step != was_best and self.rank == 0:
            self.console.print(f"best {self.best.metric} {self.best.best:.4f} at step {self.step}: "
                               f"{self.run_dir / BEST_DIR}")
        if stop:
            self.console.print(f"early stopping at step {self.step}: {self.best.metric} has not improved on "
                               f"{self.best.best:.4f} (step {self.best.best_step}) for {self.best.stale} evaluations")
        return stop

    def _notify(self, event: str, *args: Any) -> None:
        """Call ``event`` on every callback that has it (rank 0 only: where the logs are)."""
        if self.rank != 0:
            return
        for callback in self.callbacks:
            method = getattr(callback, event, None)
            if method is not None:
                method(self, *args)

    def _micro_batches(self) -> Iterator[tuple[list[int], int]]:
        """This step's micro-batches (example indices on this rank) and the step's global count."""
        per_epoch = self.order.batches_per_epoch()
        windows = []
        for m in range(self.micro_batches, self.micro_batches + self.settings.grad_accum):
            epoch, index = divmod(m, per_epoch)
            windows.append((self.order.batch(epoch, index), self.order.global_count(epoch, index)))
        total = sum(count for _, count in windows)
        for indices, _ in windows:
            yield indices, total

    def _global_positions(self) -> list[list[int]]:
        """Each of this rank's examples' place in the step's global batch (over micro-batches and
        ranks): a rank reads every world-th example of a global micro-batch (ExampleOrder.batch)."""
        per_epoch = self.order.batches_per_epoch()
        world, rank = self.order.world_size, self.order.rank
        out, offset = [], 0
        for m in range(self.micro_batches, self.micro_batches + self.settings.grad_accum):
            epoch, index = divmod(m, per_epoch)
            out.append([offset + j * world + rank for j in range(len(self.order.batch(epoch, index)))])
            offset += self.order.global_count(epoch, index)
        return out

    def _optimizer_step(self, device: torch.device) -> dict[str, float]:
        if self.engine is None:  # the engine clears its gradients in its own step
            self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        raw: dict[str, list[torch.Tensor]] = {}
        loss_total, tokens, examples = 0.0, 0, 0
        windows = list(self._micro_batches())
        prepared = None
        if self.rollout is not None:
            prepared = self.rollout.prepare(self.step, [indices for indices, _ in windows], self._global_positions())
            # The loss is the sum of the micro-batches' numerators over the step's global units.
            windows = [(indices, prepared.units) for indices, _ in windows]
        advance = len(windows) if self._advances() else 0
        for k, (indices, total) in enumerate(windows):
            sync = k == len(windows) - 1
            with self._no_sync(not sync), autocast_for(self.settings.precision, device):
                result = self.step_fn(indices)
            bad_ranks = self._nonfinite_ranks(result.loss_sum, device)
            if bad_ranks:
                # Not counted in the data position yet: the whole step's micro-batches are passed over.
                self.micro_batches += advance
                if self.engine is not None and k > 0 and self.settings.on_nonfinite == "skip":
                    self.engine.discard(result.loss_sum)  # the micro-batches before this one
                return self._nonfinite("loss", bad_ranks)
            # DDP (and ZeRO) average gradients over ranks; scaling by world size turns that into the global sum.
            scaled = result.loss_sum * (self.order.world_size / total)
            if self.engine is not None:
                self.engine.backward(scaled, last=sync)
            elif self.scaler is not None:  # fp16: the gradients scaled up out of float16's underflow
                self.scaler.scale(scaled).backward()
            else:
                scaled.backward()
            loss_total += float(result.loss_sum.detach())
            tokens += result.tokens
            examples += result.examples
            for name, value in result.metrics.items():
                sums[name] = sums.get(name, 0.0) + float(value)
            for name, value in result.loss_metrics.items():
                raw.setdefault(name, []).append(value.reshape(-1))
        self.micro_batches += advance
        # Rank-consistent without a collective of its own: DDP all-reduced the gradients in the last
        # backward (a NaN anywhere is a NaN everywhere), and FSDP's clip computes the global norm.
        # DeepSpeed clips and steps in one call, and skips a step whose norm is not finite.
        if self.scaler is not None:
            scale = self.scaler.get_scale()
            self.scaler.unscale_(self.optimizer)  # clip and report the true gradients
        grad_norm = self.engine.step() if self.engine is not None else self._clip()
        overflow = False
        if self.scaler is not None:
            # fp16: a step whose scaled gradients overflowed is not taken and the scale is halved
            # (the data moves on, as in accelerate and DeepSpeed); every DDP rank unscales the same
            # reduced gradients, so they decide alike.
            self.scaler.step(self.optimizer)
            self.scaler.update()
            overflow = self.scaler.get_scale() < scale
            if overflow and scale <= MIN_LOSS_SCALE:  # not a scale problem any more
                self.scaler.update(MIN_LOSS_SCALE)
                return self._nonfinite(f"gradient at the smallest loss scale ({MIN_LOSS_SCALE:g})")
        elif not math.isfinite(grad_norm):
            return self._nonfinite("gradient")
        elif self.engine is None:
            self.optimizer.step()
        if overflow:  # the schedule and the loss state wait for a step that is taken
            self.counters["skipped_overflow"] += 1
        else:
            self.scheduler.step()
            if self.loss_state is not None:  # after the optimizer step, as BCO's δ (never in eval)
                self.loss_state.update({name: torch.cat(parts) for name, parts in raw.items()})
        loss_total, examples, tokens, sums = self._global_sums(loss_total, examples, tokens, sums)
        self.counters["tokens"] += tokens
        count = max(examples, 1)
        loss = loss_total / (prepared.units if prepared is not None else count)
        return {**{name: value / count for name, value in sums.items()},
                "loss": loss, "grad_norm": grad_norm, "tokens": tokens,  # the loop's own, never a loss metric's
                **({"loss_scale": scale, "skipped_overflow": self.counters["skipped_overflow"]}
                   if self.scaler is not None else {}),
                **(dict(prepared.metrics) if prepared is not None else {})}

    def _advances(self) -> bool:
        """Whether this step moves on in the data: online RL's set of rollouts is reused for
        ``iterations`` steps, and the step that uses it last moves on."""
        return self.rollout is None or (self.step + 1) % self.rollout.iterations == 0

    def _global_sums(self, loss: float, examples: int, tokens: int, sums: dict[str, float]
                     ) -> tuple[float, int, int, dict[str, float]]:
        """Under DDP, the logged numbers are the whole global batch's, not rank 0's share."""
        if self.order.world_size == 1 or not torch.distributed.is_initialized():
            return loss, examples, tokens, sums
        names = sorted(sums)  # every rank runs the same loss, so the same metric names
        device = next(iter(self.params)).device
        packed = torch.tensor([loss, examples, tokens, *(sums[n] for n in names)], dtype=torch.float64,
                              device=device)
        torch.distributed.all_reduce(packed)
        values = packed.tolist()
        return values[0], int(values[1]), int(values[2]), dict(zip(names, values[3:], strict=True))

    def _clip(self) -> float:
        limit = self.settings.max_grad_norm
        norm = torch.nn.utils.clip_grad_norm_(self.params, limit if limit is not None else float("inf"))
        return float(norm)

    def _nonfinite_ranks(self, loss: torch.Tensor, device: torch.device) -> list[int]:
        """The ranks whose micro-batch loss is NaN or infinite, the same list on every rank.

        Under DDP or FSDP a rank that skipped ``backward()`` alone would leave the others waiting in
        the gradient all-reduce (or reduce-scatter) forever, so the ranks share one flag each and
        decide together. A single process pays for no collective.
        """
        world = self.order.world_size
        if world == 1 or not torch.distributed.is_initialized():
            return [] if bool(torch.isfinite(loss.detach())) else [self.rank]
        # One slot per rank rather than a single summed flag: the error can name the rank(s).
        flags = torch.zeros(world, dtype=torch.int32, device=device)
        flags[torch.distributed.get_rank()] = (~torch.isfinite(loss.detach())).to(torch.int32)
        torch.distributed.all_reduce(flags)
        return [rank for rank, flag in enumerate(flags.tolist()) if flag]

    def _nonfinite(self, what: str, ranks: list[int] | None = None) -> dict[str, float]:
        """Stop or skip the step; every rank reaches this together (see ``_nonfinite_ranks``).

        The caller has already advanced ``micro_batches`` past the step, so a skip resumes on
        the next step's data."""
        if self.engine is None:  # DeepSpeed dropped its gradients (ZeroEngine.step, .discard)
            self.optimizer.zero_grad(set_to_none=True)
        if self.settings.on_nonfinite == "stop":
            where = ""
            if ranks is not None and self.order.world_size > 1:
                names = ", ".join(map(str, ranks))
                where = f" on rank{'s' if len(ranks) > 1 else ''} {names} of {self.order.world_size}"
            if self.order.world_size > 1 and torch.distributed.is_initialized():
                # every rank stops here together; leaving in step keeps a slower rank from seeing its
                # gloo peer vanish mid-teardown (seen under load: that rank aborted, exit -6, not 2)
                torch.distributed.barrier()
            raise NonFiniteError(
                f"non-finite {what} at step {self.step + 1}{where}; the run stopped and its last checkpoint "
                f"(if any) is in {self.checkpoints}\n  hint: lower the learning rate, use fp32, check "
                "the data with `alignlab data check`, or set train.on_nonfinite=skip to skip such steps")
        self.counters["skipped_nonfinite"] += 1
        return {"loss": float("nan"), "skipped_nonfinite": self.counters["skipped_nonfinite"]}

    # ---- context -------------------------------------------------------------------------------

    def _no_sync(self, skip: bool) -> contextlib.AbstractContextManager:
        no_sync = getattr(self.model, "no_sync", None)
        return no_sync() if skip and no_sync is not None else contextlib.nullcontext()

    def _progress(self) -> Progress:
        return Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                        TextColumn("loss {task.fields[loss]:.4f}"),
                        *([TextColumn("reward {task.fields[reward]:.3f}")] if self.rollout is not None else []),
                        TextColumn("{task.fields[speed]:.0f} tok/s"),
                        TimeRemainingColumn(), console=self.console, disable=self.rank != 0, transient=False)

    # ---- persistence ---------------------------------------------------------------------------

    def log(self, record: Mapping[str, Any]) -> None:
        """One JSON line in metrics.jsonl, and the same scalars to each tracker (train.report_to)."""
        if self.rank != 0:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(dict(record)) + "\n")
        if self.trackers is None:
            self.trackers = Trackers(check_trackers(self.settings.report_to), self.run_dir,
                                     {"train": dataclasses.asdict(self.settings)})
        self.trackers.log(record, int(record.get("step", self.step)))

    def trainable_state(self) -> dict[str, torch.Tensor]:
        if self.engine is not None:
            return self.engine.full_state()
        if self.sharded:
            return full_state(self.model)
        return {self.names[id(p)]: p.detach() for p in self.params}

    def _save(self) -> None:
        # Sharded weights and optimizer state are gathered by every rank; rank 0 writes.
        gathered = self.sharded or self.engine is not None
        weights = self.trainable_state() if gathered or self.rank == 0 else {}
        optimizer = self._optimizer_state() if gathered or self.rank == 0 else {}
        if self.rank != 0:
            return
        state = TrainingState(
            step=self.step, micro_batches=self.micro_batches, weights=weights,
            optimizer=optimizer, scheduler=self.scheduler.state_dict(),
            loss_state=self.loss_state.state_dict() if self.loss_state is not None else {},
            rng=capture_rng(), counters={**self.counters, "best": self.best.state_dict(),
                                         **({"loss_scaler": self.scaler.state_dict()} if self.scaler else {})},
            rollout=self.rollout.state_dict() if self.rollout is not None else {})
        path = save_checkpoint(self.checkpoints, state)
        self._notify("on_save", path)

    def _optimizer_state(self) -> dict[str, Any]:
        if self.engine is not None:
            return self.engine.full_optimizer_state()
        if self.sharded:
            return full_optimizer_state(self.model, self.optimizer)
        return self.optimizer.state_dict()

    def _resume(self) -> None:
        state = load_latest(self.checkpoints)
        if state is None:
            return
        by_name = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        missing = sorted(set(by_name) - set(state.weights))
        if missing:
            raise AlignlabError(f"checkpoint lacks trainable weights {missing[:3]}...\n  hint: it belongs "
                                "to another model or LoRA setting; use another output_dir")
        if self.engine is not None:
            self.engine.load_full_state(state.weights)
            self.engine.load_full_optimizer_state(state.optimizer)
        elif self.sharded:
            load_full_state(self.model, state.weights)
            load_full_optimizer_state(self.model, self.optimizer, state.optimizer)
        else:
            with torch.no_grad():
                for name, param in by_name.items():
                    param.copy_(state.weights[name])
            self.optimizer.load_state_dict(state.optimizer)
        self.scheduler.load_state_dict(state.scheduler)
        if self.loss_state is not None and state.loss_state:
            self.loss_state.load_state_dict(state.loss_state)
        if self.rollout is not None:
            self.rollout.load_state_dict(state.rollout)
        restore_rng(state.rng)
        self.step, self.micro_batches, self.counters = state.step, state.micro_batches, dict(state.counters)
        self.best.load_state_dict(self.counters.pop("best", {}))
        scaler_state = self.counters.pop("loss_scaler", None)
        if self.scaler is not None and scaler_state is not None:
            self.scaler.load_state_dict(scaler_state)
        self.console.print(f"resumed from step {self.step} ({self.checkpoints})")


MIN_LOSS_SCALE = 1.0
"""Below this an overflowing fp16 step is not a scale problem (DeepSpeed's min_loss_scale default)."""


def loss_scaler(settings: TrainConfig, params: list[torch.Tensor]) -> torch.amp.GradScaler | None:
    """fp16's dynamic loss scale (PyTorch's defaults: 2^16, halved on overflow, doubled after 2000
    good steps); None for other precisions. The trained weights must be float32: float16
    gradients cannot be unscaled."""
    if settings.precision != "fp16":
        return None
    if any(p.dtype == torch.float16 for p in params):
        raise AlignlabError("train.precision=fp16 trains float32 weights under a float16 forward, but some "
                            "trainable weights are float16\n  hint: load the model in float32 "
                            "(model.dtype=float32, or .float() on a model object)")
    return torch.amp.GradScaler(params[0].device.type)


def adamw(settings: TrainConfig, params: list[torch.Tensor], sharded: bool = False) -> torch.optim.AdamW:
    """The optimizer of every run (a ZeRO engine is handed this one too)."""
    return torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay,
                             fused=_fusable(params, sharded))


def _fusable(params: list[torch.Tensor], sharded: bool) -> bool | None:
    """The fused AdamW kernel where it applies: one pass over each tensor instead of a dozen
    (CPU, 91M parameters: 0.07 s against 0.25 s a step, bench/bench_fast_path.py). Sharded
    (DTensor) parameters keep the default implementation."""
    fusable = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return True if fusable and not sharded else None


def allocate_adamw_state(optimizer: torch.optim.Optimizer) -> None:
    """AdamW's moments allocated now, before the first forward, instead of inside the first step.

    Allocated lazily, they land in the memory the first step's activations just freed, and every
    later step's activations need fresh memory (bench/bench_preference.py, model b on CPU:
    alignlab's peak RSS 3.14 GiB before this, 2.97 GiB after). These are the tensors AdamW would create (zeros, and its step count with the
    dtype and device it uses), so training is bit-identical (tested); options that keep more
    state (amsgrad, capturable, differentiable) are left to AdamW.
    """
    if not isinstance(optimizer, torch.optim.AdamW):
        return
    if any(g.get("amsgrad") or g.get("capturable") or g.get("differentiable") for g in optimizer.param_groups):
        return
    plain_step = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state[param]
            if state:  # restored from a checkpoint
                continue
            if group.get("fused"):
                state["step"] = torch.zeros((), dtype=torch.float32, device=param.device)
            else:
                state["step"] = torch.tensor(0.0, dtype=plain_step)
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
