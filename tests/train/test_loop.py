"""The training loop on a toy regression: schedules, accumulation invariance, guards, exact resume.

The step function draws random noise (like dropout) so that exact resume also proves the RNG
state is restored, not only the weights and the data position.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from alignlab.config import TrainConfig
from alignlab.train.checkpoint import load_latest
from alignlab.train.loop import NonFiniteError, StepResult, Trainer, lr_lambda
from alignlab.train.order import ExampleOrder

N, D = 24, 5


class Toy(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.w = torch.nn.Parameter(torch.randn(D))


def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N, D, generator=g)
    return x, x @ torch.arange(1.0, D + 1) + 0.1 * torch.randn(N, generator=g)


def make_step(model: Toy, noise: bool = True, fail_at: set[int] | None = None, calls: list | None = None):
    x, y = data()
    calls = calls if calls is not None else []

    def step(indices: list[int]) -> StepResult:
        calls.append(list(indices))
        if fail_at and len(calls) in fail_at:
            raise KeyboardInterrupt("simulated kill")
        idx = torch.tensor(indices)
        jitter = 1 + 0.01 * torch.rand(len(indices)) if noise else 1.0  # RNG-dependent, like dropout
        losses = ((x[idx] @ model.w - y[idx]) ** 2) * jitter
        return StepResult(loss_sum=losses.sum(), examples=len(indices), metrics={"sq": float(losses.detach().sum())})

    return step


def trainer(tmp_path, batch_size=8, grad_accum=1, max_steps=3, step=None, **settings) -> tuple[Trainer, Toy]:
    model = Toy()
    settings.setdefault("lr", 0.05)
    config = TrainConfig(batch_size=batch_size, grad_accum=grad_accum, max_steps=max_steps,
                         schedule="linear", warmup_ratio=0.0, output_dir=str(tmp_path), **settings)
    order = ExampleOrder(N, batch_size, seed=3)
    return Trainer(config, model, step or make_step(model, noise=False), order, tmp_path), model


def test_lr_schedules_closed_form():
    """warmup 2 of 10: factors 1/2, 2/2, then linear (1 − (s−2)/8) or cosine ½(1 + cos(π(s−2)/8))."""
    linear, cosine, constant = (lr_lambda(s, 2, 10) for s in ("linear", "cosine", "constant"))
    assert [linear(0), linear(1)] == [0.5, 1.0]
    assert linear(6) == pytest.approx(0.5)
    assert cosine(6) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert constant(9) == 1.0


def test_gradient_accumulation_invariance(tmp_path):
    """Batch 8 × accumulation 1 and batch 2 × accumulation 4 see the same 8 examples per step
    and divide by the same count, so the weights agree to float rounding."""
    one, model_one = trainer(tmp_path / "a", batch_size=8, grad_accum=1)
    one.fit()
    four, model_four = trainer(tmp_path / "b", batch_size=2, grad_accum=4)
    four.fit()
    assert torch.allclose(model_one.w, model_four.w, atol=1e-6, rtol=0)
    assert not torch.allclose(model_one.w, Toy().w)  # it did train


def test_loss_decreases_and_metrics_are_logged(tmp_path):
    run, _ = trainer(tmp_path, max_steps=12, max_grad_norm=None, lr=0.5)
    run.fit()
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(1, 13))
    assert lines[-1]["loss"] < 0.5 * lines[0]["loss"]
    assert {"lr", "grad_norm", "tokens_per_second", "sq"} <= set(lines[0])


def test_exact_resume_after_a_crash(tmp_path):
    """Steps 1–4 straight, versus steps 1–2 (checkpoint), a crash inside step 3, and a new
    trainer resuming: bit-identical weights, same data order, same noise."""
    straight, model_a = trainer(tmp_path / "a", batch_size=4, max_steps=4, step=None)
    straight.step_fn = make_step(model_a)
    straight.fit()

    calls: list = []
    crashed, model_b = trainer(tmp_path / "b", batch_size=4, max_steps=4, save_every=2)
    crashed.step_fn = make_step(model_b, fail_at={3}, calls=calls)
    with pytest.raises(KeyboardInterrupt):
        crashed.fit()
    assert load_latest(tmp_path / "b" / "checkpoints").step == 2

    resumed, model_c = trainer(tmp_path / "b", batch_size=4, max_steps=4, save_every=2)
    resumed_calls: list = []
    resumed.step_fn = make_step(model_c, calls=resumed_calls)
    resumed.fit()
    assert torch.equal(model_c.w, model_a.w)
    order = ExampleOrder(N, 4, seed=3)
    assert resumed_calls == [order.batch(0, 2), order.batch(0, 3)]


def test_nonfinite_loss_stops_and_keeps_the_last_checkpoint(tmp_path):
    run, model = trainer(tmp_path, batch_size=4, max_steps=4, save_every=1)
    healthy = make_step(model, noise=False)
    count = {"n": 0}

    def step(indices):
        count["n"] += 1
        result = healthy(indices)
        if count["n"] == 3:
            result.loss_sum = result.loss_sum * float("nan")
        return result

    run.step_fn = step
    with pytest.raises(NonFiniteError, match="non-finite loss at step 3"):
        run.fit()
    assert load_latest(tmp_path / "checkpoints").step == 2


def test_nonfinite_loss_skipped_when_asked(tmp_path):
    run, model = trainer(tmp_path, batch_size=4, max_steps=4, on_nonfinite="skip")
    healthy = make_step(model, noise=False)
    count = {"n": 0}

    def step(indices):
        count["n"] += 1
        result = healthy(indices)
        if count["n"] == 2:
            result.loss_sum = result.loss_sum * float("inf")
        return result

    run.step_fn = step
    run.fit()
    assert run.counters["skipped_nonfinite"] == 1
    assert torch.isfinite(model.w).all()


def test_checkpoint_with_a_damaged_file_is_refused(tmp_path):
    run, _ = trainer(tmp_path, batch_size=4, max_steps=2, save_every=1)
    run.fit()
    latest = tmp_path / "checkpoints" / (tmp_path / "checkpoints" / "latest").read_text().strip()
    data = bytearray((latest / "weights.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (latest / "weights.safetensors").write_bytes(bytes(data))
    with pytest.raises(Exception, match="does not match its checksum"):
        load_latest(tmp_path / "checkpoints")


def test_tensorboard_scalars_when_installed(tmp_path, monkeypatch):
    """With torch.utils.tensorboard importable, every logged number becomes a scalar."""
    import sys
    import types

    written: list[tuple[str, float, int]] = []

    class Writer:
        def __init__(self, folder: str) -> None:
            assert folder.endswith("tensorboard")

        def add_scalar(self, tag: str, value: float, step: int) -> None:
            written.append((tag, value, step))

        def flush(self) -> None:
            pass

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=Writer))
    run, _ = trainer(tmp_path, batch_size=4, max_steps=2)
    run.fit()
    tags = {tag for tag, _, _ in written}
    assert {"train/loss", "train/lr", "train/grad_norm"} <= tags
    assert sorted({step for tag, _, step in written if tag == "train/loss"}) == [1, 2]
