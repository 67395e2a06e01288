"""Demo stage "logic": losses derived from formulas against DPO, over several training seeds.

Example: ``logic_demo(ExperimentSettings(), LogicSettings(seeds=3), "runs/demo", Console())``

Each loss of :attr:`LogicSettings.losses` (DPO and structures compiled by alignlab.losses.logic,
after Richardson, Srikumar & Sabharwal 2025, arXiv 2412.17696) is trained from the same base on
the same on-policy pairs with each training seed (which orders the examples), and judged by the
testbed's true reward, KL to the base and ranking accuracy on held-out pairs. Standard errors
are over the seeds; the difference to DPO is paired by seed.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from alignlab.data.convert import write_jsonl
from alignlab.data.load import load_records
from alignlab.losses import get_loss
from alignlab.testbed.experiment import (
    ExperimentSettings,
    _evaluate,
    _load,
    _pairs,
    _run,
    _train_base,
)
from alignlab.testbed.rl import reusable_results
from alignlab.testbed.tokenizer import build_tokenizer
from alignlab.testbed.world import sample_prompts


@dataclass(frozen=True)
class LogicSettings:
    losses: tuple[tuple[str, str], ...] = (
        ("dpo", "dpo"),
        ("cCPO (reading)", "derived:single:l -> w given w | l"),
        ("unCPO", "derived:single:l -> w"),
        ("implication (ref)", "derived:ref:l -> w given w | l"),
        ("w & !l given w | l (ref)", "derived:ref:w & !l given w | l"),
    )
    """(label, train.loss); the first is the baseline the others are compared with. ℓ_unCPO is the
    paper's (−log WMC(M_l → M_w)); the paper's ℓ_cCPO is read as M_l → M_w given M_l ∨ M_w, which
    its lattice suggests but its definition was not available to confirm. Single-model atoms use
    the token-mean probability (on 24-token answers πθ(y|x) itself is about e^−20, where
    unconditioned losses have no gradient to speak of)."""
    seeds: int = 3
    beta: float = 0.1
    lr: float = 3e-4


def logic_demo(settings: ExperimentSettings, logic: LogicSettings, out: str | Path, console: Console,
               results: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the stage; its table goes in ``results["logic"]``, written back to ``out/results.json``.
    A default run's base, pairs and held-out pairs in ``out`` are reused when its settings match."""
    out = Path(out)
    started = time.perf_counter()
    if results is None:
        results = reusable_results(out, settings)
    tokenizer = build_tokenizer()
    base = out / "runs" / "base" / "model"
    if results is None or not base.is_dir():  # as run_experiment: nothing mixes with an older run
        for stale in ("runs", "models", "data"):
            shutil.rmtree(out / stale, ignore_errors=True)
        out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(settings.seed)
        console.rule("[bold]1. base policy: a tiny transformer trained from scratch on the world")
        base = _train_base(settings, tokenizer, out, console)
        results = {"settings": asdict(settings), "timing_seconds": {}, "policies": {}}
    else:
        console.print(f"reusing the base model of {out}")
    base_model = _load(base)
    pairs_path, heldout_path = out / "data" / "pairs.jsonl", out / "data" / "heldout.jsonl"
    if not (pairs_path.is_file() and heldout_path.is_file()):  # an RL-only run made none
        write_jsonl(_pairs(base_model, tokenizer, settings, settings.pairs, settings.seed + 1)[0], pairs_path)
        write_jsonl(_pairs(base_model, tokenizer, settings, settings.heldout_pairs, settings.seed + 2)[0],
                    heldout_path)
    heldout = load_records(heldout_path).records
    console.rule("[bold]8. losses from logic: derived structures against DPO, "
                 f"{logic.seeds} training seeds each")
    models: dict[str, Path] = {"base": base}
    for seed in range(logic.seeds):
        seeded = replace(settings, seed=settings.seed + seed)
        for label, loss in logic.losses:
            takes_beta = any(h.name == "beta" for h in get_loss(loss).contract.hyperparameters)
            kwargs = {"beta": logic.beta} if takes_beta else {}  # probability semantics have no β
            models[f"{label} @{seed}"] = _run(out, f"logic-{_slug(label)}-{seed}", base, loss, kwargs,
                                             None, pairs_path, settings.steps, logic.lr, seeded, console,
                                             batch_size=16)
    prompts = sample_prompts(settings.eval_prompts, settings.seed + 3)
    evaluated, _ = _evaluate(models, base_model, tokenizer, prompts, heldout, settings)
    stage = {"losses": [{"label": label, "loss": loss} for label, loss in logic.losses], "seeds": logic.seeds,
             "rows": summarise(evaluated, logic), "timing_seconds": time.perf_counter() - started}
    results["logic"] = stage
    results["policies"].setdefault("base", asdict(evaluated["base"]))  # a report needs the base row
    results.setdefault("timing_seconds", {})["logic"] = stage["timing_seconds"]
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results


def summarise(evaluated: dict[str, Any], logic: LogicSettings) -> list[dict[str, Any]]:
    """Per loss: mean ± s.e. over seeds of true reward, KL and ranking accuracy, and the true
    reward's difference to the baseline, paired by seed."""
    baseline = logic.losses[0][0]
    rows = []
    for label, loss in logic.losses:
        runs = [evaluated[f"{label} @{s}"] for s in range(logic.seeds)]
        base_runs = [evaluated[f"{baseline} @{s}"] for s in range(logic.seeds)]
        row = {"label": label, "loss": loss}
        for key, values in (("reward", [r.reward_mean for r in runs]), ("kl", [r.kl for r in runs]),
                            ("ranking_accuracy", [r.ranking_accuracy for r in runs]),
                            ("vs_baseline", [r.reward_mean - b.reward_mean for r, b in zip(runs, base_runs,
                                                                                         strict=True)])):
            row[key] = _mean_se(values)
        if label == baseline:
            row["vs_baseline"] = None
        row["eval_stderr"] = statistics.fmean(r.reward_stderr for r in runs)  # within a seed, over prompts
        rows.append(row)
    base = evaluated["base"]
    rows.insert(0, {"label": "base", "loss": "", "reward": [base.reward_mean, base.reward_stderr],
                    "kl": [0.0, 0.0], "ranking_accuracy": [base.ranking_accuracy, None], "vs_baseline": None,
                    "eval_stderr": base.reward_stderr})
    return rows


def _mean_se(values: list[float]) -> list[float]:
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float("nan")
    return [mean, se]


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in label).strip("-")


def print_logic(stage: dict[str, Any] | None, console: Console) -> None:
    if not stage:
        return
    from rich.table import Table

    table = Table("loss", "train.loss", "true reward", "vs DPO (paired)", "KL to base", "ranking acc",
                  title=f"losses from logic: {stage['seeds']} training seeds each (s.e. over seeds)",
                  title_justify="left")
    for row in stage["rows"]:
        table.add_row(row["label"], row["loss"], _pm(row["reward"]), _pm(row["vs_baseline"]) if row["vs_baseline"]
                      else "", _pm(row["kl"], 2), _pm(row["ranking_accuracy"]))
    console.print(table)


def logic_section(stage: dict[str, Any]) -> str:
    """The report's section for the stage."""
    from alignlab.eval.report import html_section

    table = [{"loss": row["label"], "train.loss": row["loss"], "true reward": _pm(row["reward"]),
              "vs DPO (paired by seed)": _pm(row["vs_baseline"]) if row["vs_baseline"] else "",
              "KL to base (nats)": _pm(row["kl"], 2), "ranking accuracy (held-out)": _pm(row["ranking_accuracy"]),
              "s.e. within a seed (prompts)": f"{row['eval_stderr']:.3f}"} for row in stage["rows"]]
    notes = ["The base row's ± is over evaluation prompts (it is not trained per seed). "
             "Each loss is trained from the same base on the same on-policy pairs with each training seed "
             "(the example order); standard errors are over the seeds, and the difference to DPO is paired by seed. "
             "The derived losses are compiled from their formulas by alignlab.losses.logic (Richardson, Srikumar & "
             "Sabharwal 2025, arXiv 2412.17696) under the reference semantics p = σ(β·log πθ/πref), β as DPO's."]
    return html_section("Losses from logic against DPO", {"tables": {"Derived losses": table}, "notes": notes})


def _pm(pair: list[float] | None, digits: int = 3) -> str:
    from alignlab.testbed.cells import pm

    return pm(pair[0], pair[1], digits).replace("\u00a0", " ") if pair else ""
