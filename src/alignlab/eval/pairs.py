"""`alignlab eval`: did a model learn the preferences? Every pair metric, from one scoring pass.

Example: ``results = evaluate_pairs(records, policy_scores, ref_scores, beta=0.1)``

Beside the implicit-reward accuracy that peers log, this reports whether the policy itself ranks
the chosen answer higher (summed and length-normalised), the reference's ranking accuracy, the
idealized accuracy its objective could reach (Chen et al. 2024), the gap, the hardest pairs,
calibration of σ(βΔ), length bias, and a per-source breakdown.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import torch

from alignlab.data.records import PreferencePair
from alignlab.eval.calibration import expected_calibration_error, preference_probabilities
from alignlab.eval.ranking import (
    accuracy_by_source,
    alignment_gap,
    difficulty,
    hardest,
    idealized_ranking_accuracy,
    implicit_reward_accuracy,
    length_bias,
    ranking_accuracy,
)
from alignlab.eval.scoring import PairScores

ASSUMED_ALPHA_NOTE = ("no rater shares in the data: idealized accuracy assumes α = {alpha} for every pair "
                      "(set --alpha)")


def evaluate_pairs(
    pairs: Sequence[PreferencePair],
    policy: PairScores,
    reference: PairScores | None = None,
    *,
    beta: float = 0.1,
    alpha: float | None = None,
    hardest_k: int = 5,
) -> dict[str, Any]:
    """All pair metrics as {"summary": ..., "tables": {...}, "notes": [...], "hardest": [...]}.

    ``pairs`` are the records scored (``policy.kept`` indexes them); ``reference`` must have been
    scored on the same pairs. ``alpha`` is the assumed rater share for data without one.
    """
    kept = [pairs[i] for i in policy.kept]
    if reference is not None and reference.kept != policy.kept:
        raise ValueError("policy and reference were scored on different pairs (over-long ones differ?)")
    summed = ranking_accuracy(policy.chosen_sum, policy.rejected_sum)
    normed = ranking_accuracy(policy.chosen_mean, policy.rejected_mean)
    rows = [{"model": "policy", "pairs": summed.n, "ranking acc (sum)": summed.value,
             "± se": summed.stderr, "ranking acc (mean)": normed.value, "ties": summed.ties}]
    summary: dict[str, Any] = {"pairs": summed.n, "ranking_accuracy": asdict(summed),
                               "ranking_accuracy_normalised": asdict(normed)}
    notes: list[str] = []
    tables: dict[str, list[dict[str, Any]]] = {"ranking accuracy": rows}
    sources = [p.source or "-" for p in kept]
    if len(set(sources)) > 1:
        by_source = accuracy_by_source(policy.chosen_sum, policy.rejected_sum, sources)
        tables["per source (policy, summed)"] = [
            {"source": s, "pairs": a.n, "ranking acc": a.value, "± se": a.stderr} for s, a in by_source.items()]
    bias = length_bias(policy.chosen_tokens, policy.rejected_tokens, policy.chosen_sum - policy.rejected_sum)
    summary["length_bias"] = asdict(bias)
    if reference is not None:
        summary.update(_against_reference(kept, policy, reference, beta, alpha, rows, tables, notes, hardest_k))
    notes.append("ranking accuracy: share of pairs where the model gives the chosen answer the higher "
                 "log-probability (ties count half); Chen et al. 2024 report most preference-tuned models "
                 "below 60%")
    return {"summary": summary, "tables": tables, "notes": notes}


def _against_reference(kept, policy, reference, beta, alpha, rows, tables, notes, hardest_k) -> dict[str, Any]:
    out: dict[str, Any] = {}
    ref_sum = ranking_accuracy(reference.chosen_sum, reference.rejected_sum)
    ref_mean = ranking_accuracy(reference.chosen_mean, reference.rejected_mean)
    rows.append({"model": "reference", "pairs": ref_sum.n, "ranking acc (sum)": ref_sum.value,
                 "± se": ref_sum.stderr, "ranking acc (mean)": ref_mean.value, "ties": ref_sum.ties})
    out["reference_ranking_accuracy"] = asdict(ref_sum)
    reward = implicit_reward_accuracy(policy.chosen_sum, policy.rejected_sum, reference.chosen_sum,
                                      reference.rejected_sum, beta)
    out["implicit_reward"] = asdict(reward)
    shares = [p.rater_share for p in kept]
    if all(s is not None for s in shares):
        rater: Any = torch.tensor(shares, dtype=torch.float64)
        targets: Any = rater
    else:
        rater, targets = (alpha if alpha is not None else 0.9), 1.0
        notes.append(ASSUMED_ALPHA_NOTE.format(alpha=rater))
    ideal = idealized_ranking_accuracy(reference.chosen_sum, reference.rejected_sum, rater, beta)
    observed = ranking_accuracy(policy.chosen_sum, policy.rejected_sum).value
    out["idealized_ranking_accuracy"] = {k: v for k, v in asdict(ideal).items() if k != "optimum_log_ratio"}
    out["alignment_gap"] = alignment_gap(ideal, observed)
    tables[f"what the objective could reach (β = {beta:g})"] = [{
        "implicit-reward acc": reward.accuracy, "mean margin": reward.margin_mean,
        "idealized ranking acc": ideal.value, "observed ranking acc": observed,
        "alignment gap": out["alignment_gap"]}]
    calibration = expected_calibration_error(preference_probabilities(
        policy.chosen_sum, policy.rejected_sum, reference.chosen_sum, reference.rejected_sum, beta), targets)
    out["calibration"] = asdict(calibration)
    tables["calibration of σ(βΔ)"] = [{"ECE": calibration.ece, "Brier": calibration.brier, "pairs": calibration.n}]
    threshold = difficulty(reference.chosen_sum, reference.rejected_sum, beta)
    hard = hardest(threshold, hardest_k)
    tables["hardest pairs (smallest DPO-loss threshold, Chen et al. Thm 4.1)"] = [
        {"pair": int(i), "threshold": float(threshold[i]), "flipped": bool(policy.chosen_sum[i] >= policy.rejected_sum[i]),
         "prompt": _short(kept[int(i)].prompt)} for i in hard]
    out["difficulty_mean"] = float(threshold.mean()) if math.isfinite(float(threshold.mean())) else None
    return out


def _short(text: Any, width: int = 60) -> str:
    flat = " ".join(m["content"] for m in text) if isinstance(text, tuple) else str(text)
    flat = " ".join(flat.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"
