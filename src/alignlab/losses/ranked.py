"""Losses for K ranked responses per prompt: all-pairs of any paired loss, and Plackett–Luce DPO.

Example: ``losses, metrics = plackett_luce(policy, ref, scores, response_mask, beta=0.1)``, (B, K)
"""

from __future__ import annotations

from typing import Any

import torch

from alignlab.errors import ConfigError
from alignlab.losses.contract import LossOutput, check_loss_kwargs, get_loss, register_loss
from alignlab.losses.dpo import DPO_PAPER
from alignlab.registry import Entry

ALL_PAIRS_EQUATION = "InstructGPT Eq. 1 pair averaging, with a registered paired loss per pair"
ALL_PAIRS_PAPER = ("Ouyang et al. 2022, Training language models to follow instructions with "
                   "human feedback (InstructGPT), arXiv 2203.02155: all K-choose-2 comparisons "
                   "of a prompt, averaged")
# Each paired input as (ranked source, side): the chosen side is response i of pair (i, j).
_PAIR_INPUTS = {
    "policy_chosen": ("policy", "chosen"), "policy_rejected": ("policy", "rejected"),
    "ref_chosen": ("ref", "chosen"), "ref_rejected": ("ref", "rejected"),
    "chosen_lengths": ("lengths", "chosen"), "rejected_lengths": ("lengths", "rejected"),
}


@register_loss("all_pairs", needs_ref=True, logps="sum", data="ranked", paper=ALL_PAIRS_PAPER,
               equation=ALL_PAIRS_EQUATION)
def all_pairs(
    policy: torch.Tensor, ref: torch.Tensor, lengths: torch.Tensor,
    scores: torch.Tensor, response_mask: torch.Tensor,
    *, pair_loss: str = "dpo", pair_kwargs: dict | None = None,
) -> LossOutput:
    """All-pairs extension of a reference-based paired loss (default DPO). Inputs (B, K).

    As Ouyang et al. 2022 (InstructGPT, Eq. 1) average their reward loss over all K-choose-2
    comparisons of a prompt, loss_b = mean over valid pairs (i, j) of pair_loss(y_i ≻ y_j),
    returned as losses (B,). A pair is valid when both responses exist and scores[b, i] >
    scores[b, j] (ties carry no preference and are skipped). An example with no valid pair has
    loss 0; metric ``pairs`` counts valid pairs per example, and the pair loss's own per-example
    metrics are averaged over the valid pairs.

    Inputs are summed log-probs; a pair loss on token means (logps="mean", e.g. ipo_mean) gets
    policy/|y| and ref/|y| from ``lengths``. ``pair_kwargs`` are the pair loss's hyperparameters.
    Whether a trainer must compute reference log-probs is a static contract, so reference-free
    pair losses (SimPO, CPO) go through :func:`all_pairs_free`; this one passes ``ref`` to its
    pair loss and refuses a pair loss that does not take it, rather than waste a reference pass.
    """
    return _all_pairs(pair_loss, pair_kwargs, True, policy, ref, lengths, scores, response_mask)


@register_loss("all_pairs_free", needs_ref=False, logps="sum", data="ranked",
               paper=ALL_PAIRS_PAPER, equation=ALL_PAIRS_EQUATION)
def all_pairs_free(
    policy: torch.Tensor, lengths: torch.Tensor,
    scores: torch.Tensor, response_mask: torch.Tensor,
    *, pair_loss: str = "simpo", pair_kwargs: dict | None = None,
) -> LossOutput:
    """:func:`all_pairs` for a reference-free paired loss (default SimPO): loss_b = mean over the
    valid pairs of pair_loss (the pair averaging of Ouyang et al. 2022, Eq. 1), no reference
    model. Inputs (B, K); returns losses (B,).
    """
    return _all_pairs(pair_loss, pair_kwargs, False, policy, None, lengths, scores, response_mask)


def _all_pairs(
    pair_loss: str, pair_kwargs: dict | None, with_ref: bool, policy: torch.Tensor,
    ref: torch.Tensor | None, lengths: torch.Tensor, scores: torch.Tensor,
    response_mask: torch.Tensor,
) -> LossOutput:
    entry = _pair_entry(pair_loss, pair_kwargs or {}, with_ref)
    present = response_mask.bool()
    batch, k = policy.shape
    # Every ordered (i, j) at once, flattened to a batch of B·K² pairs; pair losses are elementwise.
    grid = torch.arange(k, device=policy.device)
    i, j = (g.reshape(-1) for g in torch.meshgrid(grid, grid, indexing="ij"))  # (K²,)
    valid = present[:, i] & present[:, j] & (scores[:, i] > scores[:, j])  # (B, K²); i = j never
    # Absent responses get finite placeholders so they cannot leak NaN into the gradient;
    # a present empty response counts as one token when dividing.
    lengths = torch.where(present, lengths, 1).clamp(min=1)
    sources = {"policy": torch.where(present, policy, 0)}
    if with_ref:
        sources["ref"] = torch.where(present, ref, 0)
    if entry.contract.logps == "mean":  # per-token mean A(y) = S(y)/|y| of the summed S(y)
        sources = {name: value / lengths for name, value in sources.items()}
    sources["lengths"] = lengths
    columns, inputs = {"chosen": i, "rejected": j}, {}
    for name in entry.contract.inputs:
        source, side = _PAIR_INPUTS[name]
        inputs[name] = sources[source][:, columns[side]].reshape(-1)  # (B·K²,)
    losses, metrics = entry.obj(**inputs, **(pair_kwargs or {}))
    pairs = valid.sum(-1)  # (B,)
    out = {"pairs": pairs.to(losses.dtype)}
    for name, value in metrics.items():
        # Per-pair metrics only: a batch scalar of the pair loss would mix in invalid pairs.
        if value.numel() == losses.numel():
            out[name] = _mean_over(value.reshape(batch, -1).detach(), valid, pairs)
    return _mean_over(losses.reshape(batch, -1), valid, pairs), out


def _mean_over(values: torch.Tensor, valid: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Mean of (B, P) values over the valid entries of each row, 0 for a row with none."""
    return torch.where(valid, values, 0).sum(-1) / counts.clamp(min=1)


def _pair_entry(name: str, kwargs: dict[str, Any], with_ref: bool) -> Entry:
    """The registered paired loss ``name``, checked against what the all-pairs loss can feed it."""
    entry = get_loss(name)
    contract, caller = entry.contract, "all_pairs" if with_ref else "all_pairs_free"
    if contract.data != "paired" or contract.logps not in ("sum", "mean"):
        raise ConfigError(f"{caller} needs a paired loss on sequence log-probs (logps sum or "
                          f"mean); {name!r} has data={contract.data!r}, "
                          f"logps={contract.logps!r}")
    if contract.needs_ref != with_ref:
        other = "all_pairs_free" if with_ref else "all_pairs"
        kind = "is reference-free" if with_ref else "needs a reference model"
        raise ConfigError(f"pair loss {name!r} {kind}: use loss {other!r} instead of {caller!r}")
    unknown = set(contract.inputs) - _PAIR_INPUTS.keys()
    if unknown or contract.state is not None:
        raise ConfigError(f"{caller} cannot supply pair loss {name!r}: it needs "
                          f"{sorted(unknown) or 'a loss state'}, beyond the ranked inputs")
    check_loss_kwargs(name, kwargs)
    return entry


@register_loss("plackett_luce", needs_ref=True, logps="sum", data="ranked", paper=DPO_PAPER,
               equation="Appendix A.3, Eq. 18 (DPO under the Plackett–Luce model)")
def plackett_luce(
    policy: torch.Tensor, ref: torch.Tensor, scores: torch.Tensor, response_mask: torch.Tensor,
    *, beta: float = 0.1,
) -> LossOutput:
    """Listwise DPO (Rafailov et al. 2023, Appendix A.3, Eq. 18). Inputs (B, K); returns (B,).

    s_k = β (policy_k − ref_k); τ orders the present responses by score, descending;
    L = −Σ_{k=1..K'} log [ exp(s_τ(k)) / Σ_{j ≥ k} exp(s_τ(j)) ] over the K' present responses.
    K = 2 is DPO exactly. Tied scores keep their input order (stable sort), so a tie is treated as
    a strict preference for the response listed first (all_pairs skips ties instead). The loss is
    invariant to adding a constant to every s. Metric ``rewards/top1_accuracy``: 1 where the
    top-scored response also has the highest implicit reward s.
    """
    present = response_mask.bool()
    reward = beta * (torch.where(present, policy, 0) - torch.where(present, ref, 0))  # (B, K)
    # Absent responses sort last: their key is −inf, below any score.
    key = torch.where(present, scores, float("-inf"))
    order = torch.sort(key, dim=-1, descending=True, stable=True).indices
    s, kept = reward.gather(-1, order), present.gather(-1, order)  # (B, K) in τ order
    k = s.shape[-1]
    later = torch.ones(k, k, dtype=torch.bool, device=s.device).triu()  # later[k, j] = j ≥ k
    # A finite floor instead of −inf keeps logsumexp's gradient finite when a row is all absent.
    floor = torch.finfo(s.dtype).min
    pool = torch.where(later & kept[:, None, :], s[:, None, :], floor)  # (B, K, K)
    terms = torch.where(kept, s - torch.logsumexp(pool, dim=-1), 0)
    best = reward.masked_fill(~present, floor).argmax(-1)
    top1 = (best == order[:, 0]).to(reward.dtype)
    return -terms.sum(-1), {"rewards/top1_accuracy": top1.detach(),
                            "rewards/best_scored": s[:, 0].detach()}
