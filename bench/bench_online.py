"""Online GRPO speed and memory: alignlab against TRL's GRPOTrainer, side by side.

Run: ``.venv/bin/python bench/bench_online.py --model a --out runs/bench/online_a.json``
(options: ``--model a|b``, ``--steps N`` optimizer steps per run, ``--repeats N`` alternations,
``--prompts P``, ``--generations G``, ``--max-new-tokens T``, ``--threads N``, ``--tools``,
``--packing auto|on|off`` (alignlab's ``train.packing``, default its own ``auto``), ``--workdir
DIR``). Needs the bench extra (``pip install -e '.[bench]'``) for the TRL side; TRL is
only a baseline, never imported by alignlab itself. One run with the defaults (model a, 10 steps,
2 repeats) takes a few minutes on 2 CPU cores.

Setup: the repository's tiny model (:func:`alignlab.models.tiny.init_tiny_model`: byte-level BPE
tokenizer trained on its built-in corpus, ChatML template, BOS added, EOS ``<|im_end|>``; a
random-init Llama-style model, untied embeddings), (a) hidden 64, 2 layers, 4 heads,
intermediate 128 or (b) hidden 256, 4 layers, 4 heads, intermediate 1024, saved once so every run
loads the same weights; the prompts of ``examples/data/prompts.jsonl`` (plain strings, no chat
template on either side: both tokenize them with the tokenizer as is, BOS included).

The same work per optimizer step for both tools: P = 4 prompts × G = 8 completions (TRL:
``per_device_train_batch_size=32``, ``steps_per_generation=1``, so ``generation_batch_size=32``,
one generation per optimizer step; alignlab: ``train.batch_size=4`` prompts, ``rl.batch_size=4``,
one sampling call), gradient accumulation 1, completions of at most 32 tokens, temperature 1,
top-p 1, top-k off, β = 0 (no reference model), one iteration per generation (μ = 1), the GRPO
clipped objective with ε = 0.2 on both sides and the DAPO aggregation (TRL ``loss_type="dapo"``,
alignlab ``train.loss=grpo`` with ``loss_kwargs={aggregation: dapo}``), group-scaled advantages,
AdamW (fused, no weight decay), constant lr 1e-5, grad-norm clip 1.0, fp32 on CPU. The reward is
one plain Python function for both (:func:`vowel_share`, the share of vowels among a completion's
letters: it varies from completion to completion even for a random model, so the advantages are
not all zero; TRL calls it through :func:`trl_vowel_share`).

TRL at its best CPU settings: no vLLM, ``use_cpu=True``, ``bf16=False``, no gradient
checkpointing (recomputation only costs time here; TRL's GRPOConfig turns it on by default),
sdpa attention, ``optim=adamw_torch_fused``, no dataloader workers, ``report_to=[]``, no
completion logging, no saving; ``torch.set_num_threads(--threads)`` on both sides. Options
considered and left off: ``use_transformers_continuous_batching`` (transformers' paged engine:
measured 5-6× slower per step than ``generate`` on this CPU setting), ``cache_implementation``
other than the dynamic default (a static cache only pays with compilation), ``torch_compile``
(compile time would swamp runs of ten steps; alignlab runs eager), ``use_liger_kernel`` (Triton,
GPU-only), vLLM (GPU-only here).

Each run is its own subprocess, so the peak RSS (``getrusage(RUSAGE_SELF).ru_maxrss`` at the end of
the child) is that tool's own; the tools alternate (alignlab, TRL, alignlab, TRL, ...) for
``--repeats`` rounds, each round with its own seed (the same for both tools). Reported per tool,
medians over the rounds:

- s/step: median wall time of an optimizer step (rollout + update) over the steps after the first
  (a warm-up step, left out). alignlab: ``seconds`` in its metrics.jsonl; TRL: the time between
  consecutive ``on_step_end`` callbacks (the first step from ``on_step_begin``);
- tokens/s: the tokens of the step's sequences, prompt + completion of each of the P·G rows, real
  tokens only (no padding, a prompt counted once per completion), averaged over the timed steps,
  divided by s/step (so it is robust to the odd slow step, as s/step is). The count comes from
  each tool's own rollouts (alignlab:
  ``tokens`` in metrics.jsonl; TRL: the increase of ``num_tokens``, its
  ``num_input_tokens_seen``), so a tool whose completions end earlier is not credited with tokens
  it did not sample; both count the same way;
- CPU s/step and tokens/CPU s: the same on the process's CPU time (``time.process_time``, all
  its threads), less sensitive than wall time to other load on a shared machine (the children
  record the 1-minute load average at their start and end);
- peak RSS of the child;
- where the step time goes, for both (measured in the child by wrapping methods, nothing in
  src/ changes): alignlab: ``alignlab.train.online.sample`` (sampling), ``RolloutPhase._score``
  (the rewards), the rest of ``RolloutPhase.prepare`` (decoding, advantages, bookkeeping) and the
  rest of the step (forward/backward of the policy, clip, optimizer). TRL: ``_generate``
  (tokenizing prompts and sampling), ``_calculate_rewards``, the rest of
  ``_generate_and_score_completions`` and the rest of the step;
- the mean reward of the first step (its P·G completions from the initial model), with its
  standard error over the rounds' rows: the same reward function on the same model, so the two
  tools' first-step rewards should agree within noise (a check that both sample comparably). The
  error treats the P·G rows as independent; the G rows of a prompt are not, and the two tools draw
  different first prompts, so it understates the noise (|z| up to about 3 is not a discrepancy;
  with the same seed a rerun draws the same rows).

The ratios alignlab / TRL are printed under the table (the issue's target: at least 2× TRL's
tokens/s at no more than 0.7× its peak RSS).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PROMPTS_FILE = ROOT / "examples" / "data" / "prompts.jsonl"
MODELS = {
    "a": dict(hidden_size=64, layers=2, heads=4, intermediate=128),
    "b": dict(hidden_size=256, layers=4, heads=4, intermediate=1024),
}
TOOLS = ("alignlab", "trl")
LR, EPSILON, WARMUP_STEPS = 1e-5, 0.2, 1
PHASES = ("sampling", "scoring", "other_rollout", "update")
"""Where a step's time goes: sampling, the rewards, the rest of the rollout phase, and the update
(forward/backward, clip, optimizer step)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="a")
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per run (>= 2; the first is warm-up)")
    parser.add_argument("--repeats", type=int, default=2, help="alternations of the tools")
    parser.add_argument("--prompts", type=int, default=4, help="prompts per optimizer step (P)")
    parser.add_argument("--generations", type=int, default=8, help="completions per prompt (G)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--packing", choices=("auto", "on", "off"), default="auto",
                        help="alignlab's train.packing (default: alignlab's own default, auto)")
    parser.add_argument("--tools", default=",".join(TOOLS), help="comma-separated subset of " + ",".join(TOOLS))
    parser.add_argument("--out", default="runs/bench/online.json")
    parser.add_argument("--workdir", default=None, help="keep the model, prompts and runs here "
                        "(default: a temporary folder, removed at the end)")
    parser.add_argument("--seed", type=int, default=0, help="the first round's seed (round k: seed + k)")
    parser.add_argument("--child", choices=TOOLS, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ---- the reward, one function for both tools -----------------------------------------------------

VOWELS = frozenset("aeiouAEIOU")


def vowel_share(prompt: str, completion: str, **columns: Any) -> float:
    """The share of vowels among the completion's letters (0 without letters): alignlab's
    ``module:function`` reward ``f(prompt, completion, **columns) -> float``."""
    letters = [c for c in completion if c.isalpha()]
    return sum(c in VOWELS for c in letters) / len(letters) if letters else 0.0


def trl_vowel_share(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
    """The same reward in TRL's form ``f(prompts, completions, **kwargs) -> list[float]``."""
    return [vowel_share(p, c) for p, c in zip(prompts, completions, strict=True)]


# ---- setup ----------------------------------------------------------------------------------------

def prepare(workdir: Path, model_key: str) -> dict[str, Any]:
    """The tiny model and the prompts in ``workdir``; returns their facts."""
    from transformers import AutoTokenizer

    from alignlab.models.tiny import init_tiny_model

    model_dir = init_tiny_model(workdir / f"model_{model_key}", **MODELS[model_key])
    prompts = workdir / "prompts.jsonl"
    shutil.copyfile(PROMPTS_FILE, prompts)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows = [json.loads(line) for line in prompts.read_text(encoding="utf-8").splitlines() if line.strip()]
    lengths = [len(tokenizer(r["prompt"])["input_ids"]) for r in rows]
    import torch
    from transformers import AutoModelForCausalLM

    params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).parameters())
    return {"model_dir": str(model_dir), "data": str(prompts), "params": params, "vocab": len(tokenizer),
            "prompts_in_file": len(rows), "mean_prompt_tokens": statistics.mean(lengths)}


# ---- children: one training run each -------------------------------------------------------------

def peak_rss_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


class Stopwatch:
    """Accumulates the wall and CPU time (``time.process_time``: all of the process's threads)
    spent in wrapped callables, per name, one entry per optimizer step."""

    def __init__(self) -> None:
        self.open: dict[str, tuple[float, float]] = {}
        self.steps: list[dict[str, tuple[float, float]]] = []

    def wrap(self, name: str, function: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return function(*args, **kwargs)
            finally:
                before = self.open.get(name, (0.0, 0.0))
                self.open[name] = (before[0] + time.perf_counter() - wall, before[1] + time.process_time() - cpu)
        return timed

    def close_step(self) -> None:
        self.steps.append(self.open)
        self.open = {}


def phases(timed: dict[str, tuple[float, float]], step_seconds: float, clock: int) -> dict[str, float]:
    """One step's split into :data:`PHASES` from its ``sample``, ``score`` and ``rollout`` times on
    ``clock`` (0: wall, 1: CPU) and the step's time on that clock."""
    rollout = timed.get("rollout", (0.0, 0.0))[clock]
    sampling, scoring = timed.get("sample", (0.0, 0.0))[clock], timed.get("score", (0.0, 0.0))[clock]
    return {"sampling": sampling, "scoring": scoring, "other_rollout": max(rollout - sampling - scoring, 0.0),
            "update": max(step_seconds - rollout, 0.0)}


def split(steps: list[dict[str, tuple[float, float]]], wall: list[float], cpu: list[float]) -> dict[str, Any]:
    return {"phases": [phases(t, s, 0) for t, s in zip(steps, wall, strict=False)],
            "phases_cpu": [phases(t, s, 1) for t, s in zip(steps, cpu, strict=False)]}


def run_alignlab(setup: dict[str, Any], args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    from rich.console import Console

    import alignlab.train.online as online
    from alignlab.config import RunConfig, from_dict
    from alignlab.train.loop import Trainer
    from alignlab.train.run import run_training

    watch = Stopwatch()
    optimizer_step = watch.wrap("step", Trainer._optimizer_step)

    def step_timed(self: Any, *a: Any, **k: Any) -> Any:
        try:
            return optimizer_step(self, *a, **k)
        finally:
            watch.close_step()

    Trainer._optimizer_step = step_timed  # type: ignore[method-assign]
    online.RolloutPhase.prepare = watch.wrap("rollout", online.RolloutPhase.prepare)  # type: ignore[method-assign]
    online.RolloutPhase._score = watch.wrap("score", online.RolloutPhase._score)  # type: ignore[method-assign]
    online.sample = watch.wrap("sample", online.sample)  # the name _generate calls

    config = from_dict(RunConfig, {
        "data": {"path": setup["data"]},
        "model": {"name_or_path": setup["model_dir"], "dtype": "float32"},
        "tokenize": {"max_length": 1024},
        "rl": {"num_generations": args.generations, "max_new_tokens": args.max_new_tokens, "temperature": 1.0,
               "top_p": 1.0, "top_k": 0, "rewards": ["bench_online:vowel_share"], "scale_rewards": "group",
               "num_iterations": 1, "batch_size": args.prompts},
        "train": {"loss": "grpo", "loss_kwargs": {"aggregation": "dapo", "epsilon_low": EPSILON,
                                                  "epsilon_high": EPSILON, "beta": 0.0},
                  "lr": LR, "schedule": "constant", "warmup_ratio": 0.0, "batch_size": args.prompts,
                  "grad_accum": 1, "max_steps": args.steps, "reference": "none", "precision": "fp32",
                  "max_grad_norm": 1.0, "weight_decay": 0.0, "device": "cpu", "log_every": 1, "packing": args.packing,
                  "output_dir": str(out_dir), "seed": args.seed},
    })
    run_training(config, console=Console(quiet=True))
    records = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r.get("split") == "train"]
    seconds = [r["seconds"] for r in train]  # the loop's own clock around _optimizer_step, as "step"
    cpu = [t["step"][1] for t in watch.steps]
    return {"step_seconds": seconds, "step_cpu_seconds": cpu, "step_tokens": [r["tokens"] for r in train],
            "mean_length": [r["completions/mean_length"] for r in train],
            "first_reward": train[0]["reward"], "first_reward_std": train[0].get("reward_std", 0.0),
            **split(watch.steps, seconds, cpu)}


def run_trl(setup: dict[str, Any], args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    watch = Stopwatch()

    class Steps(TrainerCallback):
        def __init__(self) -> None:
            self.marks: list[tuple[float, float]] = []  # (wall, CPU): the first step's begin, each step's end
            self.logs: list[dict[str, float]] = []

        def on_step_begin(self, args, state, control, **kwargs):
            if not self.marks:
                self.marks.append((time.perf_counter(), time.process_time()))

        def on_step_end(self, args, state, control, **kwargs):
            self.marks.append((time.perf_counter(), time.process_time()))
            watch.close_step()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "reward" in logs:
                self.logs.append(dict(logs))

    GRPOTrainer._generate_and_score_completions = watch.wrap(  # type: ignore[method-assign]
        "rollout", GRPOTrainer._generate_and_score_completions)
    GRPOTrainer._generate = watch.wrap("sample", GRPOTrainer._generate)  # type: ignore[method-assign]
    GRPOTrainer._calculate_rewards = watch.wrap("score", GRPOTrainer._calculate_rewards)  # type: ignore[method-assign]

    dataset = load_dataset("json", data_files=setup["data"], split="train", cache_dir=str(out_dir / "datasets"))
    tokenizer = AutoTokenizer.from_pretrained(setup["model_dir"])
    model = AutoModelForCausalLM.from_pretrained(setup["model_dir"], dtype=torch.float32, attn_implementation="sdpa")
    g = args.generations
    config = GRPOConfig(
        output_dir=str(out_dir), learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
        max_grad_norm=1.0, optim="adamw_torch_fused", per_device_train_batch_size=args.prompts * g,
        gradient_accumulation_steps=1, steps_per_generation=1, num_generations=g,
        max_completion_length=args.max_new_tokens, temperature=1.0, top_p=1.0, top_k=0, beta=0.0, num_iterations=1,
        epsilon=EPSILON, epsilon_high=EPSILON, loss_type="dapo", scale_rewards="group",
        mask_truncated_completions=False, use_vllm=False, use_cpu=True, bf16=False, fp16=False,
        gradient_checkpointing=False, max_steps=args.steps, logging_strategy="steps", logging_steps=1,
        save_strategy="no", eval_strategy="no", report_to=[], disable_tqdm=True, log_completions=False,
        dataloader_num_workers=0, dataloader_pin_memory=False, seed=args.seed)
    steps = Steps()
    trainer = GRPOTrainer(model=model, reward_funcs=trl_vowel_share, args=config, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=[steps])
    trainer.train()
    seconds = [b[0] - a[0] for a, b in zip(steps.marks, steps.marks[1:], strict=False)]
    cpu = [b[1] - a[1] for a, b in zip(steps.marks, steps.marks[1:], strict=False)]
    seen = [0.0, *(log["num_tokens"] for log in steps.logs)]
    group = trainer.optimizer.param_groups[0]
    return {"step_seconds": seconds, "step_cpu_seconds": cpu,
            "step_tokens": [b - a for a, b in zip(seen, seen[1:], strict=False)],
            "mean_length": [log["completions/mean_length"] for log in steps.logs],
            "first_reward": steps.logs[0]["reward"], "first_reward_std": steps.logs[0].get("reward_std", 0.0),
            **split(watch.steps, seconds, cpu),
            "optimizer": type(getattr(trainer.optimizer, "optimizer", trainer.optimizer)).__name__,
            "fused": bool(group.get("fused")), "attn_implementation": trainer.model.config._attn_implementation,
            "gradient_checkpointing": bool(getattr(trainer.model, "is_gradient_checkpointing", False))}


def child(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads)
    setup = json.loads(Path(args.workdir, "setup.json").read_text())
    out_dir = Path(tempfile.mkdtemp(prefix=f"bench_{args.child}_", dir=args.workdir))
    started, load = time.perf_counter(), os.getloadavg()[0]
    result = (run_alignlab if args.child == "alignlab" else run_trl)(setup, args, out_dir)
    wall = time.perf_counter() - started
    Path(args.result).write_text(json.dumps({"tool": args.child, "seed": args.seed, "wall_s": wall,
                                             "load_average": [load, os.getloadavg()[0]],
                                             "peak_rss_bytes": peak_rss_bytes(),
                                             "threads": torch.get_num_threads(), **result}))
    return 0


# ---- parent: alternate, summarise, print ---------------------------------------------------------

def summarise(runs: list[dict[str, Any]], rows_per_step: int) -> dict[str, Any]:
    """Per run over the steps after the warm-up, then the median over runs; the phases are each
    run's mean seconds per step (so they add up to its mean step time)."""
    def after_warmup(run: dict[str, Any], key: str) -> list[Any]:
        return run[key][WARMUP_STEPS:] or run[key]

    per_run = []
    for run in runs:
        def steady(key: str, run: dict[str, Any] = run) -> list[Any]:
            return after_warmup(run, key)

        seconds, cpu, tokens = steady("step_seconds"), steady("step_cpu_seconds"), steady("step_tokens")
        per_run.append({"s_per_step": statistics.median(seconds), "cpu_s_per_step": statistics.median(cpu),
                        "tokens_per_s": statistics.mean(tokens) / statistics.median(seconds),
                        "tokens_per_cpu_s": statistics.mean(tokens) / statistics.median(cpu),
                        "tokens_per_step": statistics.mean(tokens), "wall_s": run["wall_s"],
                        "peak_rss_gib": run["peak_rss_bytes"] / 2**30, "load_average": run["load_average"],
                        **{key: {p: statistics.mean(s[p] for s in steady(key)) for p in PHASES}
                           for key in ("phases", "phases_cpu")}})
    first = [r["first_reward"] for r in runs]
    # Standard error of the first-step mean: the rows' std over √(rows), pooled over the rounds.
    variance = statistics.mean(r["first_reward_std"] ** 2 for r in runs)
    out: dict[str, Any] = {key: statistics.median(r[key] for r in per_run) for key in (
        "s_per_step", "cpu_s_per_step", "tokens_per_s", "tokens_per_cpu_s", "tokens_per_step", "wall_s",
        "peak_rss_gib")}
    return {**out, **{key: {p: statistics.median(r[key][p] for r in per_run) for p in PHASES}
                      for key in ("phases", "phases_cpu")},
            "mean_completion_length": statistics.mean(x for r in runs for x in r["mean_length"]),
            "first_step_reward": statistics.mean(first),
            "first_step_reward_se": math.sqrt(variance / (rows_per_step * len(runs))),
            "runs": per_run}


def table(summary: dict[str, dict[str, Any]], steps: int) -> str:
    rows = [f"| tool | s/step | tokens/s | CPU s/step | tokens/CPU s | tokens/step | wall ({steps} steps) | peak RSS "
            "| first-step reward |", "|---|---|---|---|---|---|---|---|---|"]
    for tool, r in summary.items():
        rows.append(f"| {tool} | {r['s_per_step']:.3f} | {r['tokens_per_s']:,.0f} | {r['cpu_s_per_step']:.3f} | "
                    f"{r['tokens_per_cpu_s']:,.0f} | {r['tokens_per_step']:,.0f} | {r['wall_s']:.1f} s | "
                    f"{r['peak_rss_gib']:.2f} GiB | {r['first_step_reward']:.3f} ± {r['first_step_reward_se']:.3f} |")
    rows += ["", "| tool, clock | sampling | scoring | other rollout | update (fwd/bwd/optim) |", "|---|---|---|---|---|"]
    for tool, r in summary.items():
        for key, clock in (("phases", "wall"), ("phases_cpu", "CPU")):
            total = sum(r[key].values()) or 1.0
            rows.append(f"| {tool}, {clock} | " + " | ".join(
                f"{r[key][p]:.3f} s ({100 * r[key][p] / total:.0f}%)" for p in PHASES) + " |")
    if "alignlab" in summary and "trl" in summary:
        a, t = summary["alignlab"], summary["trl"]
        z = (a["first_step_reward"] - t["first_step_reward"]) / max(
            math.hypot(a["first_step_reward_se"], t["first_step_reward_se"]), 1e-12)
        rows += ["", "| alignlab / TRL | tokens/s (speed-up) | s/step | tokens/CPU s | CPU s/step | peak RSS "
                 "| first-step reward z |", "|---|---|---|---|---|---|---|",
                 f"| ratio | {a['tokens_per_s'] / t['tokens_per_s']:.2f}× | {a['s_per_step'] / t['s_per_step']:.2f}× | "
                 f"{a['tokens_per_cpu_s'] / t['tokens_per_cpu_s']:.2f}× | "
                 f"{a['cpu_s_per_step'] / t['cpu_s_per_step']:.2f}× | {a['peak_rss_gib'] / t['peak_rss_gib']:.2f}× | "
                 f"{z:+.1f} |"]
    return "\n".join(rows)


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "machine": platform.machine(), "cpus": str(os.cpu_count())}
    for name in ("torch", "transformers", "trl", "accelerate", "datasets", "alignlab"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "missing"
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child(args)
    if args.steps < WARMUP_STEPS + 1:
        print("bench_online: --steps must be at least 2 (the first is a warm-up)", file=sys.stderr)
        return 2
    if args.generations < 2:
        print("bench_online: --generations must be at least 2 (TRL's GRPO needs a group)", file=sys.stderr)
        return 2
    tools = [t for t in args.tools.split(",") if t]
    if "trl" in tools:
        try:
            import trl  # noqa: F401
        except ImportError:
            print("bench_online: TRL is not installed; run: pip install -e '.[bench]'", file=sys.stderr)
            return 1
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_online_"))
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    setup = prepare(workdir, args.model)
    (workdir / "setup.json").write_text(json.dumps(setup))
    rows_per_step = args.prompts * args.generations
    print(f"setup in {time.perf_counter() - started:.0f} s: model ({args.model}) {setup['params'] / 1e6:.2f}M params, "
          f"vocab {setup['vocab']}, {setup['prompts_in_file']} prompts of {setup['mean_prompt_tokens']:.1f} tokens; "
          f"{args.prompts} prompts × {args.generations} completions ≤ {args.max_new_tokens} tokens per step; "
          f"{workdir}", flush=True)
    runs: dict[str, list[dict[str, Any]]] = {t: [] for t in tools}
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1", "WANDB_DISABLED": "true",
           # the child imports this file as `bench_online` for alignlab's module:function reward
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent),
                                          *filter(None, [os.environ.get("PYTHONPATH")])])}
    for round_ in range(args.repeats):
        for tool in tools:
            result = workdir / f"result_{tool}_{round_}.json"
            command = [sys.executable, str(Path(__file__).resolve()), "--child", tool, "--workdir", str(workdir),
                       "--steps", str(args.steps), "--threads", str(args.threads), "--prompts", str(args.prompts),
                       "--generations", str(args.generations), "--max-new-tokens", str(args.max_new_tokens),
                       "--packing", args.packing, "--seed", str(args.seed + round_), "--result", str(result)]
            t0 = time.perf_counter()
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"{tool} failed (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}",
                      file=sys.stderr)
                return 1
            run = json.loads(result.read_text())
            runs[tool].append(run)
            steady = statistics.median(run["step_seconds"][WARMUP_STEPS:])
            cpu = statistics.median(run["step_cpu_seconds"][WARMUP_STEPS:])
            print(f"[{round_ + 1}/{args.repeats}] {tool}: {steady:.3f} s/step ({cpu:.3f} CPU s), "
                  f"wall {run['wall_s']:.1f} s, load {run['load_average'][0]:.1f}-{run['load_average'][1]:.1f}, "
                  f"peak RSS {run['peak_rss_bytes'] / 2**30:.2f} GiB, first-step reward {run['first_reward']:.3f} "
                  f"({time.perf_counter() - t0:.0f} s)"
                  + (f"; {run['optimizer']} fused={run['fused']}, {run['attn_implementation']}, "
                     f"gradient checkpointing {run['gradient_checkpointing']}" if "optimizer" in run else ""),
                  flush=True)
    summary = {tool: summarise(rs, rows_per_step) for tool, rs in runs.items()}
    text = table(summary, args.steps)
    info = versions()
    print(f"\nonline GRPO (DAPO aggregation, ε={EPSILON}, β=0, μ=1), {args.prompts} prompts × {args.generations} "
          f"completions ≤ {args.max_new_tokens} tokens per step, lr {LR}, fp32, CPU {args.threads} threads, "
          f"model ({args.model}) {setup['params'] / 1e6:.2f}M params, {args.steps} steps × {args.repeats} repeats; "
          f"torch {info['torch']}, transformers {info['transformers']}, trl {info['trl']}\n")
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": {k: v for k, v in vars(args).items() if k not in ("child", "result")},
                               "setup": {k: v for k, v in setup.items() if k not in ("model_dir", "data")},
                               "versions": info, "summary": summary, "raw": runs, "table": text}, indent=2) + "\n")
    print(f"\nwritten: {out}")
    if args.workdir is None:  # a temporary folder of ours: model, prompts, run directories
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
