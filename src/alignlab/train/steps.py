"""The step function: one micro-batch of example indices → per-example losses, for any data kind.

Example: ``step = make_step(entry, kwargs, get_kind("paired"), items, policy, reference, pad_id); step([3, 1, 4])``

A step reads the loss's contract (which data, which log-probs, whether a reference is needed)
and asks the data kind for the batch and the named tensors, never the loss's name or the item
types. Reduction over examples is the loop's business.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from alignlab.errors import ConfigError
from alignlab.forward import model_device
from alignlab.kinds import DataKind, select
from alignlab.models.reference import Reference
from alignlab.registry import Entry
from alignlab.train.loop import StepResult


def make_step(entry: Entry, loss_kwargs: Mapping[str, Any], kind: DataKind, items: Sequence[Any],
              policy: torch.nn.Module, reference: Reference | None, pad_id: int, state: Any = None,
              key_prefix: str = "", row_of: Mapping[int, int] | None = None) -> Callable[[list[int]], StepResult]:
    """The step of loss ``entry`` on ``items``; ``policy`` maps a SequenceBatch to LogProbs (or
    to rewards, for a reward model); ``key_prefix`` names the data set in the reference cache;
    ``row_of`` (SFT packing, :class:`~alignlab.train.order.PackedOrder`) is each example's packed
    row, its examples consecutive in every batch."""
    contract = entry.contract
    if contract.needs_ref and reference is None:
        raise ConfigError(f"loss {entry.name!r} needs a reference model; set train.reference")
    device = model_device(policy)

    def step(indices: list[int]) -> StepResult:
        batch = kind.collate([items[i] for i in indices], indices, pad_id, contract, key_prefix)
        if row_of is not None:
            batch = dataclasses.replace(batch, sequences=dataclasses.replace(
                batch.sequences, rows=_row_numbers([row_of[i] for i in indices])))
        batch = batch.to(device)
        policy_out = policy(batch.sequences)
        ref_out = reference.logps(batch.sequences) if contract.needs_ref else None
        available = kind.inputs(contract, batch, policy_out, ref_out)
        if state is not None:
            available.update({k: v.to(device) for k, v in state.inputs().items()})
        losses, metrics = entry.obj(**select(contract, available, entry.name), **loss_kwargs)
        metrics = {**metrics, **kind.diagnostics(available)}
        return StepResult(loss_sum=losses.sum(), examples=len(indices), tokens=batch.sequences.tokens,
                          metrics={k: _metric_sum(v, len(indices)) for k, v in metrics.items()},
                          loss_metrics=metrics)

    return step


def _row_numbers(rows: list[int]) -> torch.Tensor:
    """Packed rows renumbered 0, 1, ... in order of appearance."""
    first: dict[int, int] = {}
    return torch.tensor([first.setdefault(row, len(first)) for row in rows], dtype=torch.long)


def _metric_sum(value: torch.Tensor, n: int) -> float:
    """Per-example metrics are summed; a batch-level scalar counts once per example."""
    value = value.detach().float()
    return float(value.sum()) if value.dim() > 0 else float(value) * n
