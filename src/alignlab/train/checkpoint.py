"""Atomic, verified checkpoints: trainable weights, optimizer, schedule, RNG, loss state, position.

Example: ``save_checkpoint(run / "checkpoints", state); state = load_latest(run / "checkpoints")``

A checkpoint is written to a temporary folder, its files' sha256 sums recorded in a manifest,
then renamed into place; a pointer file (``latest``) is replaced atomically last. A process killed
at any moment leaves either the previous checkpoint or the new one, never a half-written one.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from alignlab.errors import AlignlabError
from alignlab.files import fsync_tree, sha256_file, write_text_atomic

MANIFEST = "manifest.json"
POINTER = "latest"


@dataclass
class TrainingState:
    """Everything needed to continue a run exactly where it stopped."""

    step: int
    """Optimizer steps done."""
    micro_batches: int
    """Micro-batches consumed: the data position (epoch and batch follow from it)."""
    weights: dict[str, torch.Tensor]
    """Trainable parameters by name (frozen ones are reloaded from the base model)."""
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    loss_state: dict[str, Any] = field(default_factory=dict)
    rng: dict[str, Any] = field(default_factory=dict)
    counters: dict[str, Any] = field(default_factory=dict)
    """Skipped non-finite steps, tokens seen and the like."""
    rollout: dict[str, Any] = field(default_factory=dict)
    """Online RL: the rollouts a later step reuses (``rl.num_iterations`` > 1), JSON-ready."""


def capture_rng() -> dict[str, Any]:
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(_as_tuple(state["python"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value: Any) -> Any:
    # torch.load(weights_only=True) gives lists back where random.getstate() had tuples.
    return tuple(_as_tuple(v) for v in value) if isinstance(value, list | tuple) else value


def save_checkpoint(folder: Path, state: TrainingState, keep: int = 2) -> Path:
    """Write ``step-N`` atomically, point ``latest`` at it, keep the newest ``keep`` checkpoints."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step-{state.step:08d}"
    temporary = folder / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    save_file({k: v.detach().contiguous().cpu() for k, v in state.weights.items()}, temporary / "weights.safetensors")
    torch.save({"optimizer": state.optimizer, "scheduler": state.scheduler, "rng": state.rng},
               temporary / "trainer.pt")
    (temporary / "state.json").write_text(json.dumps({
        "step": state.step, "micro_batches": state.micro_batches,
        "loss_state": state.loss_state, "counters": state.counters, "rollout": state.rollout,
    }), encoding="utf-8")
    files = sorted(p.name for p in temporary.iterdir())
    manifest = {name: sha256_file(temporary / name) for name in files}
    (temporary / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    fsync_tree(temporary)
    if final.exists():
        shutil.rmtree(final)
    os.replace(temporary, final)
    write_text_atomic(folder / POINTER, final.name)
    for old in sorted(folder.glob("step-*"))[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_latest(folder: Path) -> TrainingState | None:
    """The checkpoint ``latest`` points at, verified; None when the run has none yet."""
    pointer = folder / POINTER
    for stale in folder.glob(".tmp-*"):  # a write a kill interrupted: never used
        shutil.rmtree(stale, ignore_errors=True)
    for stale in folder.glob(f".{POINTER}.*.tmp"):  # an interrupted pointer update (atomic_write's temp name)
        stale.unlink(missing_ok=True)
    if not pointer.exists():
        return None
    path = folder / pointer.read_text(encoding="utf-8").strip()
    _verify(path)
    trainer = torch.load(path / "trainer.pt", weights_only=True)
    meta = json.loads((path / "state.json").read_text(encoding="utf-8"))
    return TrainingState(
        step=meta["step"], micro_batches=meta["micro_batches"],
        weights=load_file(path / "weights.safetensors"), optimizer=trainer["optimizer"],
        scheduler=trainer["scheduler"], loss_state=meta["loss_state"], rng=trainer["rng"],
        counters=meta["counters"], rollout=meta.get("rollout", {}),
    )


def _verify(path: Path) -> None:
    manifest_path = path / MANIFEST
    if not manifest_path.exists():
        raise AlignlabError(f"checkpoint {path} has no manifest\n  hint: it was not written by alignlab, "
                            "or was damaged; delete it to restart from the previous one")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    for name, digest in manifest.items():
        if not (path / name).exists() or sha256_file(path / name) != digest:
            raise AlignlabError(f"checkpoint file {path / name} is missing or does not match its checksum\n"
                                "  hint: the checkpoint is damaged; delete that folder and its 'latest' "
                                "pointer to resume from an older checkpoint, or start over")
