"""Paired, reference-based DPO variants: NCA, APO, SPPO (hard), EXO, pairwise BCO, dense DPO.

Example: ``losses, metrics = nca(pc, pr, rc, rr, beta=0.01)`` with each input of shape (B,)

Notation: ρ(y) = log πθ(y|x) − log πref(y|x) from log-probs summed over the completion tokens;
Δ = ρ(y_w) − ρ(y_l), w chosen, l rejected. The sequence-level forms follow the ``loss_type``
options of TRL's ``DPOTrainer`` (``trl/trainer/dpo_trainer.py``, TRL v1.9.0); defaults are the
papers' settings as TRL's paper index (``docs/source/paper_index.md``) records them.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from alignlab.losses.contract import LossOutput, register_loss
from alignlab.losses.dpo import reward_metrics


@register_loss("nca", needs_ref=True, logps="sum", data="paired",
               paper="Chen et al. 2024, Noise Contrastive Alignment of Language Models with "
                     "Explicit Rewards, arXiv 2402.05369",
               equation="§4.1 pairwise NCA (TRL loss_type='nca_pair')")
def nca(
    policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
    *, beta: float = 0.01,
) -> LossOutput:
    """NCA, pairwise (Chen et al. 2024, §4.1; TRL ``nca_pair``), r = β ρ:

    L = −log σ(r_w) − ½ log σ(−r_w) − ½ log σ(−r_l).

    Unlike DPO it acts on each reward, not only on the margin: the chosen reward settles at
    r_w = log 2 instead of drifting down. β = 0.01 is the paper's α (Appendix C). Inputs (B,)
    summed log-probs; returns losses (B,).
    """
    chosen_ratio, rejected_ratio = policy_chosen - ref_chosen, policy_rejected - ref_rejected
    chosen, rejected = beta * chosen_ratio, beta * rejected_ratio
    losses = -F.logsigmoid(chosen) - 0.5 * F.logsigmoid(-chosen) - 0.5 * F.logsigmoid(-rejected)
    return losses, reward_metrics(beta, chosen_ratio, rejected_ratio)


APO_PAPER = ("D'Oosterlinck et al. 2024, Anchored Preference Optimization and Contrastive "
             "Revisions, arXiv 2408.06266")


@register_loss("apo_zero", needs_ref=True, logps="sum", data="paired", paper=APO_PAPER,
               equation="§4 APO-zero (TRL loss_type='apo_zero')")
def apo_zero(
    policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
    *, beta: float = 0.1,
) -> LossOutput:
    """APO-zero (D'Oosterlinck et al. 2024, §4; TRL ``apo_zero``), for y_w better than the model:

    L = (1 − σ(β ρ_w)) + σ(β ρ_l): raise the chosen likelihood, lower the rejected one.
    β = 0.1 (paper §5.2). Inputs (B,) summed log-probs; returns losses (B,).
    """
    chosen_ratio, rejected_ratio = policy_chosen - ref_chosen, policy_rejected - ref_rejected
    losses = (1 - torch.sigmoid(beta * chosen_ratio)) + torch.sigmoid(beta * rejected_ratio)
    return losses, reward_metrics(beta, chosen_ratio, rejected_ratio)


@register_loss("apo_down", needs_ref=True, logps="sum", data="paired", paper=APO_PAPER,
               equation="§4 APO-down (TRL loss_type='apo_down')")
def apo_down(
    policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
    *, beta: float = 0.1,
) -> LossOutput:
    """APO-down (D'Oosterlinck et al. 2024, §4; TRL ``apo_down``), for y_w worse than the model:

    L = σ(β ρ_w) + (1 − σ(β Δ)): lower the chosen likelihood, the rejected one more.
    β = 0.1 (paper §5.2). Inputs (B,) summed log-probs; returns losses (B,).
    """
    chosen_ratio, rejected_ratio = policy_chosen - ref_chosen, policy_rejected - ref_rejected
    margin = chosen_ratio - rejected_ratio
    losses = torch.sigmoid(beta * chosen_ratio) + (1 - torch.sigmoid(beta * margin))
    return losses, reward_metrics(beta, chosen_ratio, rejected_ratio)


@register_loss("sppo_hard", needs_ref=True, logps="sum", data="paired",
               paper="Wu et al. 2024, Self-Play Preference Optimization for Language Model "
                     "Alignment, arXiv 2405.00675",
               equation="Algorithm 1, Eq. 4.7 with P = 1 for y_w, 0 for y_l (TRL 'sppo_hard')")
def sppo_hard(
    policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
    *, beta: float = 1e-3,
) -> LossOutput:
    """SPPO, hard labels (Wu et al. 2024, Eq. 4.7 with P(y_w ≻ y_l) = 1; TRL ``sppo_hard``):

    L = (ρ_w − 1/(2β))² + (ρ_l + 1/(2β))², β = 1/η; ρ is not multiplied by β (as in TRL).

    Squared regression of each log-ratio onto ±η/2. The official code (uclaml/SPPO) halves
    this sum and uses soft P from PairRM; TRL and we do neither. β = 1e-3 is the paper's
    η = 1e3 (official pipeline.sh BETA=0.001); TRL's default β = 0.1 gives targets ±5.
    Inputs (B,) summed log-probs; returns losses (B,).
    """
    if beta <= 0:
        raise ValueError(f"sppo_hard needs beta > 0 (targets are ±1/(2β)), got {beta}")
    chosen_ratio, rejected_ratio = policy_chosen - ref_chosen, policy_rejected - ref_rejected
    target = 0.5 / beta
    losses = (chosen_ratio - target) ** 2 + (rejected_ratio + target) ** 2
    return losses, reward_metrics(beta, chosen_ratio, rejected_ratio)


@register_loss("exo", needs_ref=True, logps="sum", data="paired",
               paper="Ji et al. 2024, Towards Efficient Exact Optimization of Language Model "
                     "Alignment, arXiv 2402.00856",
               equation="Eq. 16 EXO-pref, K = 2 (TRL loss_type='exo_pair')")
def exo(
    policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
    *, beta: float = 0.1, label_smoothing: float = 1e-3,
) -> LossOutput:
    """EXO-pref, K = 2 (Ji et al. 2024, Eq. 16; TRL ``exo_pair``): reverse KL from the model's
    pair distribution q = (σ(βΔ), σ(−βΔ)) to the smoothed label distribution (1 − ε, ε):

    L = σ(βΔ)[log σ(βΔ) − log(1 − ε)] + σ(−βΔ)[log σ(−βΔ) − log ε] ≥ 0,

    zero at βΔ = log((1 − ε)/ε). Needs 0 < ε < 1 (TRL silently turns ε = 0 into 1e-3; we
    raise). β = 0.1 is the paper's β_r, ε = 1e-3 its smoothing. Inputs (B,); returns (B,).
    """
    if not 0 < label_smoothing < 1:
        raise ValueError(f"exo needs 0 < label_smoothing < 1 (log ε and log(1 − ε)), got "
                         f"{label_smoothing}; the paper uses 1e-3")
    chosen_ratio, rejected_ratio = policy_chosen - ref_chosen, policy_rejected - ref_rejected
    z = beta * (chosen_ratio - rejected_ratio)
    losses = (torch.sigmoid(z) * (F.logsigmoid(z) - math.log1p(-label_smoothing))
              + torch.sigmoid(-z) * (F.logsigmoid(-z) - math.log(label_smoothing)))
    return losses, reward_metrics(beta, chosen_ratio, rejected_ratio)


@register_loss("bco_pair", needs_ref=True, logps="sum", data="paired",
               paper="Jung et al. 2024, Binary Classifier Optimization for Large Language Model "
                     "Alignment, arXiv 2404.04656",
               equation="§4 pairwise BCO with reward shift δ (TRL loss_type='bco_pair' is δ = 0)")
def bco_pair(
    policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
    *, beta: float = 0.01, delta: float = 0.0,
) -> LossOutput:
    """Pairwise BCO (Jung et al. 2024, §4): y_w as a positive, y_l as a negative example of a
    binary classifier with logit r = β ρ, shifted by δ:

    L = −log σ(β ρ_w − δ) − log σ(−(β ρ_l − δ)).

    The paper's δ is a running mean of rewards; here it is a fixed number, and the default
    δ = 0 is TRL's ``bco_pair`` exactly. β = 0.01 (paper Appendix C). Inputs (B,); returns (B,).
    """
    chosen_ratio, rejected_ratio = policy_chosen - ref_chosen, policy_rejected - ref_rejected
    chosen, rejected = beta * chosen_ratio - delta, beta * rejected_ratio - delta
    losses = -F.logsigmoid(chosen) - F.logsigmoid(-rejected)
    return losses, reward_metrics(beta, chosen_ratio, rejected_ratio)


def _weighted_score(tokens: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor,
                    average: bool) -> torch.Tensor:
    """Σ_t w_t log p_t over unmasked tokens, or that divided by Σ_t w_t: (B, T) -> (B,)."""
    weights = weights * mask  # (B, T); masked tokens weigh nothing
    score = (tokens * weights).sum(-1)
    # An empty completion has Σ w = 0: its score is 0 rather than 0/0.
    return score / weights.sum(-1).clamp_min(1e-8) if average else score


@register_loss("ddpo", needs_ref=True, logps="token", data="paired",
               paper="Yu et al. 2024 (CVPR), RLHF-V: Towards Trustworthy MLLMs via Behavior "
                     "Alignment from Fine-grained Correctional Human Feedback",
               equation="Eq. 5 (weighted score) in the DPO loss")
def ddpo(
    policy_chosen_tokens: torch.Tensor, policy_rejected_tokens: torch.Tensor,
    ref_chosen_tokens: torch.Tensor, ref_rejected_tokens: torch.Tensor,
    chosen_mask: torch.Tensor, rejected_mask: torch.Tensor,
    chosen_weights: torch.Tensor, rejected_weights: torch.Tensor,
    *, beta: float = 0.5, average: bool = True,
) -> LossOutput:
    """Dense DPO of RLHF-V (Yu et al. 2024, CVPR, Eq. 5): DPO on weighted scores

    s(y) = Σ_t w_t log π(y_t|x, y_<t) / Σ_t w_t  (``average=True``, the paper's Eq. 5), or
    s(y) = Σ_t w_t log π(y_t|x, y_<t)             (``average=False``, the authors' README launch),
    L = −log σ(β [(s_θ(y_w) − s_ref(y_w)) − (s_θ(y_l) − s_ref(y_l))]),

    with the same weights w (1 on unchanged tokens, γ on corrected ones, from
    :func:`dense_token_weights`) for policy and reference. Paper: β = 0.5, γ = 5; the README
    launch of the authors' code (thunlp/Muffin) uses β = 0.1, γ = 1.1, ``average=False``. Token
    inputs (B, T), 0 where the mask is False; masks and weights (B, T); returns losses (B,).
    """
    def ratio(policy: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor, w: torch.Tensor):
        return _weighted_score(policy, mask, w, average) - _weighted_score(ref, mask, w, average)

    chosen_ratio = ratio(policy_chosen_tokens, ref_chosen_tokens, chosen_mask, chosen_weights)
    rejected_ratio = ratio(policy_rejected_tokens, ref_rejected_tokens, rejected_mask,
                           rejected_weights)
    losses = -F.logsigmoid(beta * (chosen_ratio - rejected_ratio))
    return losses, reward_metrics(beta, chosen_ratio, rejected_ratio)


def dense_token_weights(
    chosen_ids: Sequence[int], rejected_ids: Sequence[int], gamma: float, min_match: int = 3,
) -> tuple[list[float], list[float]]:
    """Per-token weights for :func:`ddpo`: γ on corrected tokens, 1 elsewhere (RLHF-V code).

    Diffs the token ids with ``difflib.SequenceMatcher``; matching blocks shorter than
    ``min_match`` tokens count as changed. A gap between kept blocks that is non-empty on
    both sides is a replacement and gets γ on both sides; a pure insertion or deletion keeps
    weight 1. As thunlp/Muffin ``get_diff_ids``, the rejected ids are the matcher's first
    sequence; unlike it, ``autojunk=False``, so frequent tokens of long responses stay
    matchable. Returns (chosen weights, rejected weights), one float per token.
    """
    if min_match < 1:
        raise ValueError(f"dense_token_weights needs min_match >= 1, got {min_match}")
    rejected, chosen = list(rejected_ids), list(chosen_ids)
    rejected_w, chosen_w = [1.0] * len(rejected), [1.0] * len(chosen)
    blocks = difflib.SequenceMatcher(None, rejected, chosen, autojunk=False).get_matching_blocks()
    kept = [b for b in blocks[:-1] if b.size >= min_match] + [blocks[-1]]  # last: (len, len, 0)
    r_end = c_end = 0  # ends of the previous kept block
    for r_start, c_start, size in kept:
        if r_start > r_end and c_start > c_end:  # replaced span on both sides
            rejected_w[r_end:r_start] = [gamma] * (r_start - r_end)
            chosen_w[c_end:c_start] = [gamma] * (c_start - c_end)
        r_end, c_end = r_start + size, c_start + size
    return chosen_w, rejected_w

