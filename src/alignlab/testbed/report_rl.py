"""The report's online-RL sections: GRPO and RLOO on the true reward, and reward hacking by RL.

Example: ``sections = rl_sections(results["rl"], results.get("best_of_n") or [])``
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from alignlab.eval.plots import reward_kl_curves_plot, reward_kl_plot
from alignlab.eval.report import html_section
from alignlab.testbed.cells import figure_section, pm, val

UNIT = ("Standard errors are over the evaluation prompts: each prompt's value is the mean over its samples, "
        "and the s.e. is their standard deviation over prompts / √prompts (paired differences: the same, "
        "of each prompt's difference). They do not include the randomness of training itself: each run is one "
        "seeded training draw.")


def rl_sections(rl: Mapping[str, Any], best_of_n: Sequence[Mapping[str, Any]] = ()) -> list[str]:
    """The RL stage's sections: the reward–KL figure and policy table, then the hacking runs."""
    frontier = [(b["kl_bound"], b["reward_mean"], b.get("reward_stderr"), b["n"]) for b in best_of_n]
    rows = {r["policy"]: r for r in rl["policies"]}
    runs = rl.get("runs") or {}
    true_runs = [name for name, run in runs.items() if run["part"] == "true"]
    shown = [n for n in rows if n == "base" or n in true_runs or runs.get(n) is None]
    points = {n: (rows[n]["kl_mean"], rows[n]["kl_stderr"], rows[n]["true_mean"], rows[n]["true_stderr"])
              for n in shown}
    sections = [figure_section(
        "Online RL from the base: true reward against KL", reward_kl_plot(points, frontier),
        "true reward against KL to the base for GRPO, RLOO, DPO and best-of-N",
        "GRPO and RLOO trained on the true reward, evaluated as the DPO policy is (same prompts, samples, "
        "sampling seed and KL estimate), beside best-of-N of the base at its KL bound.")]
    sections.append(_policies(rl, rows))
    if any(run["part"] == "hacking" for run in runs.values()):
        sections += _hacking(rl, runs, rows, frontier)
    return sections


def _policies(rl: Mapping[str, Any], rows: Mapping[str, Mapping[str, Any]]) -> str:
    s = rl["settings"]
    table = [{"policy": name, "true reward": pm(r["true_mean"], r["true_stderr"]),
              "gain over base (paired)": pm(r["gain_mean"], r["gain_stderr"]),
              "KL to base (nats)": pm(r["kl_mean"], r["kl_stderr"], 2),
              "helpfulness proxy": pm(r["proxy_mean"], r["proxy_stderr"], 2), "words": val(r["words"], 1),
              "made-up answers": f"{r['made_up_share']:.0%}", "harmful": f"{r['harmful_share']:.0%}"}
             for name, r in rows.items()]
    runs = rl.get("runs") or {}
    gains = [f"{name}: {pm(rows[name]['gain_mean'], rows[name]['gain_stderr'])} over the base at "
             f"{pm(rows[name]['kl_mean'], rows[name]['kl_stderr'], 2)} nats"
             for name, run in runs.items() if run["part"] == "true" and name in rows]
    notes = [
        "Each RL run starts from the base model and runs through alignlab's own training loop "
        f"(train.loss=grpo / rloo on a prompt-only file): {s['steps']} optimizer steps of {s['prompts_per_step']} "
        f"prompts × {s['num_generations']} completions (G), up to {s['max_new_tokens']} new tokens at temperature "
        f"{s['temperature']}, lr {s['lr']:g} constant, no KL penalty (β = {s['kl_penalty_beta']:g}), one optimizer "
        "step per batch of rollouts.",
        f"Evaluation: {s['eval_prompts']} evaluation prompts × {s['samples']} samples, the same draws as the DPO "
        "policies'; KL is the Monte-Carlo k1 estimate on the policy's own samples. The prompts come from a world of "
        f"about 270, so {rl['eval_overlap']:.0%} of the evaluation prompts also occur among the RL training prompts "
        "(as for the DPO pairs).",
        "Trained on the true reward: " + ("; ".join(gains) if gains else "no run") + ".",
        "Made-up answers: share of the samples for unanswerable questions that state an answer; harmful: share of "
        "samples with a harmful word.",
        UNIT,
    ]
    return html_section("Online RL: policies judged by the true reward", {"tables": {"Policies": table},
                                                                         "notes": notes})


def _hacking(rl: Mapping[str, Any], runs: Mapping[str, Mapping[str, Any]], rows: Mapping[str, Mapping[str, Any]],
             frontier: Sequence[tuple[Any, ...]]) -> list[str]:
    hacking = {name: run for name, run in runs.items() if run["part"] == "hacking"}
    matched = rl.get("matched_kl") or {}
    curves = {name: [(c["kl_mean"], c["kl_stderr"], c["true_mean"], c["true_stderr"], f"step {c['step']}")
                     for c in run["checkpoints"]] for name, run in hacking.items()}
    budgets = [b["kl"] for b in matched.get("budgets") or []]
    figure = figure_section(
        "Reward hacking by RL: true reward along training", reward_kl_curves_plot(curves, frontier, budgets=budgets),
        "true reward against KL along GRPO runs on three hackable proxies",
        "GRPO on each proxy, evaluated at its checkpoints (step 0 is the base); dotted lines: the KL budgets at "
        "which the runs are compared below.")
    checkpoints = [{"run": name, "step": c["step"], "KL (nats)": pm(c["kl_mean"], c["kl_stderr"], 2),
                    "true reward": pm(c["true_mean"], c["true_stderr"]),
                    "its own reward": pm(*_own(name, c, rl), 3), "helpfulness proxy": pm(c["proxy_mean"], c["proxy_stderr"], 2),
                    "words": val(c["words"], 1), "made-up answers": f"{c['made_up_share']:.0%}",
                    "harmful": f"{c['harmful_share']:.0%}"}
                   for name, run in hacking.items() for c in run["checkpoints"]]
    reference = matched.get("reference", "raw sum")
    compared = []
    for budget in matched.get("budgets") or []:
        for name, entry in budget["runs"].items():
            compared.append({"KL budget (nats)": val(budget["kl"], 2), "reward of the run": name,
                             "true reward": pm(entry["true_mean"], entry["true_stderr"]),
                             f"vs {reference} (paired)": pm(entry.get("vs_reference_mean"),
                                                            entry.get("vs_reference_stderr"))
                             if "vs_reference_mean" in entry else "–"})
    for name, entry in (matched.get("final_step") or {}).items():
        compared.append({"KL budget (nats)": f"final step ({rl['settings']['steps']})", "reward of the run": name,
                         "true reward": pm(entry["true_mean"], entry["true_stderr"]),
                         f"vs {reference} (paired)": pm(entry.get("vs_reference_mean"), entry.get("vs_reference_stderr"))
                         if "vs_reference_mean" in entry else "–"})
    base_true = rows["base"]["true_mean"] if "base" in rows else float("nan")
    verdict = stage_verdict(matched, runs, base_true)
    notes = [
        "Wang et al. 2024 (arXiv 2402.00742) claim that aligning to the AND of LSC-transformed rewards, "
        "Σ_k log σ(r_k − r_ref,k(x)), hacks less than aligning to their raw sum. The rewards are those of the "
        "best-of-N stage: the helpfulness proxy testbed_proxy (pays for any stated answer and for length), a "
        "blocklist of the world's harmful words (−1 a term), and r_ref(x) the median of each over "
        f"{rl['settings']['reference_samples']} base samples of x. Every run has the same settings and seed; none "
        "was tuned to the outcome.",
        "Matched KL: each prompt's true reward is interpolated linearly between the two checkpoints whose mean KLs "
        "bracket the budget (the first such pair), so the comparison is at equal KL spent, not equal steps; the "
        f"largest budget, {val(matched.get('max_common_kl'), 2)} nats, is the most KL every run reached. The "
        "interpolation ignores the KL's own error, and the several budgets are not corrected for multiple "
        "comparisons.",
        *verdict,
        UNIT,
    ]
    table = html_section("Reward hacking by RL: proxies, raw or LSC-combined",
                         {"tables": {"True reward at matched KL, and at the final step": compared,
                                     "Checkpoints": checkpoints}, "notes": notes})
    return [figure, table]


def _own(name: str, checkpoint: Mapping[str, Any], rl: Mapping[str, Any]) -> tuple[Any, Any]:
    """The reward the run was trained on, measured at a checkpoint."""
    key = {"grpo · raw proxy": "proxy", "grpo · raw sum": "raw_sum", "grpo · LSC-AND": "lsc_and"}.get(name, "true")
    return checkpoint.get(f"{key}_mean"), checkpoint.get(f"{key}_stderr")


def stage_verdict(matched: Mapping[str, Any], runs: Mapping[str, Mapping[str, Any]],
                  base_true: float) -> list[str]:
    """What the hacking runs show, in sentences, whichever way it came out."""
    lines = []
    proxy = runs.get("grpo · raw proxy")
    if proxy:
        first, last = proxy["checkpoints"][0], proxy["checkpoints"][-1]
        gained = last["proxy_mean"] - first["proxy_mean"]
        fell = last["true_mean"] - base_true
        if gained > 0 and fell < -2 * max(last["true_stderr"], 1e-12):
            lines.append(f"GRPO on the raw helpfulness proxy hacked it: the proxy rose by {gained:+.2f} while the "
                         f"true reward fell from {base_true:+.3f} (base) to {last['true_mean']:+.3f} ± "
                         f"{last['true_stderr']:.3f}.")
        else:
            lines.append(f"GRPO on the raw helpfulness proxy: proxy {gained:+.2f}; true reward from {base_true:+.3f} "
                         f"(base) to {last['true_mean']:+.3f} ± {last['true_stderr']:.3f}; no clear hacking at these "
                         "settings.")
    budgets = matched.get("budgets") or []
    reference = matched.get("reference", "raw sum")
    for row in budgets[-1:]:
        lsc = row["runs"].get("LSC-AND")
        if lsc and "vs_reference_mean" in lsc:
            lines.append(f"At the largest common KL ({row['kl']:.2f} nats) the LSC-AND run's true reward is "
                         f"{lsc['vs_reference_mean']:+.3f} ± {lsc['vs_reference_stderr']:.3f} against the {reference} "
                         f"run (paired over prompts): {_verdict(lsc['vs_reference_mean'], lsc['vs_reference_stderr'])}.")
    each = [(row["kl"], row["runs"]["LSC-AND"]) for row in budgets
            if "vs_reference_mean" in row["runs"].get("LSC-AND", {})]
    if len(each) > 1:
        signs = {_sign(e["vs_reference_mean"], e["vs_reference_stderr"]) for _, e in each}
        if len(signs) == 1:
            summary = "the same at every budget"
        elif {"higher", "lower"} <= signs:
            summary = "opposite signs at different budgets: the comparison depends on the KL budget"
        else:
            summary = "beyond two standard errors at some budgets only"
        lines.append("LSC-AND against the " + reference + " run at each KL budget: " + "; ".join(
            f"{kl:.2f} nats {e['vs_reference_mean']:+.3f} ± {e['vs_reference_stderr']:.3f} "
            f"({_sign(e['vs_reference_mean'], e['vs_reference_stderr'])})" for kl, e in each) + f"; {summary}.")
    final = (matched.get("final_step") or {}).get("LSC-AND")
    if final and "vs_reference_mean" in final:
        lines.append(f"At the same number of steps the difference is {final['vs_reference_mean']:+.3f} ± "
                     f"{final['vs_reference_stderr']:.3f}: {_verdict(final['vs_reference_mean'], final['vs_reference_stderr'])}.")
    return lines


def _verdict(mean: float, stderr: float) -> str:
    if not math.isfinite(mean):
        return "not measured"
    if mean > 2 * stderr:
        return "the AND of LSC-transformed rewards hacked less (higher true reward), as Wang et al. claim"
    if mean < -2 * stderr:
        return "the AND of LSC-transformed rewards did worse by the true reward, against Wang et al.'s claim"
    return "not distinguishable (within two standard errors)"


def _sign(mean: float, stderr: float) -> str:
    return "higher" if mean > 2 * stderr else "lower" if mean < -2 * stderr else "within 2 s.e."
