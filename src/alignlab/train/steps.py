"""Step functions: one micro-batch of example indices → per-example losses, for each data kind.

Example: ``step = make_step(entry, kwargs, items, policy, reference, pad_id); step([3, 1, 4])``

A step reads the loss's contract (which data, which log-probs, whether a reference is needed),
never its name. Reduction over examples is the loop's business.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from alignlab.data.records import Feedback
from alignlab.errors import ConfigError
from alignlab.logprobs import LogProbs
from alignlab.registry import Entry
from alignlab.train.batching import (
    SequenceBatch,
    collate_completions,
    collate_pairs,
    collate_ranked,
)
from alignlab.train.inputs import completion_tensors, paired_tensors, ranked_tensors, select
from alignlab.train.loop import StepResult

ReferenceFn = Callable[[SequenceBatch, Sequence[str]], LogProbs]


def make_step(entry: Entry, loss_kwargs: Mapping[str, Any], items: Sequence[Any], policy: torch.nn.Module,
              reference: ReferenceFn | None, pad_id: int, state: Any = None) -> Callable[[list[int]], StepResult]:
    """The step for the loss's data kind; ``policy`` maps a SequenceBatch to LogProbs."""
    contract = entry.contract
    if contract["needs_ref"] and reference is None:
        raise ConfigError(f"loss {entry.name!r} needs a reference model; set train.reference")
    device = next(policy.parameters()).device
    kind = contract["data"]
    builders = {"paired": _paired, "unpaired": _unpaired, "sft": _unpaired, "ranked": _ranked,
                "reward": _reward, "judged": _judged}
    if kind not in builders:
        raise ConfigError(f"training on {kind!r} data is not supported by the preference engine yet "
                          f"(loss {entry.name!r}); supported: {sorted(builders)}")

    def step(indices: list[int]) -> StepResult:
        batch_items = [items[i] for i in indices]
        available, batch = builders[kind](contract, batch_items, indices, policy, reference, pad_id, device)
        if state is not None:
            available.update({k: v.to(device) for k, v in state.inputs().items()})
        losses, metrics = entry.obj(**select(contract, available, entry.name), **loss_kwargs)
        if kind == "paired":
            metrics = {**metrics, **ranking_metrics(available)}
        return StepResult(loss_sum=losses.sum(), examples=len(indices), tokens=batch.tokens,
                          metrics={k: _metric_sum(v, len(indices)) for k, v in metrics.items()},
                          loss_metrics=metrics)

    return step


def ranking_metrics(available: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per pair: does the policy itself rank chosen first (summed and length-normalised log-probs),
    and does the reference? Beside the implicit-reward accuracy every peer logs (Chen et al. 2024)."""
    from alignlab.eval.ranking import pair_credit

    with torch.no_grad():
        out = {"ranking/accuracy": pair_credit(available["policy_chosen_sum"] - available["policy_rejected_sum"]),
               "ranking/accuracy_normalised": pair_credit(
                   available["policy_chosen_mean"] - available["policy_rejected_mean"])}
        if "ref_chosen_sum" in available:
            out["ranking/reference_accuracy"] = pair_credit(
                available["ref_chosen_sum"] - available["ref_rejected_sum"])
    return out


def _metric_sum(value: torch.Tensor, n: int) -> float:
    """Per-example metrics are summed; a batch-level scalar counts once per example."""
    value = value.detach().float()
    return float(value.sum()) if value.dim() > 0 else float(value) * n


def _forward(policy: torch.nn.Module, reference: ReferenceFn | None, batch: SequenceBatch,
             keys: Sequence[str]) -> tuple[LogProbs, LogProbs | None]:
    return policy(batch), None if reference is None else reference(batch, keys)


def _paired(contract, items, indices, policy, reference, pad_id, device):
    batch = collate_pairs(items, pad_id).to(device)
    keys = [f"{i}:chosen" for i in indices] + [f"{i}:rejected" for i in indices]
    policy_lp, ref_lp = _forward(policy, reference if contract["needs_ref"] else None, batch, keys)
    return paired_tensors(contract, policy_lp, ref_lp, batch), batch


def _unpaired(contract, items, indices, policy, reference, pad_id, device):
    """Unpaired and SFT data; KTO-style losses also get mismatched (prompt, other completion)."""
    mismatched = "kl_policy" in contract["inputs"]
    if mismatched and len(items) < 2:
        raise ConfigError("KTO's KL estimate pairs each prompt with another example's completion: "
                          "it needs train.batch_size >= 2")
    batch = collate_completions(items, pad_id, mismatched=mismatched).to(device)
    keys = [f"{i}:completion" for i in indices]
    keys += [f"{i}:kl:{indices[j - 1]}" for j, i in enumerate(indices)] if mismatched else []
    policy_lp, ref_lp = _forward(policy, reference if contract["needs_ref"] else None, batch, keys)
    labels = None
    if "labels" in contract["inputs"]:
        if not all(isinstance(item.record, Feedback) for item in items):
            raise ConfigError("this loss needs labelled completions (prompt/completion/label data); "
                              "load pairs with data.kind=unpaired to split them into thumbs up/down")
        labels = torch.tensor([item.record.label for item in items], device=device)
    return completion_tensors(contract, policy_lp, ref_lp, batch, labels, len(items)), batch


def _judged(contract, items, indices, policy, reference, pad_id, device):
    """CUT: the response after its judgment prompt and after the plain prompt, token-aligned."""
    from alignlab.train.judged import judged_tensors

    return judged_tensors(items, policy, pad_id, device)


def _reward(contract, items, indices, policy, reference, pad_id, device):
    """Reward-model training on pairs: ``policy`` maps a batch to rewards (RewardScores)."""
    batch = collate_pairs(items, pad_id).to(device)
    rewards = policy(batch)  # (2B,)
    n = len(items)
    margin = torch.tensor([item.record.margin or 0.0 for item in items], device=device)
    return {"chosen_rewards": rewards[:n], "rejected_rewards": rewards[n:], "margin": margin}, batch


def _ranked(contract, items, indices, policy, reference, pad_id, device):
    batch, present = collate_ranked(items, pad_id)
    batch, present = batch.to(device), present.to(device)
    k = present.shape[1]
    keys = [f"{i}:response{j}" for i in indices for j in range(k)]
    policy_lp, ref_lp = _forward(policy, reference if contract["needs_ref"] else None, batch, keys)
    scores = torch.tensor([_scores(item.record, k) for item in items], device=device, dtype=torch.float32)
    return ranked_tensors(contract, policy_lp, ref_lp, present, scores), batch


def _scores(record: Any, k: int) -> list[float]:
    """Higher is better; ranks (1 best) become negated ranks; missing responses score -inf."""
    values = list(record.scores) if record.scores is not None else [-float(r) for r in record.ranks]
    return values + [-float("inf")] * (k - len(values))
