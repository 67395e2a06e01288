"""Reward-model data: preference pairs scored by a reward model (Bradley–Terry and kin).

Example: ``get_kind("reward").inputs(contract, batch, rewards, None)["margin"]``

The pairs collate as paired data; the trained model is a reward model whose forward gives one
score per sequence, so the loss reads rewards, not log-probs, and no reference is involved.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from alignlab.data.tokenize import TokenizedPair
from alignlab.kinds.base import DataKind, KindBatch, register_kind
from alignlab.kinds.paired import collate_pairs
from alignlab.losses.contract import LossContract


@register_kind
class Reward(DataKind):
    name = "reward"
    records = "paired"
    reward_model = True

    def collate(self, items: Sequence[TokenizedPair], indices: Sequence[int], pad_id: int,
                contract: LossContract, prefix: str = "") -> KindBatch:
        batch = collate_pairs(items, indices, pad_id, prefix)
        margin = torch.tensor([item.record.margin or 0.0 for item in items])  # (B,) 0 where none
        return KindBatch(batch.examples, batch.sequences, {"margin": margin})

    def inputs(self, contract: LossContract, batch: KindBatch, policy: Tensor, ref: None) -> dict[str, Tensor]:
        n = batch.examples  # (2B,) rewards: chosen first, then rejected
        return {"chosen_rewards": policy[:n], "rejected_rewards": policy[n:], **batch.fields}
