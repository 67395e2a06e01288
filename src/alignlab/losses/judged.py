"""Losses for responses with natural-language judgments: CUT (contrastive unlikelihood training).

Example: ``losses, metrics = cut(policy_tokens, misalign_tokens, mask, negative)``, tokens (B, T)
"""

from __future__ import annotations

import math

import torch

from alignlab.losses.contract import LossOutput, register_loss


@register_loss("cut", needs_ref=False, logps="token", data="judged",
               paper="Xu et al. 2023, Reasons to Reject? Aligning Language Models with Judgments, "
                     "arXiv 2312.14591",
               equation="L = (L_MLE + L_UL)/2 (code: wwxu21/CUT, modeling_llama_unlikelihood.py)")
def cut(
    policy_tokens: torch.Tensor, misalign_tokens: torch.Tensor,
    mask: torch.Tensor, negative: torch.Tensor,
    *, threshold: float = 1.1, weight_unlike: float = 0.1,
) -> LossOutput:
    """CUT (Xu et al. 2023). Inputs (B, T) per-token log-probs of the same response tokens:
    ``policy_tokens`` log p^A in the A context (instruction + judgment, "Align-N", for negatives;
    the plain template for positives), ``misalign_tokens`` log p^B in the instruction-only
    "Misalign" context (ignored for positives); ``mask`` (B, T); ``negative`` (B,) bool.

    For each token t of a negative example, with ratio_t = p^A_t / p^B_t (no gradient):
        ℓ_t = −α · log(1 − p^B_t)   if ratio_t > λ   (unlikelihood: the judgment exposed the token)
        ℓ_t = −log p^B_t            otherwise         (MLE in the misalign context)
    mle_i = token-mean of −log p^A over example i; ul_i = token-mean of ℓ_t over example i;
    loss_i = (mle_i + ul_i)/2 for a negative, mle_i for a positive. Returns losses (B,).

    The paper's code instead pools over the batch: L = (L_MLE + L_UL)/2 with L_MLE the token-mean
    NLL over the A-tokens of every example and L_UL the token-mean ℓ over all negatives' tokens
    (L = L_MLE when the batch has no negative). The trainer's mean of these per-example losses
    equals that pooled value when (a) the batch holds one example, which is the authors' README
    setting (micro-batch 1 with gradient accumulation, so their effective objective is this
    per-example form), or (b) all examples have the same token count and are all negative or all
    positive. Otherwise pooling weights examples by length and halves positives' MLE in a batch
    that contains a negative; per-example keeps each example's weight independent of its batch.

    λ = ``threshold`` (1.1), α = ``weight_unlike`` (0.1) are the code's defaults; the README uses
    λ = 1.1, α = 1 for online alignment and λ = 1.2, α = 0.5 offline (Shepherd). 1 − p^B is taken
    as −expm1(log p^B), exact near p^B = 1; where it is exactly 0 the code's guard adds 1e-5.
    An example without tokens has loss 0. Metrics: ``nll`` (mle_i), ``unlikelihood`` (ul_i, 0
    for positives), ``unlikely_fraction`` (share of a negative's tokens above λ).
    """
    if threshold <= 0:
        raise ValueError(f"cut needs threshold > 0 (a probability ratio), got {threshold}")
    mask, negative = mask.bool(), negative.bool()
    scored = mask & negative[:, None]  # (B, T) tokens that get the misalign-context term
    count = mask.sum(-1).clamp(min=1)  # (B,); an empty completion gives 0/1 = 0
    mle = torch.where(mask, -policy_tokens, 0).sum(-1) / count
    # Unused positions become log p = 0 (finite) so they cannot leak NaN into the gradient;
    # clamp(max=0) keeps 1 − p^B ≥ 0 when rounding pushes a log-prob above 0.
    log_p = torch.where(scored, misalign_tokens, 0).clamp(max=0)
    unlikely = (policy_tokens - log_p).detach() > math.log(threshold)  # (B, T): ratio > λ
    one_minus_p = -torch.expm1(log_p)
    # The authors' guard: add 1e-5 where 1 − p is exactly 0, keeping the gradient (no masked_fill).
    one_minus_p = one_minus_p + (one_minus_p == 0).to(one_minus_p.dtype) * 1e-5
    per_token = torch.where(unlikely, -weight_unlike * torch.log(one_minus_p), -log_p)
    ul = torch.where(scored, per_token, 0).sum(-1) / count  # (B,), 0 for positives
    losses = torch.where(negative, (mle + ul) / 2, mle)
    fraction = (unlikely & scored).sum(-1).to(mle.dtype) / count
    return losses, {"nll": mle.detach(), "unlikelihood": ul.detach(), "unlikely_fraction": fraction}
