"""A NaN loss on one DDP rank only: every rank must stop, or skip the step, together.

Example: ``.venv/bin/pytest tests/train/test_nonfinite_ddp.py``

Two gloo ranks on CPU, each a ``tests/train/_runner.py`` subprocess started with the
torch.distributed environment variables (rather than under torchrun, whose agent kills the
other rank as soon as one exits, so each rank's own exit status and message can be checked).
Rank 1 alone sees a NaN loss at step 3. A rank that decided differently from its peer would
wait in a collective the other never joins: the deadline turns that hang into a failure.
Last, in one process, a skipped non-finite gradient keeps the data position right.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from rich.console import Console

from alignlab.config import TrainConfig
from alignlab.models.tiny import init_tiny_model
from alignlab.train.checkpoint import load_latest
from alignlab.train.loop import StepResult, Trainer

ROOT = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).with_name("_runner.py")
PAIRS = ROOT / "examples" / "data" / "pairs.jsonl"
DEADLINE = 120  # seconds for both ranks; a healthy run takes a few
BAD_RANK, BAD_STEP, STEPS = 1, 3, 4

CONFIG = """\
data:
  path: pairs.jsonl
tokenize:
  max_length: 256
model:
  name_or_path: tiny
train:
  loss: dpo
  loss_kwargs: {beta: 0.1}
  reference: copy
  lr: 5.0e-4
  batch_size: 2
  max_steps: 4
  save_every: 1
  schedule: constant
  precision: fp32
  seed: 0
  device: cpu
  output_dir: run
"""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("nonfinite_ddp")
    init_tiny_model(root / "tiny", hidden_size=32, intermediate=64, heads=4)
    shutil.copy(PAIRS, root / "pairs.jsonl")
    (root / "run.yaml").write_text(CONFIG, encoding="utf-8")
    return root


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Rank:
    def __init__(self, rank: int, returncode: int, stdout: str, stderr: str) -> None:
        self.rank, self.returncode, self.stdout, self.stderr = rank, returncode, stdout, stderr

    def probes(self) -> list[dict[str, str]]:
        """The runner's per-step lines: step, skipped, micro_batches, weights (a digest)."""
        fields = [dict(re.findall(r"(\w+)=(\S+)", line)) for line in self.stdout.splitlines()
                  if line.startswith("nonfinite-probe ")]
        return [{k: v for k, v in probe.items() if k != "rank"} for probe in fields]

    def __repr__(self) -> str:
        return f"rank {self.rank}: exit {self.returncode}\n{self.stdout}\n{self.stderr}"


def two_ranks(cwd: Path, name: str, *overrides: str, loss_factor: str = "nan") -> list[Rank]:
    """``alignlab train run.yaml OVERRIDES`` into ``cwd/name`` on 2 gloo ranks, rank 1's loss NaN
    (or times ``loss_factor``) at step 3."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", COLUMNS="250", PYTHONHASHSEED="0",
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE="2")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH")) if p)
    command = [sys.executable, str(RUNNER), "--nan-on-rank", str(BAD_RANK), "--nan-at-step", str(BAD_STEP),
               "--loss-factor", loss_factor, "--", "run.yaml", f"train.output_dir={name}", *overrides]
    logs, processes = [], []
    for rank in range(2):
        # Files, not pipes: a rank blocked on a full pipe would look like a hang.
        out = open(cwd / f"{name}.rank{rank}.out", "w+")  # noqa: SIM115 (closed below)
        err = open(cwd / f"{name}.rank{rank}.err", "w+")  # noqa: SIM115
        logs.append((out, err))
        rank_env = {**env, "RANK": str(rank), "LOCAL_RANK": str(rank)}
        processes.append(subprocess.Popen(command, cwd=cwd, env=rank_env, stdout=out, stderr=err,
                                          text=True))
    deadline = time.monotonic() + DEADLINE
    hung = False
    for process in processes:
        try:
            process.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            hung = True
            break
    if hung:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    ranks = []
    for rank, (process, (out, err)) in enumerate(zip(processes, logs, strict=True)):
        out.seek(0)
        err.seek(0)
        ranks.append(Rank(rank, process.returncode, out.read(), err.read()))
        out.close()
        err.close()
    if hung:
        pytest.fail(f"the ranks did not finish within {DEADLINE} s (a collective only one rank "
                    f"joined?)\n" + "\n".join(map(repr, ranks)))
    return ranks


def test_nan_on_one_rank_stops_every_rank_and_keeps_the_last_checkpoint(workspace):
    ranks = two_ranks(workspace, "stop", "train.on_nonfinite=stop")
    for rank in ranks:
        assert rank.returncode == 2, rank  # the CLI's exit status for an alignlab error
        assert f"non-finite loss at step {BAD_STEP}" in rank.stderr, rank
        assert f"rank {BAD_RANK}" in rank.stderr, rank  # which rank saw it
        assert [p["step"] for p in rank.probes()] == [str(s) for s in range(1, BAD_STEP)], rank
        assert "teardown-probe ddp_alive=0" in rank.stdout, rank  # freed before the group went
    run = workspace / "stop"
    assert (run / "checkpoints" / "latest").read_text(encoding="utf-8").strip() == f"step-{BAD_STEP - 1:08d}"
    state = load_latest(run / "checkpoints")  # verifies every file against its manifest
    assert state is not None and state.step == BAD_STEP - 1 and state.micro_batches == BAD_STEP - 1
    assert state.counters["skipped_nonfinite"] == 0
    assert not (run / "model").exists() and not (run / "summary.json").exists()


def test_nan_on_one_rank_is_skipped_by_every_rank(workspace):
    ranks = two_ranks(workspace, "skip", "train.on_nonfinite=skip")
    for rank in ranks:
        assert rank.returncode == 0, rank
        assert "teardown-probe ddp_alive=0" in rank.stdout, rank
    probes = [rank.probes() for rank in ranks]
    assert probes[0] == probes[1], ranks  # same steps, counters, data position and weights
    by_step = {int(p["step"]): p for p in probes[0]}
    assert sorted(by_step) == list(range(1, STEPS + 1))
    assert [int(by_step[s]["skipped"]) for s in sorted(by_step)] == [0, 0, 1, 1]
    assert [int(by_step[s]["micro_batches"]) for s in sorted(by_step)] == [1, 2, 3, 4]
    weights = [by_step[s]["weights"] for s in sorted(by_step)]
    assert weights[BAD_STEP - 1] == weights[BAD_STEP - 2], "the skipped step changed the weights"
    assert weights[BAD_STEP] != weights[BAD_STEP - 1], "training did not continue after the skip"
    summary = json.loads((workspace / "skip" / "summary.json").read_text(encoding="utf-8"))
    assert summary["steps"] == STEPS and summary["skipped_nonfinite"] == 1


def test_fp16_overflow_on_one_rank_is_skipped_by_every_rank(workspace):
    """Rank 1's loss times 1e30 at step 3: finite, but its float16 gradients overflow. DDP sums
    them into every rank's gradients, so both ranks skip the step and halve the scale alike."""
    ranks = two_ranks(workspace, "fp16", "train.precision=fp16", loss_factor="1e30")
    for rank in ranks:
        assert rank.returncode == 0, rank
    probes = [rank.probes() for rank in ranks]
    assert probes[0] == probes[1], ranks
    weights = [p["weights"] for p in probes[0]]
    assert weights[BAD_STEP - 1] == weights[BAD_STEP - 2] != weights[BAD_STEP], "step 3 was not skipped alone"
    lines = (workspace / "fp16" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    train = [r for r in map(json.loads, lines) if r["split"] == "train"]
    assert [r["loss_scale"] for r in train] == [2.0 ** 16] * BAD_STEP + [2.0 ** 15]  # halved after step 3
    assert [r["skipped_overflow"] for r in train] == [0, 0, 1, 1]
    summary = json.loads((workspace / "fp16" / "summary.json").read_text(encoding="utf-8"))
    assert summary["skipped_overflow"] == 1 and summary["skipped_nonfinite"] == 0


class PairsOrder:
    """Batch ``i`` of every epoch is examples ``2i, 2i + 1``: one process, 8 batches an epoch."""

    world_size = 1

    def batches_per_epoch(self) -> int:
        return 8

    def batch(self, epoch: int, index: int) -> list[int]:
        return [2 * index, 2 * index + 1]

    def global_count(self, epoch: int, index: int) -> int:
        return 2


def test_skipped_nonfinite_gradient_advances_the_data_by_one_step(tmp_path):
    """The gradient is checked after the step's micro-batches are counted in the data position:
    skipping the step must not count them again, or the next step would lose its data."""
    torch.manual_seed(0)
    model, x = torch.nn.Linear(3, 1), torch.randn(16, 3)
    calls: list[list[int]] = []

    def step(indices: list[int]) -> StepResult:
        calls.append(indices)
        loss = model(x[indices]).pow(2).sum()
        if len(calls) == 3:  # step 2's first micro-batch: a finite loss, a non-finite gradient
            loss = loss + torch.sqrt((model.weight - model.weight.detach()).abs().sum())
        return StepResult(loss_sum=loss, examples=len(indices))

    config = TrainConfig(batch_size=2, grad_accum=2, max_steps=3, on_nonfinite="skip",
                         output_dir=str(tmp_path))
    run = Trainer(config, model, step, PairsOrder(), tmp_path, console=Console(quiet=True))
    run.fit()
    assert run.counters["skipped_nonfinite"] == 1
    assert run.micro_batches == 6
    assert calls == [PairsOrder().batch(0, i) for i in range(6)]
