"""The testbed experiment: a base policy, on-policy pairs labelled by simulated raters, several
objectives aligned from it, and each judged by the true reward it gained for the KL it paid.

Example: ``results = run_experiment(ExperimentSettings(steps=40), "runs/demo", console)``

Every stage goes through the library (the training engine, the sampling engine, the metrics),
so the demo is also an end-to-end test of them. Seeded throughout: two runs give equal numbers.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from alignlab.config import load_config
from alignlab.data.convert import write_jsonl
from alignlab.data.records import PreferencePair
from alignlab.decode.sampling import SamplingOptions, sample, score
from alignlab.eval.kl import best_of_n_kl_bound, best_of_n_kl_exact, kl_from_samples
from alignlab.eval.pairs import evaluate_pairs
from alignlab.eval.ranking import win_rate
from alignlab.eval.scoring import score_pairs
from alignlab.testbed.inference import inference_time_alignment
from alignlab.testbed.search import deal_against_best_of_n
from alignlab.testbed.shift import token_shift
from alignlab.testbed.steering import steering_tradeoff
from alignlab.testbed.tokenizer import build_tokenizer
from alignlab.testbed.world import (
    Prompt,
    chat,
    label_pair,
    sample_prompts,
    sft_examples,
    true_reward,
)
from alignlab.train.run import run_training

SIZES = {"micro": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64},
         "tiny": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128},
         "small": {"hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 256}}
OBJECTIVES = {  # loss, its hyperparameters, data kind, learning rate
    "dpo": ("dpo", {"beta": 0.1}, None, 3e-4),
    "ln_dpo": ("ln_dpo", {"beta": 1.0}, None, 3e-4),
    "simpo": ("simpo", {"beta": 2.0, "gamma": 0.5}, None, 3e-4),
    "kto": ("kto", {"beta": 0.1}, "unpaired", 3e-4),
    "ipo": ("ipo", {"beta": 0.1}, None, 1e-4),
}


@dataclass(frozen=True)
class ExperimentSettings:
    steps: int = 120
    """Optimizer steps of each alignment objective."""
    sft_steps: int = 1200
    """Optimizer steps of supervised training of the base policy from scratch."""
    model_size: str = "tiny"
    """"tiny" (64 wide, 2 layers) or "small" (128 wide, 4 layers)."""
    objectives: tuple[str, ...] = ("dpo", "ln_dpo", "kto")
    pairs: int = 1536
    """On-policy training pairs (two base samples per prompt, labelled by simulated raters)."""
    heldout_pairs: int = 256
    eval_prompts: int = 160
    samples: int = 4
    """Samples per evaluation prompt for reward, KL and length."""
    best_of: tuple[int, ...] = (1, 2, 4, 8, 16)
    rater_temperature: float = 0.5
    """Bradley–Terry temperature of the simulated raters (lower: more consistent raters)."""
    beta: float = 0.1
    seed: int = 0
    max_new_tokens: int = 24


@dataclass
class PolicyResult:
    reward_mean: float
    reward_stderr: float
    kl: float
    kl_stderr: float
    length_mean: float
    win_rate: float
    win_rate_stderr: float
    ranking_accuracy: float | None = None
    ranking_accuracy_normalised: float | None = None
    idealized_ranking_accuracy: float | None = None
    implicit_reward_accuracy: float | None = None
    lengths: list[int] = field(default_factory=list)


def run_experiment(settings: ExperimentSettings, out: str | Path, console: Console) -> dict[str, Any]:
    out = Path(out)
    for stale in ("runs", "models", "data"):  # a fresh experiment: nothing resumes from older runs
        shutil.rmtree(out / stale, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    started, timing = time.perf_counter(), {}
    torch.manual_seed(settings.seed)
    tokenizer = build_tokenizer()

    console.rule("[bold]1. base policy: a tiny transformer trained from scratch on the world")
    base = _train_base(settings, tokenizer, out, console)
    timing["base"] = time.perf_counter() - started

    console.rule("[bold]2. on-policy pairs, labelled by simulated raters (Bradley–Terry on the true reward)")
    base_model = _load(base)
    train_pairs, dropped = _pairs(base_model, tokenizer, settings, settings.pairs, settings.seed + 1)
    heldout, _ = _pairs(base_model, tokenizer, settings, settings.heldout_pairs, settings.seed + 2)
    write_jsonl(train_pairs, out / "data" / "pairs.jsonl")
    write_jsonl(heldout, out / "data" / "heldout.jsonl")
    console.print(f"{len(train_pairs)} training pairs, {len(heldout)} held-out pairs "
                  f"({dropped} pairs of identical samples left out)")
    timing["pairs"] = time.perf_counter() - started - sum(timing.values())

    console.rule("[bold]3. alignment: " + ", ".join(settings.objectives))
    models = {"base": base}
    for name in settings.objectives:
        models[name] = _align(name, settings, base, out, console)
    timing["align"] = time.perf_counter() - started - sum(timing.values())

    console.rule("[bold]4. evaluation by the true reward")
    prompts = sample_prompts(settings.eval_prompts, settings.seed + 3)
    results, samples = _evaluate(models, base_model, tokenizer, prompts, heldout, settings)
    best = _best_of_n(base_model, tokenizer, prompts, settings)
    timing["evaluate"] = time.perf_counter() - started - sum(timing.values())

    console.rule("[bold]5. inference-time alignment: best-of-N by hackable proxies, raw or LSC-combined")
    inference = inference_time_alignment(base_model, tokenizer, prompts, n=max(settings.best_of),
                                         max_new_tokens=settings.max_new_tokens, seed=settings.seed + 6)
    timing["inference_time"] = time.perf_counter() - started - sum(timing.values())

    console.rule("[bold]6. decoding-time search, steering and token shift")
    decoding = {"deal": deal_against_best_of_n(base_model, tokenizer, prompts, max_new_tokens=settings.max_new_tokens,
                                               seed=settings.seed + 7),
                "steering": steering_tradeoff(base_model, tokenizer, prompts, max_new_tokens=settings.max_new_tokens,
                                              seed=settings.seed + 8)}
    aligned = "dpo" if "dpo" in settings.objectives else (settings.objectives or (None,))[0]
    if aligned is not None:
        decoding["token_shift"] = {"aligned": aligned, **token_shift(base_model, _load(models[aligned]), tokenizer,
                                                                      prompts, max_new_tokens=settings.max_new_tokens)}
    timing["decoding"] = time.perf_counter() - started - sum(timing.values())
    timing["total"] = time.perf_counter() - started
    report = {"settings": asdict(settings), "timing_seconds": timing,
              "policies": {name: asdict(r) for name, r in results.items()}, "best_of_n": best,
              "inference_time": inference, "decoding": decoding,
              "training_curves": _curves(out, ["base", *settings.objectives]), "samples": samples}
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def _train_base(settings: ExperimentSettings, tokenizer: Any, out: Path, console: Console,
                name: str = "base") -> Path:
    """A transformer of ``settings.model_size`` trained from scratch on the world's base responses."""
    from transformers import LlamaConfig, LlamaForCausalLM

    init = out / "models" / ("init" if name == "base" else f"{name}-init")
    torch.manual_seed(settings.seed)
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         max_position_embeddings=128, **SIZES[settings.model_size])
    LlamaForCausalLM(config).save_pretrained(init)
    tokenizer.save_pretrained(init)
    write_jsonl(sft_examples(4096, settings.seed), out / "data" / "sft.jsonl")
    return _run(out, name, init, "nll", {}, None, out / "data" / "sft.jsonl", settings.sft_steps, 3e-3,
                settings, console, batch_size=32)


def _align(name: str, settings: ExperimentSettings, base: Path, out: Path, console: Console) -> Path:
    loss, kwargs, kind, lr = OBJECTIVES[name]
    return _run(out, name, base, loss, kwargs, kind, out / "data" / "pairs.jsonl", settings.steps, lr,
                settings, console, batch_size=16)


def _run(out, name, model, loss, kwargs, kind, data, steps, lr, settings, console, batch_size, extra=()) -> Path:
    overrides = [f"data.path={data}", f"model.name_or_path={model}", f"train.loss={loss}",
                 f"train.output_dir={out / 'runs' / name}", f"train.max_steps={steps}", f"train.lr={lr}",
                 f"train.batch_size={batch_size}", f"train.seed={settings.seed}", "train.warmup_ratio=0.05",
                 "train.schedule=cosine", "tokenize.max_length=96", "train.log_every=5",
                 f"train.cache_dir={out / 'cache'}"]
    overrides += [f"train.loss_kwargs.{k}={v}" for k, v in kwargs.items()]
    if kind:
        overrides.append(f"data.kind={kind}")
    overrides += list(extra)
    run_training(load_config(None, overrides), Console(quiet=True))
    line = json.loads((out / "runs" / name / "metrics.jsonl").read_text(encoding="utf-8").splitlines()[-1])
    console.print(f"{name}: {steps} steps, final loss {line['loss']:.4f}")
    return out / "runs" / name / "model"


def _load(path: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path).eval()


def _prompt_ids(tokenizer: Any, prompts: Sequence[Prompt]) -> list[list[int]]:
    return [tokenizer.apply_chat_template(list(chat(p)), add_generation_prompt=True, tokenize=True,
                                          return_dict=False) for p in prompts]


def _generate(model: Any, tokenizer: Any, prompts: Sequence[Prompt], n: int, settings: ExperimentSettings,
              seed: int) -> tuple[list[list[tuple[int, ...]]], list[list[str]]]:
    options = SamplingOptions(max_new_tokens=settings.max_new_tokens, seed=seed, batch_size=32)
    ids = sample(model, _prompt_ids(tokenizer, prompts), n, options, eos_id=tokenizer.eos_token_id,
                 pad_id=tokenizer.pad_token_id)
    texts = [[tokenizer.decode(c, skip_special_tokens=True).strip() for c in row] for row in ids]
    return ids, texts


def _pairs(model, tokenizer, settings, n, seed) -> tuple[list[PreferencePair], int]:
    prompts = sample_prompts(n, seed)
    _, texts = _generate(model, tokenizer, prompts, 2, settings, seed)
    rng, pairs, identical = random.Random(seed), [], 0
    for prompt, (a, b) in zip(prompts, texts, strict=True):
        if a == b or not a or not b:
            identical += 1  # no preference to learn from identical (or empty) samples
            continue
        pairs.append(label_pair(prompt, a, b, settings.rater_temperature, rng))
    return pairs, identical


def _evaluate(models, base_model, tokenizer, prompts, heldout, settings):
    prompt_ids = _prompt_ids(tokenizer, prompts)
    base_ids, base_texts = _generate(base_model, tokenizer, prompts, settings.samples, settings, settings.seed + 4)
    base_rewards = _rewards(prompts, base_texts)
    base_scores = score_pairs(base_model, tokenizer, heldout, progress=False)
    results, samples = {}, [{"prompt": p.text, "base": t[0]} for p, t in zip(prompts[:8], base_texts, strict=False)]
    for name, path in models.items():
        model = base_model if name == "base" else _load(path)
        ids, texts = (base_ids, base_texts) if name == "base" else \
            _generate(model, tokenizer, prompts, settings.samples, settings, settings.seed + 4)
        rewards = _rewards(prompts, texts)
        policy_lp = score(model, prompt_ids, ids, tokenizer.pad_token_id, batch_size=64)
        base_lp = score(base_model, prompt_ids, ids, tokenizer.pad_token_id, batch_size=64)
        kl = kl_from_samples(policy_lp.sum, base_lp.sum)
        wins = win_rate(rewards, base_rewards)
        lengths = [len(t.split()) for row in texts for t in row]
        result = PolicyResult(float(rewards.mean()), float(rewards.std() / len(rewards) ** 0.5), kl.value,
                              kl.stderr, sum(lengths) / len(lengths), wins.value, wins.stderr, lengths=lengths)
        pair_scores = base_scores if name == "base" else score_pairs(model, tokenizer, heldout, progress=False)
        summary = evaluate_pairs(heldout, pair_scores, base_scores, beta=settings.beta)["summary"]
        result.ranking_accuracy = summary["ranking_accuracy"]["value"]
        result.ranking_accuracy_normalised = summary["ranking_accuracy_normalised"]["value"]
        result.idealized_ranking_accuracy = summary["idealized_ranking_accuracy"]["value"]
        result.implicit_reward_accuracy = summary["implicit_reward"]["accuracy"]
        results[name] = result
        for row, text in zip(samples, texts, strict=False):
            row[name] = text[0]
    return results, samples


def _rewards(prompts: Sequence[Prompt], texts: Sequence[Sequence[str]]) -> torch.Tensor:
    return torch.tensor([true_reward(p, t) for p, row in zip(prompts, texts, strict=True) for t in row],
                        dtype=torch.float64)


def _best_of_n(base_model, tokenizer, prompts, settings) -> list[dict[str, float]]:
    """Best of the first N base samples by true reward, for each N: the frontier to compare with."""
    largest = max(settings.best_of)
    _, texts = _generate(base_model, tokenizer, prompts, largest, settings, settings.seed + 5)
    rewards = torch.tensor([[true_reward(p, t) for t in row] for p, row in zip(prompts, texts, strict=True)],
                           dtype=torch.float64)  # (prompts, largest)
    out = []
    for n in settings.best_of:
        best = rewards[:, :n].max(dim=1).values
        # KL of exact best-of-n over each prompt's empirical base distribution (its distinct texts,
        # weighted by frequency): an estimate of the true BoN KL, never above the analytic bound.
        kl = [best_of_n_kl_exact(*_empirical(row, reward_row), n) for row, reward_row in zip(texts, rewards, strict=True)]
        out.append({"n": n, "reward_mean": float(best.mean()), "reward_stderr": float(best.std() / len(best) ** 0.5),
                    "kl_estimate": sum(kl) / len(kl), "kl_bound": best_of_n_kl_bound(n)})
    return out


def _empirical(texts: Sequence[str], rewards: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct texts' frequencies and rewards."""
    counts: dict[str, int] = {}
    reward_of: dict[str, float] = {}
    for text, reward in zip(texts, rewards.tolist(), strict=True):
        counts[text] = counts.get(text, 0) + 1
        reward_of[text] = reward
    total = sum(counts.values())
    keys = list(counts)
    return (torch.tensor([counts[k] / total for k in keys], dtype=torch.float64),
            torch.tensor([reward_of[k] for k in keys], dtype=torch.float64))


def _curves(out: Path, names: Sequence[str]) -> dict[str, list[dict[str, float]]]:
    curves = {}
    for name in names:
        path = out / "runs" / name / "metrics.jsonl"
        if path.exists():
            lines = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
            curves[name] = [{"step": x["step"], "loss": x["loss"]} for x in lines if x.get("split") == "train"]
    return curves
