"""Prompt-only data for online RL: prompts in, the policy's own scored completions as the batch.

Example: ``items = get_kind("prompt").read("questions.jsonl", options)``; a step's rollouts are
:class:`Rollout` items, collated like any other kind's

A prompt's other fields (a reference ``answer``) stay with it as columns and reach the rewards.
The training examples are not in the data: each optimizer step samples G completions of its
prompts (:mod:`alignlab.train.online`), scores them and computes their advantages, and the
loss trains on those :class:`Rollout` items. Their G completions share the prompt's tokens, so
the packed forward encodes each prompt once for its group.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from alignlab.data.prompts import load_prompts
from alignlab.data.records import Text
from alignlab.data.tokenize import RecordTokenizer
from alignlab.forward import collate_sequences
from alignlab.kinds.base import DataKind, KindBatch, register_kind, sequence_key
from alignlab.logprobs import LogProbs
from alignlab.losses.contract import LossContract

ROLE = "rollout"


@dataclass(frozen=True)
class PromptRecord:
    """A prompt and its other fields, as read from a row."""

    prompt: Text
    columns: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PromptItem:
    """A tokenized prompt: what generation continues from."""

    prompt: Text
    """As written (what rewards see)."""
    prompt_ids: tuple[int, ...]
    columns: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Rollout:
    """One sampled completion of a prompt, scored, with its advantage."""

    prompt_index: int
    """Index of its prompt in the data."""
    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]
    advantage: float | tuple[float, ...]
    """One per completion, or one per completion token (REINFORCE++'s token-level returns)."""
    reward: float
    truncated: bool
    """It reached the length limit without EOS."""
    old_logps: tuple[float, ...] | None = None
    """Per-token log-probs under the policy that sampled it, when an update reuses the rollout
    (``num_iterations`` > 1); None: the current policy is the sampling one (ratio 1)."""
    old_values: tuple[float, ...] | None = None
    """PPO: the critic's per-token values at sampling time (GAE's V), else None."""
    returns: tuple[float, ...] | None = None
    """PPO: the value targets per token (advantages + old values), else None."""


@register_kind
class PromptOnly(DataKind):
    name = "prompt"
    records = "prompt"

    def read(self, path: str | Path, prompt_field: str | None = None) -> list[PromptRecord]:
        """Every row's prompt and its other scalar fields (file:line errors from the loader)."""
        prompts = load_prompts(path, prompt_field)
        names = list(prompts.columns)
        return [PromptRecord(text, {n: prompts.columns[n][i] for n in names if prompts.columns[n][i] is not None})
                for i, text in enumerate(prompts.texts)]

    def tokenize(self, records: Sequence[PromptRecord], encoder: RecordTokenizer) -> tuple[list[Any], Mapping[str, int]]:
        items = [PromptItem(r.prompt, encoder.encode_prompt(r.prompt), dict(r.columns)) for r in records]
        return items, {"records": len(records), "kept": len(items)}

    def collate(self, items: Sequence[Rollout], indices: Sequence[int], pad_id: int,
                contract: LossContract, prefix: str = "") -> KindBatch:
        rows = [(r.prompt_ids, r.completion_ids) for r in items]
        sequences = collate_sequences(rows, pad_id, keys=[sequence_key(prefix, i, ROLE) for i in indices])
        if all(isinstance(r.advantage, float | int) for r in items):
            advantages = torch.tensor([float(r.advantage) for r in items], dtype=torch.float32)  # type: ignore[arg-type]
        else:
            advantages = _per_token(items, [r.advantage if isinstance(r.advantage, tuple) else
                                            (float(r.advantage),) * len(r.completion_ids) for r in items],
                                    sequences.input_ids.shape)
        fields = {"advantages": advantages}
        for name, attribute in (("old_tokens", "old_logps"), ("old_values", "old_values"), ("returns", "returns")):
            if all(getattr(r, attribute) is not None for r in items):
                fields[name] = _per_token(items, [getattr(r, attribute) for r in items], sequences.input_ids.shape)
        return KindBatch(len(items), sequences, fields)

    def inputs(self, contract: LossContract, batch: KindBatch, policy: LogProbs,
               ref: LogProbs | None) -> dict[str, Tensor]:
        out = {"policy_tokens": policy.tokens, "mask": batch.sequences.completion_mask,
               "advantages": batch.fields["advantages"],
               # Sampled by the policy being trained: the old log-probs are its own, detached.
               "old_tokens": batch.fields.get("old_tokens", policy.tokens.detach())}
        if policy.entropy is not None:
            out["entropy"] = policy.entropy
        if policy.values is not None:  # PPO: the critic's values, and their targets from the rollout
            out["values"] = policy.values
            out.update({name: batch.fields[name] for name in ("old_values", "returns") if name in batch.fields})
        if ref is not None:
            out["ref_tokens"] = ref.tokens
        return out

    def diagnostics(self, available: Mapping[str, Tensor]) -> dict[str, Tensor]:
        if "entropy" not in available:
            return {}
        mask = available["mask"].float()
        return {"entropy": (available["entropy"] * mask).sum(-1) / mask.sum(-1).clamp(min=1)}


def _per_token(items: Sequence[Rollout], values: Sequence[Any], shape: torch.Size) -> Tensor:
    """(B, L) float32: each row's per-completion-token values at its completion positions, 0 elsewhere."""
    out = torch.zeros(shape, dtype=torch.float32)
    for row, (r, v) in enumerate(zip(items, values, strict=True)):
        start = len(r.prompt_ids)
        out[row, start:start + len(r.completion_ids)] = torch.tensor(v, dtype=torch.float32)
    return out
