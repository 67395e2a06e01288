"""The report's inference-time sections: best-of-N by proxies, DeAL against best-of-N, steering,
and the token distribution shift; each says what the testbed shows and what it cannot.

Example: ``sections = decoding_sections(results["decoding"])``
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from alignlab.eval.plots import reward_cost_plot, sweep_plot
from alignlab.eval.report import html_section
from alignlab.testbed.cells import figure_section, pm, val, verdict


def inference_time_section(inference: Mapping[str, Any]) -> str:
    rows = [{"selector": r["selector"], "true reward": pm(r["true_reward_mean"], r["true_reward_stderr"]),
             "vs raw sum (paired)": pm(r["vs_raw_sum_mean"], r["vs_raw_sum_stderr"])} for r in inference["rows"]]
    by_name = {r["selector"]: r for r in inference["rows"]}
    gap = by_name["AND of LSC-transformed proxies"]
    notes = [
        f"Best of {inference['n']} base samples per prompt ({inference['prompts']} prompts), picked by each "
        "selector and judged by the true reward; one sample: "
        f"{pm(inference['first_sample_true_reward'], inference['first_sample_stderr'])}.",
        "Proxies: testbed_proxy (pays for any stated answer and for length) and a blocklist of the world's "
        "harmful words. r_ref(x) is the median of each proxy over "
        f"{inference['reference_samples']} independent base samples of x.",
        "Wang et al. 2024 (arXiv 2402.00742) claim that the logical AND of LSC-transformed rewards, "
        "Σ_k log σ(r_k − r_ref,k(x)), hacks less than their raw sum. Here its true reward is "
        f"{verdict(gap['vs_raw_sum_mean'], gap['vs_raw_sum_stderr'])} compared with the raw sum: "
        f"{pm(gap['vs_raw_sum_mean'], gap['vs_raw_sum_stderr'])}.",
        "Control: the LSC of one reward alone is monotone for a fixed prompt, so it cannot change a best-of-N "
        "pick; " + ("it picked exactly as the raw proxy did." if inference["lsc_alone_picks_as_raw"]
                    else "yet its picks differed from the raw proxy's: a bug to look into."),
        f"{inference['harmful_share']:.0%} of the candidates contain a harmful word, which the raw sum "
        "already charges 1 for; the claim is tested only as far as the two proxies conflict on this world.",
    ]
    return html_section("Inference-time alignment: best-of-N by proxies", {"tables": {"Selectors": rows},
                                                                            "notes": notes})


def decoding_sections(decoding: Mapping[str, Any]) -> list[str]:
    """The sections of the results' ``decoding`` stage that ran, in order."""
    sections = []
    if decoding.get("deal"):
        sections += _deal(decoding["deal"])
    if decoding.get("steering"):
        sections += _steering(decoding["steering"])
    if decoding.get("token_shift"):
        sections.append(_token_shift(decoding["token_shift"]))
    return sections


def _deal(search: Mapping[str, Any]) -> list[str]:
    curves = {
        "best-of-N": [(b["tokens_per_prompt"], b["true_reward_mean"], b["true_reward_stderr"], f"N={b['n']}")
                      for b in search["best_of_n"]],
        "DeAL": [(d["tokens_per_prompt"], d["true_reward_mean"], d["true_reward_stderr"], _setting(d))
                 for d in search["deal"]],
    }
    plot = figure_section("DeAL against best-of-N, per generated token",
                          reward_cost_plot(curves, "generated tokens per prompt"),
                          "true reward against generated tokens per prompt for DeAL and best-of-N",
                          "Both search the base policy by the true reward; DeAL's tokens include its "
                          "lookahead rollouts.")
    rows = [{"DeAL (beam, top-k, lookahead)": _setting(d), "tokens / prompt": val(d["tokens_per_prompt"], 1),
             "forward passes / prompt": val(d["forward_passes_per_prompt"], 1),
             "reward calls / prompt": val(d["reward_calls_per_prompt"], 1),
             "DeAL true reward": pm(d["true_reward_mean"], d["true_reward_stderr"]),
             "best-of-N, same tokens": pm(d["best_of_n_matched_mean"], d["best_of_n_matched_stderr"]),
             "DeAL − best-of-N (paired)": pm(d["difference_mean"], d["difference_stderr"])}
            for d in search["deal"]]
    capped = sum(d["budget_capped_prompts"] for d in search["deal"])
    largest = max(b["n"] for b in search["best_of_n"])
    outcomes = "; ".join(f"{_setting(d)}: DeAL "
                         f"{verdict(d['difference_mean'], d['difference_stderr'], 'ahead', 'behind')}"
                         for d in search["deal"])
    notes = [
        "DeAL (Huang et al. 2024, arXiv 2402.06147): beam search over the policy's top-k next tokens, each "
        "candidate ranked by the reward of a greedy lookahead rollout. Best-of-N at the same tokens: per "
        "prompt, base samples are drawn until their tokens reach what DeAL generated for that prompt, so "
        "best-of-N never has the smaller budget.",
        f"{search['prompts']} prompts, at most {search['max_new_tokens']} new tokens; at matched tokens — "
        f"{outcomes}.",
        "Tokens are not the whole cost: DeAL runs prompt by prompt, a forward pass per step and per lookahead "
        f"token, where batched best-of-N needs {val(search['best_of_n_forward_passes_per_prompt'], 2)} forward "
        "passes per prompt for all its samples; and DeAL calls the reward on partial texts.",
    ]
    if capped:
        notes.append(f"{capped} prompt budgets exceeded all {largest} samples' tokens; best-of-N used all "
                     f"{largest} there.")
    table = html_section("DeAL against best-of-N at matched tokens", {"tables": {"At matched tokens": rows},
                                                                      "notes": notes})
    return [plot, table]


def _setting(run: Mapping[str, Any]) -> str:
    return f"({run['beam_width']}, {run['candidates']}, {run['lookahead']})"


def _steering(steering: Mapping[str, Any]) -> list[str]:
    points, fit = steering["points"], steering["fit"]
    alphas = [p["alpha"] for p in points]
    grid = [min(alphas) + (max(alphas) - min(alphas)) * i / 40 for i in range(41)]
    series = {
        "harmless share (alignment)": (
            [(p["alpha"], p["harmless"], p["harmless_stderr"]) for p in points],
            [(a, fit["alignment_intercept"] + fit["alignment_slope"] * a) for a in grid]),
        "correct share (helpfulness)": (
            [(p["alpha"], p["correct"], p["correct_stderr"]) for p in points],
            [(a, fit["helpfulness_intercept"] - fit["helpfulness_curvature"] * a * a) for a in grid]),
    }
    plot = figure_section("Steering: alignment against helpfulness over α",
                          sweep_plot(series, "steering strength α (unit vector, signed along the read direction)",
                                     "share of samples"),
                          "harmless and correct shares of steered samples against the steering strength",
                          "Dashed: least-squares fits a + b·α (alignment) and h0 − q·α² (helpfulness).")
    rows = [{"α": val(p["alpha"], 2), "harmless share": pm(p["harmless"], p["harmless_stderr"]),
             "correct share (answerable)": pm(p["correct"], p["correct_stderr"])} for p in points]
    fits = [{"fit": "alignment a + b·α", "intercept": val(fit["alignment_intercept"]),
             "coefficient": f"b = {val(fit['alignment_slope'])}", "R²": val(fit["alignment_r2"], 2)},
            {"fit": "helpfulness h0 − q·α²", "intercept": val(fit["helpfulness_intercept"]),
             "coefficient": f"q = {val(fit['helpfulness_curvature'])}", "R²": val(fit["helpfulness_r2"], 2)}]
    if fit["alignment_slope"] > 0:
        direction = "raises the harmless share, as the reading's sign (positive pairs projecting higher) predicts"
    else:
        direction = ("lowers the harmless share: the sign a reading assigns (positive pairs projecting higher) "
                     "need not be the sign that steers toward the positive behaviour, and α < 0 is the aligning "
                     "direction on this model")
    notes = [
        "Wolf et al. 2024 (arXiv 2401.16332): with a representation-engineering vector at strength α, "
        "alignment grows linearly in α and helpfulness falls quadratically, for small α.",
        f"The vector is the first principal component of {steering['contrast_pairs']} contrast pairs (a prompt "
        "with a right answer against it with a harmful sentence), read at the last token, added at decoder "
        f"block {', '.join(map(str, steering['layers']))}; {steering['prompts']} evaluation prompts × "
        f"{steering['samples']} samples per α.",
        f"Here the read direction, added, {direction} (b = {val(fit['alignment_slope'])}). The linear fit has R² {val(fit['alignment_r2'], 2)}; the quadratic loss of helpfulness, "
        f"R² {val(fit['helpfulness_r2'], 2)}, is symmetric in α by the paper's form, which the measured points "
        "need not be.",
    ]
    table = html_section("Steering trade-off", {"tables": {"Sweep": rows, "Fits": fits}, "notes": notes})
    return [plot, table]


def _token_shift(shift: Mapping[str, Any]) -> str:
    shares = shift["shares"]
    summary = [{"positions": shift["positions"], "unshifted (base top-1)": val(shares["unshifted"]),
                f"marginal (base top-2..{shift['k']})": val(shares["marginal"]),
                f"shifted (base rank > {shift['k']})": val(shares["shifted"]),
                "mean KL per token (nats)": val(shift["mean_kl_per_token"])}]
    positions = [{"position": i + 1, **{name: val(v) for name, v in row.items()}}
                 for i, row in enumerate(shift["first_positions"])]
    tokens = [{"token": t["token"], "kind": t["kind"], "shifted positions": t["count"],
               "mean base rank": val(t["mean_base_rank"], 1), "base's top-1 there": t["base_choice"]}
              for t in shift["top_shifted"]]
    kinds = sorted({t["kind"] for t in shift["top_shifted"]})
    notes = [
        f"Lin et al. 2024 (arXiv 2312.01552): at each position of the aligned model's greedy answer, where the "
        f"base ranks the chosen token. {shift['aligned']} against the base on {shift['prompts']} evaluation "
        "prompts.",
        "The paper finds most positions unshifted and the shifted tokens mostly stylistic. On this world the "
        f"shifted tokens are of kind: {', '.join(kinds) or 'none'}; the world's style is its filler, harmful "
        "and abstention words, while answer words carry the content.",
        "URIAL's in-context alignment prompt is not tried on the testbed: its base model, two layers trained "
        "on single chats, does not learn from examples in its context.",
    ]
    return html_section("Token distribution shift (URIAL)",
                        {"tables": {"Positions": summary, "By position in the answer": positions,
                                    "Most shifted tokens": tokens}, "notes": notes})
