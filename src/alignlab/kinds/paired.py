"""Paired data (prompt, chosen, rejected): the DPO family, SimPO, CPO, ORPO and the rest.

Example: ``batch = get_kind("paired").collate(items, [3, 1], pad_id, contract)``

One batch of B pairs is 2B sequences, every chosen first, then every rejected, so one forward
pass serves both halves and each pair's prompt is one packed group.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from alignlab.data.tokenize import TokenizedPair
from alignlab.eval.ranking import pair_credit
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


def collate_pairs(items: Sequence[TokenizedPair], indices: Sequence[int], pad_id: int,
                  prefix: str = "") -> KindBatch:
    """2B sequences: chosen of every pair, then rejected of every pair."""
    sequences = [(i.prompt_ids, i.chosen_ids) for i in items] + [(i.prompt_ids, i.rejected_ids) for i in items]
    weights = [i.chosen_weights for i in items] + [i.rejected_weights for i in items]
    keys = [sequence_key(prefix, i, "chosen") for i in indices] + \
        [sequence_key(prefix, i, "rejected") for i in indices]
    return KindBatch(len(items), collate_sequences(sequences, pad_id, weights, keys))


@register_kind
class Paired(DataKind):
    name = "paired"
    records = "paired"

    def collate(self, items: Sequence[TokenizedPair], indices: Sequence[int], pad_id: int,
                contract: LossContract, prefix: str = "") -> KindBatch:
        return collate_pairs(items, indices, pad_id, prefix)

    def cache_sequences(self, items: Sequence[TokenizedPair], prefix: str = "") -> Iterator[RefSequence]:
        for i, item in enumerate(items):
            yield sequence_key(prefix, i, "chosen"), item.prompt_ids, item.chosen_ids
            yield sequence_key(prefix, i, "rejected"), item.prompt_ids, item.rejected_ids

    def inputs(self, contract: LossContract, batch: KindBatch, policy: LogProbs,
               ref: LogProbs | None) -> dict[str, Tensor]:
        sequences, n = batch.sequences, batch.examples
        first, second = slice(0, n), slice(n, 2 * n)
        weights = sequences.token_weights if sequences.token_weights is not None else torch.ones_like(policy.tokens)
        score = sequence_score(policy, contract)
        out = {
            "policy_chosen": score[first], "policy_rejected": score[second],
            "chosen_lengths": policy.counts[first], "rejected_lengths": policy.counts[second],
            "policy_chosen_tokens": policy.tokens[first], "policy_rejected_tokens": policy.tokens[second],
            "chosen_mask": sequences.completion_mask[first], "rejected_mask": sequences.completion_mask[second],
            "chosen_weights": weights[first], "rejected_weights": weights[second],
            # Not loss inputs: the ranking diagnostics logged beside the loss (both forms, always).
            "policy_chosen_sum": policy.sum[first], "policy_rejected_sum": policy.sum[second],
            "policy_chosen_mean": policy.mean[first], "policy_rejected_mean": policy.mean[second],
        }
        if ref is not None:
            ref_score = sequence_score(ref, contract)
            out.update({
                "ref_chosen": ref_score[first], "ref_rejected": ref_score[second],
                "ref_chosen_tokens": ref.tokens[first], "ref_rejected_tokens": ref.tokens[second],
                "ref_chosen_sum": ref.sum[first], "ref_rejected_sum": ref.sum[second],
            })
        return out

    def diagnostics(self, available: Mapping[str, Any]) -> dict[str, Tensor]:
        """Per pair: does the policy itself rank chosen first (summed and length-normalised
        log-probs), and does the reference? The ranking accuracy of Chen et al. 2024 (arXiv
        2405.19534), beside the implicit-reward accuracy every peer logs."""
        with torch.no_grad():
            out = {"ranking/accuracy": pair_credit(available["policy_chosen_sum"] - available["policy_rejected_sum"]),
                   "ranking/accuracy_normalised": pair_credit(
                       available["policy_chosen_mean"] - available["policy_rejected_mean"])}
            if "ref_chosen_sum" in available:
                out["ranking/reference_accuracy"] = pair_credit(
                    available["ref_chosen_sum"] - available["ref_rejected_sum"])
        return out
