"""Stepwise data for process reward models: one label per step, read at the step's last token.

Example: ``get_kind("prm").inputs(contract, batch, token_scores, None)["step_logits"]``

The trained model is a scalar-head reward model whose forward gives a score at every position
(:class:`alignlab.models.loading.TokenScores`); a step's logit is the score at its last token (the
separator after it), as in Sun et al. 2024's PRM and TRL's PRM trainer. No reference is involved.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from alignlab.data.tokenize import TokenizedSteps
from alignlab.forward import collate_sequences
from alignlab.kinds.base import DataKind, KindBatch, register_kind
from alignlab.losses.contract import LossContract


@register_kind
class ProcessReward(DataKind):
    name = "prm"
    records = "stepwise"
    reward_model = True
    token_scores = True
    """The model's forward gives a score per position, not one per sequence."""

    def collate(self, items: Sequence[TokenizedSteps], indices: Sequence[int], pad_id: int,
                contract: LossContract, prefix: str = "") -> KindBatch:
        sequences = collate_sequences([(i.prompt_ids, i.completion_ids) for i in items], pad_id)
        width = max(len(i.step_ends) for i in items)
        positions = torch.zeros(len(items), width, dtype=torch.long)  # 0 (a real position) where no step
        labels = torch.zeros(len(items), width)
        mask = torch.zeros(len(items), width, dtype=torch.bool)
        for row, item in enumerate(items):
            n = len(item.step_ends)
            positions[row, :n] = torch.tensor([len(item.prompt_ids) + end for end in item.step_ends])
            labels[row, :n] = torch.tensor(item.labels)
            mask[row, :n] = True
        return KindBatch(len(items), sequences, {"step_positions": positions, "step_labels": labels,
                                                 "step_mask": mask})

    def inputs(self, contract: LossContract, batch: KindBatch, policy: Tensor, ref: None) -> dict[str, Tensor]:
        positions = batch.fields["step_positions"]
        return {"step_logits": policy.gather(1, positions), "step_labels": batch.fields["step_labels"],
                "step_mask": batch.fields["step_mask"]}
