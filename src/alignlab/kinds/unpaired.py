"""Unpaired data (prompt, completion, thumbs up or down): KTO, BCO.

Example: ``batch = get_kind("unpaired").collate(items, [2, 7], pad_id, get_loss("kto").contract)``

SFT's one sequence per example, plus each example's label, plus, for losses that estimate a KL
term from mismatched pairs (KTO), B more sequences: example j's prompt with example j−1's
completion, as TRL pairs them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from alignlab.data.records import Feedback
from alignlab.data.tokenize import TokenizedCompletion
from alignlab.errors import ConfigError
from alignlab.kinds.base import register_kind, sequence_key
from alignlab.kinds.sft import SFT
from alignlab.losses.contract import LossContract


@register_kind
class Unpaired(SFT):
    name = "unpaired"
    records = "unpaired"

    def min_batch(self, contract: LossContract) -> int:
        return 2 if contract.mismatched_pairs else 1

    def rows(self, items: Sequence[TokenizedCompletion], indices: Sequence[int], contract: LossContract,
             prefix: str) -> tuple[list[tuple[Sequence[int], Sequence[int]]], list[str]]:
        rows, keys = super().rows(items, indices, contract, prefix)
        if contract.mismatched_pairs:
            if len(items) < self.min_batch(contract):
                raise ConfigError("KTO's KL estimate pairs each prompt with another example's completion: "
                                  "it needs train.batch_size >= 2")
            rows += [(items[j].prompt_ids, items[j - 1].completion_ids) for j in range(len(items))]
            # Never cached (a new pairing every batch), but named for the reference all the same.
            keys += [sequence_key(prefix, i, f"kl:{indices[j - 1]}") for j, i in enumerate(indices)]
        return rows, keys

    def fields(self, items: Sequence[TokenizedCompletion], contract: LossContract) -> dict[str, Tensor]:
        if "labels" not in contract.inputs:
            return {}
        if not all(isinstance(item.record, Feedback) for item in items):
            raise ConfigError("this loss needs labelled completions (prompt/completion/label data); "
                              "load pairs with data.kind=unpaired to split them into thumbs up/down")
        return {"labels": torch.tensor([item.record.label for item in items])}  # (B,) bool
