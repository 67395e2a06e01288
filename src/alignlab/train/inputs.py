"""Name the tensors of a forward pass the way loss contracts ask for them.

Example: ``inputs = loss_inputs(entry.contract, policy_lp, ref_lp, batch, layout="paired")``

The trainer never knows a loss by name: it offers every tensor this batch layout can give,
under the names of ``alignlab.losses.contract.INPUTS``, and passes the ones the loss declares.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from alignlab.errors import ConfigError
from alignlab.logprobs import LogProbs
from alignlab.train.batching import SequenceBatch


def _pick(lp: LogProbs, logps: str) -> Tensor:
    """The sequence score the contract asks for; "token" losses read ``tokens`` instead."""
    return lp.mean if logps == "mean" else lp.sum


def paired_tensors(contract: Mapping[str, Any], policy: LogProbs, ref: LogProbs | None,
                   batch: SequenceBatch) -> dict[str, Tensor]:
    """2B sequences: chosen first, then rejected (``collate_pairs``)."""
    n = batch.input_ids.shape[0] // 2
    first, second = slice(0, n), slice(n, 2 * n)
    weights = batch.token_weights if batch.token_weights is not None else torch.ones_like(policy.tokens)
    out = {
        "policy_chosen": _pick(policy, contract["logps"])[first],
        "policy_rejected": _pick(policy, contract["logps"])[second],
        "chosen_lengths": policy.counts[first], "rejected_lengths": policy.counts[second],
        "policy_chosen_tokens": policy.tokens[first], "policy_rejected_tokens": policy.tokens[second],
        "chosen_mask": batch.completion_mask[first], "rejected_mask": batch.completion_mask[second],
        "chosen_weights": weights[first], "rejected_weights": weights[second],
        # Not loss inputs: the ranking diagnostics logged beside the loss (both forms, always).
        "policy_chosen_sum": policy.sum[first], "policy_rejected_sum": policy.sum[second],
        "policy_chosen_mean": policy.mean[first], "policy_rejected_mean": policy.mean[second],
    }
    if ref is not None:
        out.update({"ref_chosen_sum": ref.sum[first], "ref_rejected_sum": ref.sum[second]})
        out.update({
            "ref_chosen": _pick(ref, contract["logps"])[first],
            "ref_rejected": _pick(ref, contract["logps"])[second],
            "ref_chosen_tokens": ref.tokens[first], "ref_rejected_tokens": ref.tokens[second],
        })
    return out


def completion_tensors(contract: Mapping[str, Any], policy: LogProbs, ref: LogProbs | None,
                       batch: SequenceBatch, labels: Tensor | None, n: int) -> dict[str, Tensor]:
    """B sequences (SFT, unpaired), then B mismatched ones when KTO's KL estimate is needed."""
    score = _pick(policy, contract["logps"])
    main = slice(0, n)
    out = {"policy": score[main], "lengths": policy.counts[main], "policy_tokens": policy.tokens[main],
           "mask": batch.completion_mask[main], "example_weights": torch.ones_like(score[main])}
    if labels is not None:
        out["labels"] = labels
    if score.shape[0] > n:
        out["kl_policy"] = score[n:]
    if ref is not None:
        ref_score = _pick(ref, contract["logps"])
        out["ref"] = ref_score[main]
        if ref_score.shape[0] > n:
            out["kl_ref"] = ref_score[n:]
    return out


def ranked_tensors(contract: Mapping[str, Any], policy: LogProbs, ref: LogProbs | None,
                   present: Tensor, scores: Tensor) -> dict[str, Tensor]:
    """B·K sequences in (example, response) order, reshaped to (B, K)."""
    shape = present.shape
    out = {"policy": _pick(policy, contract["logps"]).view(shape), "lengths": policy.counts.view(shape),
           "scores": scores, "response_mask": present}
    if ref is not None:
        out["ref"] = _pick(ref, contract["logps"]).view(shape)
    return out


def select(contract: Mapping[str, Any], available: Mapping[str, Tensor], name: str) -> dict[str, Tensor]:
    """Exactly the inputs the loss declares; one the batch cannot give is a clear error."""
    missing = [i for i in contract["inputs"] if i not in available]
    if missing:
        raise ConfigError(
            f"loss {name!r} needs {missing}, which {contract['data']} training does not provide; "
            "choose a loss whose contract matches the data (see `alignlab losses list`)"
        )
    return {i: available[i] for i in contract["inputs"]}
