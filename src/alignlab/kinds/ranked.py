"""Ranked data (prompt, K responses, scores or ranks): Plackett–Luce, all-pairs, AFT.

Example: ``batch = get_kind("ranked").collate(items, [0, 1], pad_id, contract)``

B examples are B·K sequences in (example, response) order, K the longest list of the batch;
a shorter list is padded with one-token placeholders that the loss masks out
(``response_mask``) and no reference reads (their key is None).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from alignlab.data.tokenize import TokenizedRanked
from alignlab.forward import SequenceBatch, collate_sequences
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


def response_role(j: int) -> str:
    return f"response{j}"


def collate_responses(items: Sequence[TokenizedRanked], indices: Sequence[int], pad_id: int,
                      prefix: str = "") -> tuple[SequenceBatch, Tensor]:
    """B·K sequences in (example, response) order and the (B, K) presence mask; a missing
    response is a one-token placeholder (the prompt's last token), masked out, with no key."""
    k = max(len(i.responses_ids) for i in items)
    sequences: list[tuple[Sequence[int], Sequence[int]]] = []
    keys: list[str | None] = []
    present = torch.zeros(len(items), k, dtype=torch.bool)  # (B, K)
    for row, (index, item) in enumerate(zip(indices, items, strict=True)):
        for j in range(k):
            if j < len(item.responses_ids):
                sequences.append((item.prompt_ids, item.responses_ids[j]))
                keys.append(sequence_key(prefix, index, response_role(j)))
                present[row, j] = True
            else:
                sequences.append((item.prompt_ids, item.prompt_ids[-1:]))
                keys.append(None)
    return collate_sequences(sequences, pad_id, keys=keys), present


@register_kind
class Ranked(DataKind):
    name = "ranked"
    records = "ranked"

    def collate(self, items: Sequence[TokenizedRanked], indices: Sequence[int], pad_id: int,
                contract: LossContract, prefix: str = "") -> KindBatch:
        sequences, present = collate_responses(items, indices, pad_id, prefix)
        k = present.shape[1]
        scores = torch.tensor([_scores(item.record, k) for item in items], dtype=torch.float32)  # (B, K)
        return KindBatch(len(items), sequences, {"response_mask": present, "scores": scores})

    def cache_sequences(self, items: Sequence[TokenizedRanked], prefix: str = "") -> Iterator[RefSequence]:
        for i, item in enumerate(items):
            for j, ids in enumerate(item.responses_ids):
                yield sequence_key(prefix, i, response_role(j)), item.prompt_ids, ids

    def inputs(self, contract: LossContract, batch: KindBatch, policy: LogProbs,
               ref: LogProbs | None) -> dict[str, Tensor]:
        shape = batch.fields["response_mask"].shape
        out = {"policy": sequence_score(policy, contract).view(shape), "lengths": policy.counts.view(shape),
               **batch.fields}
        if ref is not None:
            out["ref"] = sequence_score(ref, contract).view(shape)
        return out


def _scores(record: Any, k: int) -> list[float]:
    """Higher is better; ranks (1 best) become negated ranks; missing responses score -inf."""
    values = list(record.scores) if record.scores is not None else [-float(r) for r in record.ranks]
    return values + [-float("inf")] * (k - len(values))
