"""`alignlab demo`: the testbed experiment with its terminal tables and its HTML report.

Example: ``run_testbed_demo(Console(), out="runs/demo", steps=60)``;
``run_testbed_demo(Console(), stages=("rl",))`` runs the base policy and the online-RL stage only
"""

from __future__ import annotations

from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from alignlab.testbed.experiment import OBJECTIVES, ExperimentSettings, run_experiment
from alignlab.testbed.logic import LogicSettings, logic_demo, print_logic
from alignlab.testbed.report import write_report
from alignlab.testbed.rl import RLSettings, rl_demo

STAGES = ("default", "rl", "logic")
"""default: the experiment (base, pairs, objectives, best-of-N, inference-time and decoding stages);
rl: online RL from the base (GRPO, RLOO, reward hacking), reusing a default run's base if there;
logic: losses derived from formulas against DPO over several training seeds (not in the default demo)."""


def run_testbed_demo(console: Console, *, out: str | Path = "runs/demo", steps: int = 120,
                     model_size: str = "tiny", objectives: tuple[str, ...] = ("dpo", "ln_dpo", "kto"),
                     seed: int = 0, stages: tuple[str, ...] = ("default",), rl: RLSettings | None = None,
                     **overrides) -> int:
    unknown = [o for o in objectives if o not in OBJECTIVES]
    if unknown:
        raise ValueError(f"unknown objectives {unknown}; choose from {sorted(OBJECTIVES)}")
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        raise ValueError(f"unknown stages {unknown or list(stages)}; choose from {list(STAGES)}")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # weight-loading bars of a 100 kB model are noise here
    settings = ExperimentSettings(steps=steps, model_size=model_size, objectives=tuple(objectives), seed=seed,
                                  **overrides)
    results = run_experiment(settings, out, console) if "default" in stages else None
    if "rl" in stages:
        results = rl_demo(settings, rl or RLSettings(), out, console, results)
    if "logic" in stages:
        results = logic_demo(settings, LogicSettings(), out, console, results)
    print_summary(results, console)
    print_logic(results.get("logic"), console)
    console.print(f"report: {write_report(out)}   results: {Path(out) / 'results.json'}")
    return 0


def print_summary(results: dict, console: Console) -> None:
    if "pairs" not in results.get("timing_seconds", {}):  # an RL-only run: no objectives, pairs or decoding
        _print_rl(results.get("rl") or {}, console)
        return
    policies = results["policies"]
    table = Table("policy", "true reward", "KL to base (nats)", "win rate vs base", "words",
                  "ranking acc", "idealized acc", title="policies, judged by the true reward",
                  title_justify="left")
    for name, p in policies.items():
        table.add_row(name, f"{p['reward_mean']:+.3f} ± {p['reward_stderr']:.3f}",
                      f"{p['kl']:.2f} ± {p['kl_stderr']:.2f}", f"{p['win_rate']:.1%}",
                      f"{p['length_mean']:.1f}", f"{p['ranking_accuracy']:.1%}",
                      f"{p['idealized_ranking_accuracy']:.1%}")
    console.print(table)
    bon = Table("N", "true reward", "KL (empirical)", "KL bound log N − (N−1)/N",
                title="best-of-N of the base (the frontier)", title_justify="left")
    for row in results["best_of_n"]:
        bon.add_row(str(row["n"]), f"{row['reward_mean']:+.3f} ± {row['reward_stderr']:.3f}",
                    f"{max(row['kl_estimate'], 0.0):.2f}", f"{row['kl_bound']:.2f}")
    console.print(bon)
    inference = results.get("inference_time")
    if inference:
        picks = Table("selector", "true reward", "vs raw sum (paired)",
                      title=f"best-of-{inference['n']} of the base, picked by proxies, judged by the true reward",
                      title_justify="left")
        for row in inference["rows"]:
            picks.add_row(row["selector"], f"{row['true_reward_mean']:+.3f} ± {row['true_reward_stderr']:.3f}",
                          f"{row['vs_raw_sum_mean']:+.3f} ± {row['vs_raw_sum_stderr']:.3f}")
        console.print(picks)
    _print_decoding(results.get("decoding") or {}, console)
    base = policies["base"]
    for name, p in policies.items():
        if name == "base":
            continue
        gain = p["reward_mean"] - base["reward_mean"]
        se = float(torch.tensor([p["reward_stderr"], base["reward_stderr"]]).pow(2).sum().sqrt())
        console.print(f"{name}: true reward {gain:+.3f} ± {se:.3f} over the base, at KL {p['kl']:.2f} nats")
    _print_rl(results.get("rl") or {}, console)


def _print_rl(rl: dict, console: Console) -> None:
    if not rl:
        return
    from alignlab.testbed.report_rl import stage_verdict

    s = rl["settings"]
    table = Table("policy", "true reward", "gain over base (paired)", "KL to base (nats)", "proxy", "words",
                  "made-up answers", title=f"online RL from the base: {s['steps']} steps × {s['prompts_per_step']} "
                  f"prompts × G={s['num_generations']}, lr {s['lr']:g}, β=0 (s.e. over prompts)", title_justify="left")
    for r in rl["policies"]:
        table.add_row(r["policy"], f"{r['true_mean']:+.3f} ± {r['true_stderr']:.3f}",
                      f"{r['gain_mean']:+.3f} ± {r['gain_stderr']:.3f}", f"{r['kl_mean']:.2f} ± {r['kl_stderr']:.2f}",
                      f"{r['proxy_mean']:.2f}", f"{r['words']:.1f}", f"{r['made_up_share']:.0%}")
    console.print(table)
    matched = rl.get("matched_kl") or {}
    if matched.get("budgets"):
        reference = matched["reference"]
        hacking = Table("KL budget (nats)", "reward of the run", "true reward", f"vs {reference} (paired)",
                        title="GRPO on hackable proxies: true reward at matched KL (interpolated between checkpoints)",
                        title_justify="left")
        rows = [(f"{b['kl']:.2f}", b["runs"]) for b in matched["budgets"]]
        rows.append((f"final step ({s['steps']})", matched["final_step"]))
        for label, runs in rows:
            for name, e in runs.items():
                versus = f"{e['vs_reference_mean']:+.3f} ± {e['vs_reference_stderr']:.3f}" \
                    if "vs_reference_mean" in e else "–"
                hacking.add_row(label, name, f"{e['true_mean']:+.3f} ± {e['true_stderr']:.3f}", versus)
        console.print(hacking)
        base = next((r["true_mean"] for r in rl["policies"] if r["policy"] == "base"), float("nan"))
        for line in stage_verdict(matched, rl["runs"], base):
            console.print(line)


def _print_decoding(decoding: dict, console: Console) -> None:
    if decoding.get("deal"):
        table = Table("DeAL (beam, top-k, lookahead)", "tokens/prompt", "DeAL", "best-of-N, same tokens",
                      "difference (paired)", title="DeAL against best-of-N at matched generated tokens",
                      title_justify="left")
        for d in decoding["deal"]["deal"]:
            table.add_row(f"({d['beam_width']}, {d['candidates']}, {d['lookahead']})", f"{d['tokens_per_prompt']:.1f}",
                          f"{d['true_reward_mean']:+.3f} ± {d['true_reward_stderr']:.3f}",
                          f"{d['best_of_n_matched_mean']:+.3f} ± {d['best_of_n_matched_stderr']:.3f}",
                          f"{d['difference_mean']:+.3f} ± {d['difference_stderr']:.3f}")
        console.print(table)
    if decoding.get("steering"):
        fit = decoding["steering"]["fit"]
        console.print(f"steering: harmless share {fit['alignment_intercept']:.3f} {fit['alignment_slope']:+.3f}·α "
                      f"(R² {fit['alignment_r2']:.2f}); correct share {fit['helpfulness_intercept']:.3f} "
                      f"− {fit['helpfulness_curvature']:.3f}·α² (R² {fit['helpfulness_r2']:.2f})")
    if decoding.get("token_shift"):
        shift = decoding["token_shift"]
        shares = ", ".join(f"{name} {share:.1%}" for name, share in shift["shares"].items())
        console.print(f"token distribution shift of {shift['aligned']} against the base: {shares} "
                      f"of {shift['positions']} positions")
