"""train.precision: fp16 (float32 weights, a float16 forward and a dynamic loss scale), and the
evaluation under the training steps' autocast.

The loop is checked against a hand-written torch.amp.GradScaler loop (the obvious reading of
PyTorch's AMP recipe: scale, backward, unscale, clip, step unless overflowed, update), weight for
weight; then the overflow rules, exact resume with the scale restored, the refusals, and a real
DPO run on a tiny model.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from rich.console import Console

import alignlab
from alignlab.config import RunConfig, TrainConfig, check_run_config, load_config
from alignlab.errors import AlignlabError, ConfigError
from alignlab.models.tiny import init_tiny_model
from alignlab.train.checkpoint import load_latest
from alignlab.train.loop import MIN_LOSS_SCALE, NonFiniteError, StepResult, Trainer, lr_lambda
from alignlab.train.order import ExampleOrder

N, D = 32, 6
ROOT = Path(__file__).resolve().parents[2]


def toy() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(D, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))


def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N, D, generator=g)
    return x, x @ torch.arange(1.0, D + 1)  # targets of size ~10: the first steps' scaled gradients overflow


def regression(model: torch.nn.Module):
    x, y = data()

    def step(indices: list[int]) -> StepResult:
        out = model(x[indices]).squeeze(-1).float()
        losses = (out - y[indices]) ** 2
        return StepResult(loss_sum=losses.sum(), examples=len(indices))

    return step


def settings(tmp_path: Path, **kw) -> TrainConfig:
    base = dict(precision="fp16", lr=0.01, batch_size=4, grad_accum=2, max_steps=8, schedule="linear",
                output_dir=str(tmp_path))
    return TrainConfig(**{**base, **kw})


def quiet_trainer(config: TrainConfig, model, step, tmp_path: Path, **kw) -> Trainer:
    order = ExampleOrder(N, config.batch_size, seed=3)
    return Trainer(config, model, step, order, tmp_path, console=Console(quiet=True), **kw)


def manual_amp(config: TrainConfig) -> tuple[torch.nn.Module, list[float], int]:
    """PyTorch's AMP recipe written out; the scheduler advances only on steps taken."""
    model = toy()
    x, y = data()
    params = list(model.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0, fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config.schedule, 0, config.max_steps))
    scaler = torch.amp.GradScaler("cpu")
    order = ExampleOrder(N, config.batch_size, seed=3)
    scales, skipped, micro = [], 0, 0
    for _ in range(config.max_steps):
        optimizer.zero_grad(set_to_none=True)
        batches = []
        for _ in range(config.grad_accum):
            epoch, index = divmod(micro, order.batches_per_epoch())
            batches.append(order.batch(epoch, index))
            micro += 1
        count = sum(len(b) for b in batches)
        for indices in batches:
            with torch.autocast("cpu", dtype=torch.float16):
                out = model(x[indices]).squeeze(-1).float()
                loss = ((out - y[indices]) ** 2).sum()
            scaler.scale(loss * (1 / count)).backward()
        scale = scaler.get_scale()
        scales.append(scale)
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        if scaler.get_scale() < scale:
            skipped += 1
        else:
            scheduler.step()
    return model, scales, skipped


def logged(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == "train"]


def test_fp16_steps_equal_the_hand_written_amp_loop(tmp_path):
    config = settings(tmp_path)
    model = toy()
    trainer = quiet_trainer(config, model, regression(model), tmp_path)
    trainer.fit()
    expected, scales, skipped = manual_amp(config)
    assert skipped >= 1 and skipped < config.max_steps  # both paths ran: overflows and steps taken
    for mine, theirs in zip(model.parameters(), expected.parameters(), strict=True):
        assert torch.equal(mine, theirs)
    records = logged(tmp_path)
    assert [r["loss_scale"] for r in records] == scales
    assert records[-1]["skipped_overflow"] == skipped == trainer.counters["skipped_overflow"]
    assert all(math.isfinite(r["loss"]) for r in records)  # an overflow is in the gradients, not the loss
    assert trainer.counters["skipped_nonfinite"] == 0


def test_a_skipped_overflow_leaves_weights_and_schedule_alone(tmp_path):
    config = settings(tmp_path, max_steps=1)
    model = toy()
    before = [p.detach().clone() for p in model.parameters()]
    trainer = quiet_trainer(config, model, regression(model), tmp_path)
    trainer.fit()
    assert trainer.counters["skipped_overflow"] == 1  # 2^16 overflows float16 on these targets
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert trainer.scheduler.last_epoch == 0 and trainer.scaler.get_scale() == 2.0 ** 15
    assert trainer.micro_batches == config.grad_accum  # the data moved on


def nan_gradient(model: torch.nn.Module):
    """A finite loss whose gradient is NaN at every scale (d sqrt|u| at u = 0)."""
    def step(indices: list[int]) -> StepResult:
        weight = model[0].weight
        loss = torch.sqrt((weight - weight.detach()).abs()).sum() + 0 * model(torch.zeros(len(indices), D)).sum()
        return StepResult(loss_sum=loss, examples=len(indices))
    return step


def test_overflow_at_the_smallest_scale_is_a_nonfinite_gradient(tmp_path):
    model = toy()
    trainer = quiet_trainer(settings(tmp_path, max_steps=30), model, nan_gradient(model), tmp_path)
    halvings = int(math.log2(2.0 ** 16 / MIN_LOSS_SCALE))  # 65536 → 1
    with pytest.raises(NonFiniteError, match=rf"gradient at the smallest loss scale \(1\) at step {halvings + 1}"):
        trainer.fit()
    assert trainer.counters["skipped_overflow"] == halvings


def test_overflow_at_the_smallest_scale_skipped_when_asked(tmp_path):
    model = toy()
    before = [p.detach().clone() for p in model.parameters()]
    trainer = quiet_trainer(settings(tmp_path, max_steps=19, on_nonfinite="skip"), model, nan_gradient(model),
                            tmp_path)
    trainer.fit()
    assert trainer.counters["skipped_overflow"] == 16 and trainer.counters["skipped_nonfinite"] == 3
    assert trainer.scaler.get_scale() == MIN_LOSS_SCALE  # held at the floor, not halved below it
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


class CrashAfterSave:
    def __init__(self, at: int) -> None:
        self.at = at

    def on_save(self, trainer, path):
        if trainer.step == self.at:
            raise KeyboardInterrupt("simulated kill")


def test_exact_resume_restores_the_loss_scale(tmp_path):
    straight_model = toy()
    straight = quiet_trainer(settings(tmp_path / "a"), straight_model, regression(straight_model), tmp_path / "a")
    straight.fit()

    crashed_model = toy()
    crashed = quiet_trainer(settings(tmp_path / "b", save_every=3), crashed_model, regression(crashed_model),
                            tmp_path / "b", callbacks=[CrashAfterSave(3)])
    with pytest.raises(KeyboardInterrupt):
        crashed.fit()
    saved = load_latest(tmp_path / "b" / "checkpoints")
    assert saved.step == 3 and saved.counters["loss_scaler"]["scale"] < 2.0 ** 16  # an overflow before it

    resumed_model = toy()
    resumed = quiet_trainer(settings(tmp_path / "b", save_every=3), resumed_model, regression(resumed_model),
                            tmp_path / "b")
    resumed.fit()
    for mine, theirs in zip(resumed_model.parameters(), straight_model.parameters(), strict=True):
        assert torch.equal(mine, theirs)
    assert resumed.scaler.state_dict() == straight.scaler.state_dict()
    assert resumed.counters["skipped_overflow"] == straight.counters["skipped_overflow"]


def test_float16_trainable_weights_are_refused(tmp_path):
    model = toy().half()
    with pytest.raises(AlignlabError, match="trainable weights are float16"):
        quiet_trainer(settings(tmp_path), model, regression(model), tmp_path)


def test_refused_combinations_before_loading():
    def config(**sections) -> RunConfig:
        return load_config(None, [f"{k}={v}" for k, v in sections.items()])

    with pytest.raises(ConfigError, match="model.dtype=float16 makes the trained weights float16"):
        check_run_config(config(**{"train.precision": "fp16", "model.dtype": "float16"}))
    check_run_config(config(**{"train.precision": "fp16", "model.dtype": "float16", "model.lora.enabled": "true"}))
    with pytest.raises(ConfigError, match="fp16 is not supported with train.distributed=fsdp"):
        check_run_config(config(**{"train.precision": "fp16", "train.distributed": "fsdp"}))
    from alignlab.train.deepspeed import deepspeed_plan

    with pytest.raises(ConfigError, match="fp16 with DeepSpeed is not supported"):
        deepspeed_plan(config(**{"train.precision": "fp16", "train.distributed": "deepspeed"}), 2,
                       torch.device("cpu"), env={})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return init_tiny_model(tmp_path_factory.mktemp("fp16") / "tiny", hidden_size=32, layers=2, heads=4,
                           intermediate=64)


def test_dpo_run_in_fp16_on_a_tiny_model(tiny, tmp_path):
    pairs = [json.loads(line) for line in (ROOT / "examples" / "data" / "pairs.jsonl").read_text().splitlines()]
    config = {"model": {"name_or_path": str(tiny)},
              "train": {"loss": "dpo", "precision": "fp16", "max_steps": 4, "batch_size": 4, "lr": 1e-3,
                        "reference": "copy", "output_dir": str(tmp_path / "run"), "device": "cpu"}}
    run_dir = alignlab.train(config, train_data=pairs, console=Console(quiet=True))
    records = logged(run_dir)
    assert len(records) == 4 and all(r["loss_scale"] > 0 and math.isfinite(r["loss"]) for r in records)
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    taken = summary["steps"] - summary["skipped_overflow"]
    assert taken >= 1 and records[-1]["loss"] < records[0]["loss"]
    assert "precision fp16" in (run_dir / "model" / "README.md").read_text(encoding="utf-8")


def test_the_doctor_passes_fp16_and_names_a_refused_combination(tiny):
    from alignlab.train.doctor import diagnose

    common = [f"model.name_or_path={tiny}", f"data.path={ROOT / 'examples' / 'data' / 'pairs.jsonl'}",
              "train.precision=fp16"]
    assert diagnose(load_config(None, common)).ok
    report = diagnose(load_config(None, [*common, "train.distributed=fsdp"]))
    failed = [c for c in report.checks if not c.ok]
    assert [c.name for c in failed] == ["config"] and "fsdp" in failed[0].detail


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_evaluation_runs_under_the_training_precision(precision):
    """The eval loss is the training step's loss on held-out data: same autocast, no gradient,
    eval mode (a float32 evaluation against a bf16 reference cache would differ by rounding alone)."""
    from alignlab.train.run import _evaluator

    model = toy().train()
    seen = []

    def step(indices):
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"), torch.is_grad_enabled(),
                     model.training))
        return StepResult(loss_sum=torch.tensor(float(len(indices))), examples=len(indices), metrics={"m": 2.0})

    metrics = _evaluator(step, 5, 2, model, precision)()
    assert metrics == {"loss": 1.0, "m": 6.0 / 5}
    expected = {"fp32": (False,), "bf16": (True, torch.bfloat16), "fp16": (True, torch.float16)}[precision]
    assert len(seen) == 3 and all(s[:len(expected)] == expected and s[2:] == (False, False) for s in seen)
    assert model.training  # its mode restored
