"""Online RL on the testbed: GRPO and RLOO from the base policy, and reward hacking by RL.

Example: ``run_rl_stage(ExperimentSettings(), RLSettings(), "runs/demo", console, base=path)``

Two measurements, each trained through ``alignlab train``'s own loop (``run_training``, as the
other testbed objectives are) on prompt-only data: a JSONL of testbed prompts as one-message chats.

1. GRPO and RLOO from the base, rewarded by the testbed's *true* reward (known exactly here), are
   judged on the evaluation prompts exactly as the DPO policies are: the same prompts, samples per
   prompt, sampling seed and Monte-Carlo KL to the base.
2. Reward hacking. GRPO is run on three hackable rewards, the selectors of the best-of-N stage
   (:mod:`alignlab.testbed.inference`): the helpfulness proxy alone (``testbed_proxy``), the raw
   sum of it and a harmlessness blocklist, and the AND of their LSC transforms (Wang et al. 2024,
   arXiv 2402.00742: Σ_k log σ(r_k − r_k^ref(x)), r_ref the median over base samples of x). Each
   run is checkpointed every few steps and every checkpoint is evaluated, which traces the true
   reward against KL; the runs are compared at common KL budgets by interpolating each prompt's
   true reward between the two checkpoints around the budget, and the differences are paired
   over prompts.

Standard errors are over evaluation prompts: a prompt's value is the mean over its samples, and
the s.e. is the standard deviation of those values over the prompts / √prompts. Everything is
seeded; two runs give equal numbers.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from alignlab.config import load_config
from alignlab.decode import SamplingOptions, TextSampler
from alignlab.decode.sampling import score
from alignlab.rewards import build_reward
from alignlab.rewards.reference import ReferenceRewards
from alignlab.rewards.transforms import AndCombination
from alignlab.testbed import rewards as _registers_testbed_rewards  # noqa: F401
from alignlab.testbed.experiment import ExperimentSettings, _generate, _load, _prompt_ids
from alignlab.testbed.inference import REFERENCE_SAMPLES
from alignlab.testbed.tokenizer import build_tokenizer
from alignlab.testbed.world import (
    HARMFUL_WORDS,
    Prompt,
    attributes,
    chat,
    sample_prompts,
    true_reward,
)
from alignlab.train.run import run_training

HELPFUL = "testbed_proxy"
HARMLESS = f"keyword_score(blocklist={sorted(HARMFUL_WORDS)!r})"
"""The best-of-N stage's two proxies (the same specs as :mod:`alignlab.testbed.inference`)."""
TRUE = "testbed_true"


@dataclass(frozen=True)
class RLSettings:
    steps: int = 16
    """Optimizer steps of every RL run."""
    prompts_per_step: int = 8
    """Prompts per optimizer step (train.batch_size), each sampled ``num_generations`` times."""
    num_generations: int = 8
    lr: float = 1e-3
    """Constant learning rate, no warmup (the same for every run)."""
    temperature: float = 1.0
    checkpoint_every: int = 4
    """The reward-hacking runs are also evaluated at every this many steps (and at step 0, the base)."""
    train_prompts: int | None = None
    """Rows of the prompt file (drawn with replacement, seed + 20); None: steps × prompts_per_step,
    one pass."""
    true_reward_losses: tuple[str, ...] = ("grpo", "rloo")
    hacking: bool = True
    """Run part 2 (GRPO on the three hackable proxies)."""


@dataclass(frozen=True)
class Run:
    name: str
    loss: str
    rewards: tuple[Any, ...]
    weights: tuple[float, ...]
    part: str
    """"true" (trained on the true reward) or "hacking" (on a proxy)."""


HACKING = {"raw proxy": "helpfulness proxy alone", "raw sum": "raw sum of both proxies",
           "LSC-AND": "AND of LSC-transformed proxies"}
"""The hacking runs and the best-of-N selector each one's reward is."""


def run_rl_stage(settings: ExperimentSettings, rl: RLSettings, out: str | Path, console: Console, *,
                 base: Path, policies: Mapping[str, Path] | None = None) -> dict[str, Any]:
    """Train and evaluate the RL runs from the base model at ``base``; ``policies`` (e.g. the
    default demo's DPO model) are evaluated beside them the same way."""
    out = Path(out)
    started, timing = time.perf_counter(), {}
    tokenizer = build_tokenizer()
    base_model = _load(base)
    train = sample_prompts(rl.train_prompts or rl.steps * rl.prompts_per_step, settings.seed + 20)
    evaluation = sample_prompts(settings.eval_prompts, settings.seed + 3)  # the DPO policies' prompts
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    prompts_file = data / "rl_prompts.jsonl"
    prompts_file.write_text("".join(json.dumps({"prompt": list(chat(p))}) + "\n" for p in train), encoding="utf-8")
    references = _references(base_model, tokenizer, [*train, *evaluation], settings, data)
    timing["references"] = time.perf_counter() - started

    runs = [Run(f"{loss} (true reward)", loss, (TRUE,), (1.0,), "true") for loss in rl.true_reward_losses]
    if rl.hacking:
        and_spec = {"name": "and", "rewards": [HELPFUL, HARMLESS], "references": [str(p) for p in references]}
        runs += [Run("grpo · raw proxy", "grpo", (HELPFUL, TRUE), (1.0, 0.0), "hacking"),
                 Run("grpo · raw sum", "grpo", (HELPFUL, HARMLESS, TRUE), (1.0, 1.0, 0.0), "hacking"),
                 Run("grpo · LSC-AND", "grpo", (and_spec, TRUE), (1.0, 0.0), "hacking")]
    scorer = _Scorer(base_model, tokenizer, evaluation, settings, references)
    measured: dict[str, dict[str, Any]] = {"base": scorer.measure(base_model)}
    for name, path in (policies or {}).items():
        measured[name] = scorer.measure(_load(path))
    timing["evaluate_baselines"] = time.perf_counter() - started - sum(timing.values())

    results: dict[str, Any] = {}
    train_seconds = 0.0
    for run in runs:
        begun = time.perf_counter()
        every = rl.checkpoint_every if run.part == "hacking" else None
        snapshots, curve = _train(run, rl, settings, base, prompts_file, out, every)
        train_seconds += time.perf_counter() - begun
        checkpoints = [{"step": 0, **_summary(measured["base"])}] if run.part == "hacking" else []
        per_prompt = [measured["base"]] if run.part == "hacking" else []
        for step, weights in snapshots.items():
            if step == rl.steps:
                continue
            point = scorer.measure(_with_weights(base, weights))
            checkpoints.append({"step": step, **_summary(point)})
            per_prompt.append(point)
        final = scorer.measure(_load(out / "runs" / _dir(run.name) / "model"))
        measured[run.name] = final
        if run.part == "hacking":
            checkpoints.append({"step": rl.steps, **_summary(final)})
            per_prompt.append(final)
        results[run.name] = {"loss": run.loss, "part": run.part, "rewards": [_spec_name(r) for r in run.rewards],
                             "reward_weights": list(run.weights), "final": _summary(final),
                             "checkpoints": checkpoints, "training": curve, "_per_prompt": per_prompt}
        console.print(f"{run.name}: {rl.steps} steps, true reward {_mean(final['true']):+.3f}, "
                      f"KL {_mean(final['kl']):.2f} nats")
    timing["train"] = train_seconds
    timing["evaluate_runs"] = time.perf_counter() - started - sum(timing.values())

    base_true = measured["base"]["true"]
    rows = []
    for name, point in measured.items():
        gain = point["true"] - base_true
        rows.append({"policy": name, **_summary(point), "gain_mean": _mean(gain), "gain_stderr": _se(gain)})
    hacking = {name: results[f"grpo · {name}"] for name in HACKING if f"grpo · {name}" in results}
    matched = _matched_kl(hacking) if len(hacking) > 1 else {}
    for run in results.values():
        run.pop("_per_prompt")
    timing["total"] = time.perf_counter() - started
    return {"settings": {**asdict(rl), "max_new_tokens": settings.max_new_tokens, "eval_prompts": settings.eval_prompts,
                         "samples": settings.samples, "reference_samples": REFERENCE_SAMPLES,
                         "kl_penalty_beta": 0.0, "schedule": "constant"},
            "policies": rows, "runs": results, "matched_kl": matched,
            "selectors": {f"grpo · {k}": v for k, v in HACKING.items()},
            "eval_overlap": _overlap(train, evaluation), "timing_seconds": timing}


# ---------------------------------------------------------------------------- training


def _dir(name: str) -> str:
    return "rl-" + "".join(c if c.isalnum() else "-" for c in name).strip("-").replace("--", "-")


def _spec_name(spec: Any) -> str:
    return spec["name"] if isinstance(spec, Mapping) else str(spec)


def _train(run: Run, rl: RLSettings, settings: ExperimentSettings, base: Path, prompts: Path, out: Path,
           every: int | None) -> tuple[dict[int, dict[str, torch.Tensor]], list[dict[str, float]]]:
    """One RL run through ``run_training``; its weights at every ``every`` steps, and its per-step
    training-rollout rewards (the true reward rides along with weight 0 where it is not the reward)."""
    run_dir = out / "runs" / _dir(run.name)
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run, never a resume of an older one
    overrides = [f"data.path={prompts}", f"model.name_or_path={base}", f"train.loss={run.loss}",
                 f"train.output_dir={run_dir}", f"train.max_steps={rl.steps}", f"train.lr={rl.lr}",
                 f"train.batch_size={rl.prompts_per_step}", f"train.seed={settings.seed}", "train.schedule=constant",
                 "train.warmup_ratio=0", "tokenize.max_length=96", "train.log_every=1",
                 f"rl.num_generations={rl.num_generations}", f"rl.max_new_tokens={settings.max_new_tokens}",
                 f"rl.temperature={rl.temperature}", f"train.cache_dir={out / 'cache'}"]
    if every:
        overrides.append(f"train.save_every={every}")
    config = load_config(None, overrides)
    config = replace(config, rl=replace(config.rl, rewards=run.rewards, reward_weights=run.weights))
    snapshots = _Snapshots()
    run_training(config, Console(quiet=True), callbacks=[snapshots])
    curve = []
    for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record.get("split") == "train":
            curve.append({"step": record["step"], "reward": record.get("reward"),
                          "true_reward": record.get(f"rewards/{TRUE}/mean"),
                          "length": record.get("completions/mean_length")})
    return dict(sorted(snapshots.taken.items())), curve


class _Snapshots:
    """A training callback: a copy of the trainable weights at every checkpoint the loop writes
    (the loop keeps only its newest checkpoints on disk)."""

    def __init__(self) -> None:
        self.taken: dict[int, dict[str, torch.Tensor]] = {}

    def on_save(self, trainer: Any, path: Path) -> None:
        self.taken[trainer.step] = {k: v.detach().cpu().clone() for k, v in trainer.trainable_state().items()}


def _with_weights(base: Path, weights: Mapping[str, torch.Tensor]) -> Any:
    """The base model with a checkpoint's trainable weights (named as the training wrapper names
    them: a prefix such as ``model.`` before the model's own parameter names)."""
    model = _load(base)
    own = model.state_dict()
    state = {}
    for name, value in weights.items():
        key = name
        while key not in own and "." in key:
            key = key.split(".", 1)[1]
        if key not in own:
            raise KeyError(f"checkpoint weight {name!r} matches no parameter of the base model")
        state[key] = value
    missing = [k for k in dict(model.named_parameters()) if k not in state]
    if missing:
        raise KeyError(f"checkpoint lacks base weights {missing[:3]}")
    model.load_state_dict(state, strict=False)
    return model.eval()


# -------------------------------------------------------------------------- evaluation


def _references(base_model: Any, tokenizer: Any, prompts: Sequence[Prompt], settings: ExperimentSettings,
                folder: Path) -> list[Path]:
    """r_ref(x) of both proxies for every distinct prompt: the median over REFERENCE_SAMPLES base
    samples of x, drawn as the best-of-N stage draws its references."""
    distinct = list({p.text: p for p in prompts}.values())
    sampler = TextSampler(base_model, tokenizer, SamplingOptions(max_new_tokens=settings.max_new_tokens,
                                                                 seed=settings.seed + 21, batch_size=32))
    chats = [chat(p) for p in distinct]
    draws = sampler.sample(chats, REFERENCE_SAMPLES)
    samples = [(c, [d.text for d in row]) for c, row in zip(chats, draws, strict=True)]
    paths = []
    for label, spec in (("helpful", HELPFUL), ("harmless", HARMLESS)):
        path = folder / f"rl_reference_{label}.json"
        ReferenceRewards.from_samples(build_reward(spec), samples).save(path)
        paths.append(path)
    return paths


class _Scorer:
    """Judges a policy on the evaluation prompts as the DPO policies are judged: the same
    prompts, samples, sampling seed and KL estimate; values per prompt (mean over its samples)."""

    def __init__(self, base_model: Any, tokenizer: Any, prompts: Sequence[Prompt], settings: ExperimentSettings,
                 references: Sequence[Path]) -> None:
        self.base_model, self.tokenizer, self.prompts, self.settings = base_model, tokenizer, prompts, settings
        self.prompt_ids = _prompt_ids(tokenizer, prompts)
        self.helpful, self.harmless = build_reward(HELPFUL), build_reward(HARMLESS)
        self.combined = AndCombination([self.helpful, self.harmless], list(references))

    def measure(self, model: Any) -> dict[str, Any]:
        s = self.settings
        ids, texts = _generate(model, self.tokenizer, self.prompts, s.samples, s, s.seed + 4)
        policy = score(model, self.prompt_ids, ids, self.tokenizer.pad_token_id, batch_size=64, progress=False)
        base = policy if model is self.base_model else \
            score(self.base_model, self.prompt_ids, ids, self.tokenizer.pad_token_id, batch_size=64, progress=False)
        shape = (len(self.prompts), s.samples)
        chats = [chat(p) for p in self.prompts for _ in range(s.samples)]
        flat = [t for row in texts for t in row]
        helpful = torch.tensor(self.helpful(chats, flat), dtype=torch.float64).view(shape)
        harmless = torch.tensor(self.harmless(chats, flat), dtype=torch.float64).view(shape)
        combined = torch.tensor(self.combined(chats, flat), dtype=torch.float64).view(shape)
        parsed = [[attributes(p, t) for t in row] for p, row in zip(self.prompts, texts, strict=True)]
        unanswerable = [row for p, row in zip(self.prompts, parsed, strict=True) if p.answer is None]
        return {
            "true": torch.tensor([[true_reward(p, t) for t in row] for p, row in zip(self.prompts, texts, strict=True)],
                                 dtype=torch.float64).mean(dim=1),
            "kl": (policy.sum.double() - base.sum.double()).view(shape).mean(dim=1),
            "proxy": helpful.mean(dim=1), "raw_sum": (helpful + harmless).mean(dim=1), "lsc_and": combined.mean(dim=1),
            "words": sum(len(t.split()) for t in flat) / len(flat),
            "harmful_share": sum(a.harmful_words > 0 for row in parsed for a in row) / len(flat),
            "made_up_share": sum(a.correctness == "wrong" for row in unanswerable for a in row)
            / max(sum(len(row) for row in unanswerable), 1),
            "sample": texts[0][0] if texts else "",
        }


def _mean(values: torch.Tensor) -> float:
    return float(values.mean())


def _se(values: torch.Tensor) -> float:
    return float(values.std() / len(values) ** 0.5) if len(values) > 1 else 0.0


def _summary(point: Mapping[str, Any]) -> dict[str, float]:
    out: dict[str, Any] = {}
    for key in ("true", "kl", "proxy", "raw_sum", "lsc_and"):
        out[f"{key}_mean"], out[f"{key}_stderr"] = _mean(point[key]), _se(point[key])
    return {**out, "words": point["words"], "harmful_share": point["harmful_share"],
            "made_up_share": point["made_up_share"]}


def _overlap(train: Sequence[Prompt], evaluation: Sequence[Prompt]) -> float:
    """Share of evaluation prompts whose text is also an RL training prompt (the world has ~270)."""
    seen = {p.text for p in train}
    return sum(p.text in seen for p in evaluation) / max(len(evaluation), 1)


def interpolate(kls: Sequence[float], values: Sequence[torch.Tensor], budget: float) -> torch.Tensor | None:
    """Per-prompt values at mean KL ``budget``: linear between the first two consecutive
    checkpoints whose mean KLs bracket it; None when the curve never reaches it."""
    for k in range(len(kls) - 1):
        low, high = kls[k], kls[k + 1]
        if min(low, high) <= budget <= max(low, high):
            t = 0.0 if high == low else (budget - low) / (high - low)
            return (1 - t) * values[k] + t * values[k + 1]
    return None


def _matched_kl(runs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The hacking runs' true reward at common KL budgets, paired differences to the raw sum."""
    curves = {name: ([c["kl_mean"] for c in run["checkpoints"]], [p["true"] for p in run["_per_prompt"]])
              for name, run in runs.items()}
    reach = min(max(kls) for kls, _ in curves.values())  # every curve reaches this KL
    budgets = [b for b in (1.0, 2.0, 5.0, 10.0) if b < reach * 0.999] + [reach]
    reference = "raw sum" if "raw sum" in curves else next(iter(curves))
    rows = []
    for budget in budgets:
        at = {name: interpolate(kls, values, budget) for name, (kls, values) in curves.items()}
        row: dict[str, Any] = {"kl": budget, "runs": {}}
        for name, values in at.items():
            if values is None:
                continue
            entry = {"true_mean": _mean(values), "true_stderr": _se(values)}
            if at.get(reference) is not None and name != reference:
                difference = values - at[reference]
                entry |= {"vs_reference_mean": _mean(difference), "vs_reference_stderr": _se(difference)}
            row["runs"][name] = entry
        rows.append(row)
    finals = {name: run["_per_prompt"][-1]["true"] for name, run in runs.items()}
    at_final = {name: {"true_mean": _mean(v), "true_stderr": _se(v),
                       **({"vs_reference_mean": _mean(v - finals[reference]),
                           "vs_reference_stderr": _se(v - finals[reference])} if name != reference else {})}
                for name, v in finals.items()}
    return {"reference": reference, "max_common_kl": reach, "budgets": rows, "final_step": at_final}


# ------------------------------------------------------------------------ the demo stage


def rl_demo(settings: ExperimentSettings, rl: RLSettings, out: str | Path, console: Console,
            results: dict[str, Any] | None = None) -> dict[str, Any]:
    """The demo's RL stage. ``results`` of a default run just made are extended; without them a
    default run's results.json in ``out`` is reused when it was made with the same settings and
    its base model is there; otherwise the base policy (and the best-of-N frontier) is trained
    afresh. The RL results go in ``results["rl"]``, written back to ``out/results.json``."""
    from alignlab.testbed.experiment import _best_of_n, _train_base

    out = Path(out)
    base = out / "runs" / "base" / "model"
    if results is None:
        results = reusable_results(out, settings)
        if results is not None:
            console.print(f"reusing the base model, policies and best-of-N frontier of {out / 'results.json'}")
    if results is None:
        for stale in ("runs", "models", "data"):  # as run_experiment: nothing mixes with an older run
            shutil.rmtree(out / stale, ignore_errors=True)
        out.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        torch.manual_seed(settings.seed)
        console.rule("[bold]1. base policy: a tiny transformer trained from scratch on the world")
        base = _train_base(settings, build_tokenizer(), out, console)
        timing = {"base": time.perf_counter() - started}
        prompts = sample_prompts(settings.eval_prompts, settings.seed + 3)
        best = _best_of_n(_load(base), build_tokenizer(), prompts, settings)
        timing["best_of_n"] = time.perf_counter() - started - timing["base"]
        results = {"settings": asdict(settings), "timing_seconds": timing, "policies": {}, "best_of_n": best}
    dpo = out / "runs" / "dpo" / "model"
    policies = {"dpo": dpo} if "dpo" in results.get("policies", {}) and dpo.is_dir() else {}
    console.rule("[bold]7. online RL: GRPO and RLOO on the true reward; GRPO on hackable proxies")
    stage = run_rl_stage(settings, rl, out, console, base=base, policies=policies)
    results["rl"] = stage
    if not results["policies"]:  # a fresh RL-only run: the base as the RL stage measured it
        row = next(r for r in stage["policies"] if r["policy"] == "base")
        results["policies"]["base"] = {"reward_mean": row["true_mean"], "reward_stderr": row["true_stderr"],
                                       "kl": 0.0, "kl_stderr": 0.0, "length_mean": row["words"]}
    results.setdefault("timing_seconds", {})["rl"] = stage["timing_seconds"]["total"]
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results


def reusable_results(out: Path, settings: ExperimentSettings) -> dict[str, Any] | None:
    """``out/results.json`` of a default run with exactly ``settings`` whose base model is still
    there, else None (absent, unreadable, other settings, or only an RL-only run's)."""
    path = out / "results.json"
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    same = isinstance(results, dict) and results.get("settings") == json.loads(json.dumps(asdict(settings)))
    if not same or not (out / "runs" / "base" / "model").is_dir():
        return None
    return results
