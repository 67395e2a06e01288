"""SFT data (prompt, completion): maximum likelihood, unlearning (NPO, gradient ascent), PoFT.

Example: ``batch = get_kind("sft").collate(items, [0, 5], pad_id, contract)``

One sequence per example; :mod:`alignlab.kinds.unpaired` builds on this with labels and
mismatched pairs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from alignlab.data.tokenize import TokenizedCompletion
from alignlab.forward import collate_sequences
from alignlab.kinds.base import (
    DataKind,
    KindBatch,
    RefSequence,
    register_kind,
    sequence_key,
    sequence_score,
)
from alignlab.logprobs import LogProbs
from alignlab.losses.contract import LossContract

ROLE = "completion"
"""The reference-cache role of an example's one completion: "17:completion"."""


@register_kind
class SFT(DataKind):
    name = "sft"
    records = "sft"

    def collate(self, items: Sequence[TokenizedCompletion], indices: Sequence[int], pad_id: int,
                contract: LossContract, prefix: str = "") -> KindBatch:
        rows, keys = self.rows(items, indices, contract, prefix)
        # A multi-turn chat's user/tool turns are input only: out of the completion mask.
        supervised = [getattr(i, "supervised", None) for i in items] + [None] * (len(rows) - len(items))
        return KindBatch(len(items), collate_sequences(rows, pad_id, keys=keys, supervised=supervised),
                         self.fields(items, contract))

    def rows(self, items: Sequence[TokenizedCompletion], indices: Sequence[int], contract: LossContract,
             prefix: str) -> tuple[list[tuple[Sequence[int], Sequence[int]]], list[str]]:
        """(prompt, completion) of each example, and its cache key."""
        return ([(i.prompt_ids, i.completion_ids) for i in items],
                [sequence_key(prefix, i, ROLE) for i in indices])

    def fields(self, items: Sequence[TokenizedCompletion], contract: LossContract) -> dict[str, Tensor]:
        """Loss inputs read from the records: none for SFT."""
        return {}

    def cache_sequences(self, items: Sequence[TokenizedCompletion], prefix: str = "") -> Iterator[RefSequence]:
        for i, item in enumerate(items):
            yield sequence_key(prefix, i, ROLE), item.prompt_ids, item.completion_ids

    def inputs(self, contract: LossContract, batch: KindBatch, policy: LogProbs,
               ref: LogProbs | None) -> dict[str, Tensor]:
        """The first B sequences are the examples; any after them are mismatched (KTO's KL pairs)."""
        score, n = sequence_score(policy, contract), batch.examples
        main = slice(0, n)
        out = {"policy": score[main], "lengths": policy.counts[main], "policy_tokens": policy.tokens[main],
               "mask": batch.sequences.completion_mask[main], "example_weights": torch.ones_like(score[main]),
               **batch.fields}
        if score.shape[0] > n:
            out["kl_policy"] = score[n:]
        if ref is not None:
            ref_score = sequence_score(ref, contract)
            out["ref"] = ref_score[main]
            if ref_score.shape[0] > n:
                out["kl_ref"] = ref_score[n:]
        return out
