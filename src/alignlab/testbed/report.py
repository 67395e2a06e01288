"""The testbed experiment's HTML report: tables, reward–KL plot, curves, lengths and samples.

Example: ``write_report("runs/demo")`` reads runs/demo/results.json, writes runs/demo/report.html

One self-contained file (inline CSS, plots as base64 PNGs, no scripts), built from the
``results.json`` that :func:`alignlab.testbed.experiment.run_experiment` writes.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from alignlab.eval.plots import length_histogram, reward_kl_plot, training_curves_plot
from alignlab.eval.report import html_section, write_html
from alignlab.testbed.cells import figure_section, num, pm, val
from alignlab.testbed.logic import logic_section
from alignlab.testbed.report_decoding import decoding_sections, inference_time_section
from alignlab.testbed.report_rl import rl_sections

TITLE = "alignlab testbed report"
INTRO = (
    "The testbed is a synthetic world whose true reward is known for every response: a small "
    "vocabulary, a grammar of prompts (questions, some unanswerable) and responses whose "
    "attributes (correctness, length, harmful words, hedging) define the reward. Simulated raters "
    "label pairs of base-policy samples by Bradley–Terry on that reward, a tiny transformer "
    "trained from scratch is the base policy, and each objective is aligned from it on those "
    "pairs. Because the true reward is known, every policy is judged by what it actually gained, "
    "and for how much KL to the base."
)
CELL = 'style="text-align:left;vertical-align:top"'


class ReportError(ValueError):
    """A run directory without a usable results.json."""


def write_report(run_dir: str | Path) -> Path:
    """Read ``run_dir/results.json``; write and return ``run_dir/report.html``."""
    run_dir = Path(run_dir)
    source = run_dir / "results.json"
    if not source.is_file():
        raise FileNotFoundError(f"no results.json in {run_dir}: run `alignlab demo --out "
                                f"{run_dir}` first, or pass the directory it wrote")
    try:
        results = json.loads(source.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ReportError(f"{source} is not valid JSON ({error}); rerun the experiment") from error
    if not isinstance(results, dict) or not results.get("policies"):
        raise ReportError(f"{source} has no 'policies': it is not a testbed results file")
    return write_html(report_sections(results), run_dir / "report.html", title=TITLE)


def report_sections(results: Mapping[str, Any]) -> list[str]:
    """The report's HTML sections, in order, from a results.json mapping."""
    policies = _base_first(results["policies"])
    best_of_n = results.get("best_of_n") or []
    sections = [_intro(policies, results.get("settings", {})), _summary(policies),
                _reward_kl(policies, best_of_n)]
    if best_of_n:
        sections.append(_best_of_n(best_of_n))
    if results.get("inference_time"):
        sections.append(inference_time_section(results["inference_time"]))
    sections += decoding_sections(results.get("decoding") or {})
    if results.get("rl"):
        sections += rl_sections(results["rl"], best_of_n)
    if results.get("logic"):
        sections.append(logic_section(results["logic"]))
    if results.get("training_curves"):
        curves = {name: [(p["step"], p["loss"]) for p in points]
                  for name, points in results["training_curves"].items()}
        sections.append(figure_section("Training curves", training_curves_plot(curves),
                                      "training loss against optimizer step",
                                      "base: supervised next-token loss; the others: their "
                                      "alignment objective on the labelled pairs, so scales "
                                      "differ."))
    lengths = {name: p.get("lengths") or [] for name, p in policies.items()}
    if any(lengths.values()):
        sections.append(figure_section("Length distributions", length_histogram(lengths),
                                      "histogram of response lengths per policy",
                                      "Length in words of every evaluation sample."))
    if results.get("samples"):
        sections.append(_samples(results["samples"]))
    sections.append(_settings(results.get("settings", {}), results.get("timing_seconds", {})))
    return sections


def _intro(policies: Mapping[str, Mapping[str, Any]], settings: Mapping[str, Any]) -> str:
    parts = [f"<section><p>{html.escape(INTRO)}</p>"]
    base = policies.get("base")
    aligned = {k: v for k, v in policies.items() if k != "base"}
    if base and aligned:
        name, best = max(aligned.items(), key=lambda kv: num(kv[1].get("reward_mean")))
        margin = num(best.get("reward_mean")) - num(base.get("reward_mean"))
        parts.append(f"<p><b>{html.escape(name)}</b> gained the most true reward: {margin:+.3f} "
                     f"over the base, at a KL of {num(best.get('kl')):.2f} nats.</p>")
    if settings:
        shown = {k: html.escape(str(settings.get(k, "?")))
                 for k in ("eval_prompts", "samples", "model_size", "steps", "seed")}
        parts.append(f'<p class="note">{shown["eval_prompts"]} evaluation prompts × '
                     f'{shown["samples"]} samples per policy; model size {shown["model_size"]}; '
                     f'{shown["steps"]} alignment steps; seed {shown["seed"]}.</p>')
    parts.append("</section>")
    return "\n".join(parts)


def _summary(policies: Mapping[str, Mapping[str, Any]]) -> str:
    # Two tables rather than one wide one: nine columns overflow the page width.
    outcomes = [{"policy": name,
                 "true reward": pm(p.get("reward_mean"), p.get("reward_stderr")),
                 "KL to base (nats)": pm(p.get("kl"), p.get("kl_stderr"), 2),
                 "win rate vs base": pm(p.get("win_rate"), p.get("win_rate_stderr")),
                 "length (words)": val(p.get("length_mean"), 2)}
                for name, p in policies.items()]
    ranking = [{"policy": name,
                "ranking acc. (sum)": val(p.get("ranking_accuracy")),
                "ranking acc. (normalised)": val(p.get("ranking_accuracy_normalised")),
                "idealized ranking acc.": val(p.get("idealized_ranking_accuracy")),
                "implicit-reward acc.": val(p.get("implicit_reward_accuracy"))}
               for name, p in policies.items()]
    notes = ["Values are mean ± standard error. True reward and length are over the evaluation "
             "samples; KL is the Monte-Carlo estimate on the policy's own samples; the win rate "
             "compares true rewards with the base's samples (ties count half).",
             "Ranking accuracies are on the held-out pairs: the share the policy itself ranks the "
             "raters' choice higher (summed or length-normalised log-probability). The idealized "
             "accuracy is what the exact optimum from the base could reach given the rater shares. "
             "The base's implicit reward is zero against itself, so its accuracy is chance (0.5)."]
    tables = {"True reward, KL and length": outcomes, "Ranking on held-out pairs": ranking}
    return html_section("Policies against the base", {"tables": tables, "notes": notes})


def _reward_kl(policies: Mapping[str, Mapping[str, Any]],
               best_of_n: Sequence[Mapping[str, Any]]) -> str:
    points = {name: (p.get("kl"), p.get("kl_stderr"), p.get("reward_mean"), p.get("reward_stderr"))
              for name, p in policies.items()}
    frontier = [(b["kl_bound"], b["reward_mean"], b.get("reward_stderr"), b["n"])
                for b in best_of_n]
    return figure_section("True reward against KL", reward_kl_plot(points, frontier),
                         "true reward against KL to the base for each policy and best-of-N",
                         "Each method at its measured KL; best-of-N of base samples selected by "
                         "the true reward, at its analytic KL bound log N − (N−1)/N: a method "
                         "below the dashed curve buys less reward per nat than simply sampling N "
                         "and picking.")


def _best_of_n(best_of_n: Sequence[Mapping[str, Any]]) -> str:
    rows = [{"N": b["n"], "true reward": pm(b.get("reward_mean"), b.get("reward_stderr")),
             "KL bound (nats)": val(b.get("kl_bound"))} for b in best_of_n]
    notes = ["Best of N base samples by the true reward; KL bound log N − (N−1)/N (exact for "
             "continuous rewards without ties, an upper bound otherwise)."]
    return html_section("Best-of-N frontier", {"tables": {"Best-of-N": rows}, "notes": notes})




def _samples(samples: Sequence[Mapping[str, Any]]) -> str:
    columns = list(dict.fromkeys(key for row in samples for key in row))
    head = "".join(f"<th {CELL}>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td {CELL}>{_text(row.get(c))}</td>" for c in columns)
                   + "</tr>" for row in samples)
    return ("<section><h2>Sample generations, before and after</h2>"
            '<p class="note">The first sample of each policy for the first evaluation prompts.</p>'
            f"<table><tr>{head}</tr>{body}</table></section>")


def _settings(settings: Mapping[str, Any], timing: Mapping[str, Any]) -> str:
    tables = {"Settings": [{"setting": k, "value": _setting(v)} for k, v in settings.items()],
              "Timing": [{"stage": k, "seconds": val(v, 1)} for k, v in timing.items()]}
    return html_section("Settings and timing", {"tables": tables})


def _base_first(policies: Mapping[str, Any]) -> dict[str, Any]:
    return {k: policies[k] for k in sorted(policies, key=lambda k: k != "base")}


def _text(value: Any) -> str:
    if value is None:
        return '<span class="note">–</span>'
    if not str(value).strip():
        return '<span class="note"><i>(empty)</i></span>'
    return html.escape(str(value))


def _setting(value: Any) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


