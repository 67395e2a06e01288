"""GPU-only paths, skipped without CUDA (CI has none): QLoRA on CUDA, FSDP2 with CPU offload on
two GPUs, gradient checkpointing and SFT packing, fp16 with loss scaling. Run with `pytest -m gpu` on a
machine with GPUs; each is the CPU test's claim on the device the option exists for."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from rich.console import Console

import alignlab
from alignlab.models.tiny import init_tiny_model

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
ROOT = Path(__file__).resolve().parents[2]
PAIRS = str(ROOT / "examples" / "data" / "pairs.jsonl")
SFT = str(ROOT / "examples" / "data" / "sft.jsonl")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return init_tiny_model(tmp_path_factory.mktemp("gpu") / "tiny", hidden_size=64, layers=2, heads=4, intermediate=128)


def losses(run: Path) -> list[float]:
    return [json.loads(x)["loss"] for x in (run / "metrics.jsonl").read_text().splitlines()
            if json.loads(x)["split"] == "train"]


def test_qlora_4bit_trains_on_cuda(tiny, tmp_path):
    pytest.importorskip("bitsandbytes")
    config = {"data": {"path": PAIRS}, "model": {"name_or_path": str(tiny), "quantization": "4bit",
                                                 "lora": {"enabled": True, "r": 4}},
              "train": {"loss": "dpo", "reference": "adapters", "max_steps": 3, "batch_size": 4, "lr": 1e-2,
                        "device": "cuda", "precision": "bf16", "output_dir": str(tmp_path / "run")}}
    values = losses(alignlab.train(config, console=Console(quiet=True)))
    assert values[0] == pytest.approx(0.6931, abs=2e-2) and all(torch.isfinite(torch.tensor(values)))


def test_gradient_checkpointing_and_sft_packing_on_cuda_match_without(tiny, tmp_path):
    runs = []
    for name, extra in (("plain", {}), ("both", {"gradient_checkpointing": True})):
        config = {"data": {"path": SFT}, "model": {"name_or_path": str(tiny)},
                  "train": {"loss": "nll", "pack_length": 128, "max_steps": 3, "batch_size": 2, "lr": 1e-3,
                            "device": "cuda", "precision": "fp32", "output_dir": str(tmp_path / name), **extra}}
        runs.append(losses(alignlab.train(config, console=Console(quiet=True))))
    assert runs[0] == pytest.approx(runs[1], abs=1e-4)


def test_fp16_with_loss_scaling_trains_on_cuda(tiny, tmp_path):
    """train.precision=fp16 where it exists for: a CUDA float16 forward with GradScaler; the loss
    falls, every step logs its scale, and the run keeps float32 weights."""
    config = {"data": {"path": PAIRS}, "model": {"name_or_path": str(tiny)},
              "train": {"loss": "dpo", "reference": "copy", "max_steps": 6, "batch_size": 4, "lr": 1e-3,
                        "device": "cuda", "precision": "fp16", "output_dir": str(tmp_path / "run")}}
    run = alignlab.train(config, console=Console(quiet=True))
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"train"' in x]
    assert all(r["loss_scale"] > 0 for r in records) and records[-1]["loss"] < records[0]["loss"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["skipped_overflow"] < summary["steps"]


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_fsdp_cpu_offload_matches_plain_fsdp(tiny, tmp_path):
    results = {}
    (tmp_path / "run.yaml").write_text("train:\n  loss: dpo\n", encoding="utf-8")
    for name, offload in (("fsdp", "false"), ("offload", "true")):
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
                   "alignlab.cli", "train", str(tmp_path / "run.yaml"), f"data.path={PAIRS}", f"model.name_or_path={tiny}",
                   "train.loss=dpo", "train.reference=copy", "train.max_steps=3", "train.batch_size=2",
                   "train.distributed=fsdp", f"train.fsdp_cpu_offload={offload}", "train.device=cuda",
                   f"train.output_dir={tmp_path / name}"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, env={**os.environ})
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        results[name] = losses(tmp_path / name)
    assert results["offload"] == pytest.approx(results["fsdp"], abs=1e-4)
