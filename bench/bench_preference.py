"""DPO training speed and memory: alignlab against TRL's DPOTrainer, side by side.

Run: ``.venv/bin/python bench/bench_preference.py [--model a|b|smollm2|qwen2.5-0.5b] [--steps N]
[--pairs N] [--alternations N] [--threads N] [--tools ...] [--device cpu|cuda] [--dtype fp32|bf16]
[--out runs/bench/preference.json]``

Needs the bench extra (``pip install -e '.[bench]'``: TRL is only a baseline, never imported by
alignlab itself). Setup: a byte-level BPE tokenizer with a
vocabulary of 8,192 trained here on synthetic text; a random-init Llama-style model with tied
embeddings, (a) 4 layers, hidden 256, 4 heads, intermediate 1024 (6.3M parameters) or (b) 12
layers, hidden 768, 12 heads, intermediate 2048 (91M), saved once to a temporary folder so every
run loads the same weights; 512 synthetic pairs (prompt ≈ 64, completions ≈ 64 tokens, ±25%)
written as TRL-standard prompt/chosen/rejected JSONL that both tools read.

DPO sigmoid (Rafailov et al., 2023, arXiv:2305.18290), β = 0.1, batch 8 pairs, lr 1e-6 linear
decay, no warm-up, grad-norm clip 1.0, AdamW without weight decay (the fused kernel for both
tools), fp32 on CPU for both: TRL's ``DPOConfig`` defaults to bf16 autocast and gradient
checkpointing even on CPU, both switched off here (``--device cuda --dtype bf16``: bf16 autocast
for both, float32 weights; the SmolLM2-135M and Qwen2.5-0.5B shapes are for that, with peak GPU
memory and MFU reported). No evaluation, no logging, no checkpoints for TRL; alignlab always
writes its final checkpoint and model (counted in its wall time).

TRL runs with its fastest options that keep fp32 and the same loss, update and batches
(:func:`trl_settings`, recorded in the results JSON and printed under the table):

- ``optim=adamw_torch_fused``: torch's fused AdamW kernel (on CPU since torch 2.4), the same
  update as alignlab's optimizer and transformers' own default for torch >= 2.8;
- ``attn_implementation=sdpa``: PyTorch's scaled-dot-product attention, the fastest kernel that
  runs on a CPU (FlashAttention is CUDA-only), the one alignlab's forward uses too;
- ``precompute_ref_batch_size=32`` (trl_precompute): the reference pass in batches of 32 pairs
  (64 sequences, as alignlab builds its reference cache), a no-grad forward, so the same
  log-probabilities; TRL documents it as the way to speed that pass up;
- ``gradient_checkpointing=False``, ``bf16=False`` on CPU: recomputation and autocast only cost
  time there (and bf16 would not be fp32);
- ``dataloader_pin_memory`` only with ``--device cuda``: there is nothing to pin for a CPU run
  (transformers unpins it itself under ``use_cpu``);
- a datasets cache of its own per run, so TRL tokenizes and (trl_precompute) computes its
  reference log-probabilities in every run, as alignlab builds its cache afresh in every run;
  with the shared default cache, later alternations would silently reuse the first one's.

Options considered and left off:

- ``padding_free``: TRL 1.16's DPOTrainer ignores it (it warns and falls back to padding since
  its DPO rewrite), and it was only ever supported with FlashAttention 2/3, not sdpa on a CPU;
- ``use_liger_kernel``: Liger's Triton kernels are GPU-only (and TRL deprecates the flag for Hub
  kernels, a download; these runs are offline);
- ``torch_compile``: inductor's compile time (tens of seconds, again for new padded lengths)
  would land in runs of a few dozen steps, and alignlab runs eager: it would time the compiler;
- ``dataloader_num_workers`` > 0 (with persistent workers, prefetch): the collator only pads 16
  pre-tokenized lists, far under a millisecond against a step of tenths of a second, while
  worker processes would take cores from the ``--threads`` torch threads and keep memory outside
  the child's peak RSS;
- ``dataset_num_proc``: tokenizing a few hundred pairs takes about a second; worker processes
  cost more to start than they save;
- ``train_sampling_strategy=group_by_length``: less padding, but batches of pairs of alike length
  instead of uniform random ones, a different training run;
- ``pad_to_multiple_of`` (None, TRL's CPU default) and ``max_length=1024`` with ``keep_start``
  truncation (pairs are ~130 tokens, nothing is cut; alignlab has the same limit): padding more
  only adds work, a lower limit would change the data;
- ``activation_offloading``: moves activations from GPU to CPU memory, nothing to gain on a CPU;
- ``torch.set_float32_matmul_precision("high"/"medium")``: lets matmuls run in TF32/bf16, not fp32;
- ``precompute_ref_log_probs``: measured on its own, as the trl_precompute tool.

Each run is its own subprocess, so peak RSS (VmHWM) is per tool; the tools (:data:`TOOLS`)
alternate, repeated ``--alternations`` times. Reported per tool (medians over alternations):

- s/step: median optimizer-step time over steps after a 2-step warm-up (alignlab: ``seconds``
  in metrics.jsonl; TRL: the time between consecutive ``on_step_end`` callbacks);
- tokens/s: prompt + chosen + rejected tokens of an average batch of 8 pairs (the same count for
  both tools, from the shared tokenizer, BOS and EOS included) divided by s/step;
- wall: the whole run in the child (data tokenization, model and reference load, any reference
  precompute, the steps, alignlab's final save); "epoch" extrapolates it to one epoch
  (pairs / 8 steps) as wall + (epoch steps − steps run) × s/step;
- peak RSS of the child process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MODELS = {
    "a": dict(num_hidden_layers=4, hidden_size=256, num_attention_heads=4, intermediate_size=1024),
    "b": dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=2048),
    # GPU shapes (random init, vocabulary as the real model's; the tokenizer uses its first 8,192 ids)
    "smollm2": dict(num_hidden_layers=30, hidden_size=576, num_attention_heads=9, num_key_value_heads=3,
                    intermediate_size=1536, vocab_size=49152),
    "qwen2.5-0.5b": dict(architecture="qwen2", num_hidden_layers=24, hidden_size=896, num_attention_heads=14,
                         num_key_value_heads=2, intermediate_size=4864, vocab_size=151936),
}
TOOLS = ("alignlab", "alignlab_copy", "trl", "trl_precompute")
"""alignlab as configured by default (reference "auto": the persistent cache, built in the run;
packing on), alignlab with a frozen reference copy, TRL's DPOTrainer as is and with
precompute_ref_log_probs=True."""
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0}
"""Dense bf16 peak of the card (NVIDIA data sheets, SXM parts), for model FLOPs utilisation."""
BATCH, BETA, LR, WARMUP_STEPS, VOCAB = 8, 0.1, 1e-6, 2, 8192
PRECOMPUTE_REF_BATCH = 32
"""TRL's reference precompute batch, in pairs: 64 sequences, the batch alignlab builds its cache in."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="a")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per run (>= 4)")
    parser.add_argument("--pairs", type=int, default=512)
    parser.add_argument("--alternations", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32",
                        help="bf16: autocast with float32 weights, for both tools")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the chip's dense bf16 peak for MFU (default: looked up from the CUDA device name)")
    parser.add_argument("--tools", default=",".join(TOOLS), help="comma-separated subset of " + ",".join(TOOLS))
    parser.add_argument("--out", default="runs/bench/preference.json")
    parser.add_argument("--workdir", default=None, help="keep the model, tokenizer, data and runs here "
                        "(default: a temporary folder, removed at the end)")
    parser.add_argument("--child", choices=TOOLS, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ---- setup: tokenizer, model, data ----------------------------------------------------------------

def synthetic_words(rng: random.Random, n: int) -> list[str]:
    syllables = [c + v for c in "bcdfghjklmnprstvwz" for v in ("a", "e", "i", "o", "u", "ai", "ou")]
    words = set()
    while len(words) < n:
        words.add("".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))))
    return sorted(words)


def sentence(rng: random.Random, words: list[str], weights: list[float], n: int) -> str:
    text = " ".join(rng.choices(words, weights, k=n))
    return text[0].upper() + text[1:] + rng.choice([".", "?", "!", ","])


def prepare(workdir: Path, model_key: str, pairs: int, seed: int = 0) -> dict[str, Any]:
    """Tokenizer + random model + JSONL pairs in ``workdir``; returns token statistics."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    from alignlab.models.tokenizers import train_bpe_tokenizer

    rng = random.Random(seed)
    words = synthetic_words(rng, 6000)
    weights = [1.0 / (rank + 1) for rank in range(len(words))]  # Zipf-like
    corpus = [" ".join(sentence(rng, words, weights, rng.randint(5, 20)) for _ in range(5)) for _ in range(20000)]
    tokenizer = train_bpe_tokenizer(corpus, vocab_size=VOCAB)
    model_dir = workdir / f"model_{model_key}"
    shape = dict(MODELS[model_key])
    config_class, model_class = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}[
        shape.pop("architecture", "llama")]
    shape.setdefault("num_key_value_heads", shape["num_attention_heads"])
    shape.setdefault("vocab_size", len(tokenizer))
    config = config_class(max_position_embeddings=2048, tie_word_embeddings=True,
                          bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                          pad_token_id=tokenizer.pad_token_id, **shape)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config).to(torch.float32)
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    params = sum(p.numel() for p in model.parameters())

    def text_of(tokens: int) -> str:  # a text of about `tokens` tokens (without BOS/EOS)
        long = " ".join(sentence(rng, words, weights, rng.randint(5, 20)) for _ in range(tokens))
        ids = tokenizer(long, add_special_tokens=False)["input_ids"][:tokens]
        return tokenizer.decode(ids).strip()

    def length() -> int:
        return round(64 * rng.uniform(0.75, 1.25))

    data = workdir / "pairs.jsonl"
    counts = []
    with open(data, "w", encoding="utf-8") as handle:
        for _ in range(pairs):
            prompt, chosen, rejected = text_of(length()), " " + text_of(length()), " " + text_of(length())
            handle.write(json.dumps({"prompt": prompt, "chosen": chosen, "rejected": rejected}) + "\n")
            p = len(tokenizer(prompt)["input_ids"])  # with BOS
            c = len(tokenizer(chosen, add_special_tokens=False)["input_ids"]) + 1  # + EOS
            r = len(tokenizer(rejected, add_special_tokens=False)["input_ids"]) + 1
            counts.append((p, c, r))
    mean = [statistics.mean(x[i] for x in counts) for i in range(3)]
    return {"model_dir": str(model_dir), "data": str(data), "params": params, "vocab": config.vocab_size,
            "mean_prompt_tokens": mean[0], "mean_chosen_tokens": mean[1], "mean_rejected_tokens": mean[2],
            "tokens_per_pair": sum(mean), "tokens_per_step": BATCH * sum(mean)}


# ---- children: one training run each -------------------------------------------------------------

def peak_rss_bytes() -> int:
    with open("/proc/self/status", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_alignlab(setup: dict[str, Any], args: argparse.Namespace, out_dir: Path, reference: str) -> list[float]:
    """``reference="auto"`` (the default: the persistent cache) builds the cache afresh in this run,
    in a folder of its own, so its build is in the wall time like TRL's precompute pass; later
    runs and sweeps would reuse it."""
    from rich.console import Console

    from alignlab.config import RunConfig, from_dict
    from alignlab.train.run import run_training

    config = from_dict(RunConfig, {
        "data": {"path": setup["data"]},
        "model": {"name_or_path": setup["model_dir"], "dtype": "float32"},
        "tokenize": {"max_length": 1024},
        "train": {"loss": "dpo", "loss_kwargs": {"beta": BETA}, "lr": LR, "batch_size": BATCH,
                  "max_steps": args.steps, "schedule": "linear", "warmup_ratio": 0.0, "reference": reference,
                  "cache_dir": str(out_dir / "cache"),
                  "precision": args.dtype, "max_grad_norm": 1.0, "device": args.device, "log_every": 1,
                  "output_dir": str(out_dir), "seed": 0},
    })
    run_training(config, console=Console(quiet=True))
    records = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["seconds"] for r in records if r.get("split") == "train"]


TRL_CHOICES = (
    ("optim", "torch's fused AdamW kernel, the same update as alignlab's optimizer"),
    ("attn_implementation", "the fastest attention that runs on a CPU (FlashAttention is CUDA-only)"),
    ("precompute_ref_batch_size", "trl_precompute's no-grad reference pass in 64-sequence batches, as alignlab's cache"),
    ("gradient_checkpointing", "recomputing activations only costs time"),
    ("dataloader_num_workers", "collating 16 tokenized lists is sub-millisecond; workers would take the torch threads' cores"),
    ("fresh_datasets_cache", "TRL tokenizes (and precomputes) in every run, as alignlab builds its cache in every run"),
)
"""The TRL settings named under the table, each with why (the module docstring has the long form)."""
TRL_LEFT_OFF = (
    ("padding_free", "ignored by TRL's DPOTrainer (falls back to padding) and FlashAttention-only"),
    ("use_liger_kernel", "Triton kernels, GPU-only"),
    ("torch_compile", "compile time would swamp runs of a few dozen steps; alignlab runs eager"),
    ("group_by_length", "length-grouped batches are a different training run"),
    ("dataset_num_proc", "process start-up costs more than tokenizing a few hundred pairs"),
)
"""TRL speed options not used, each with why."""


def trl_settings(device: str) -> dict[str, Any]:
    """TRL's speed options used for both TRL tools (see the module docstring for why each);
    ``precompute_ref_batch_size`` only acts with ``precompute_ref_log_probs=True``."""
    return {"optim": "adamw_torch_fused", "attn_implementation": "sdpa",
            "precompute_ref_batch_size": PRECOMPUTE_REF_BATCH, "gradient_checkpointing": False,
            "dataloader_num_workers": 0, "dataloader_pin_memory": device == "cuda", "dataset_num_proc": None,
            "padding_free": False, "use_liger_kernel": False, "torch_compile": False,
            "train_sampling_strategy": "random", "max_length": 1024, "truncation_mode": "keep_start",
            "pad_to_multiple_of": None, "fresh_datasets_cache": True}


def trl_notes(settings: dict[str, Any]) -> list[str]:
    """Lines naming TRL's optimizer and speed options, each with why, printed under the table."""
    head = ", ".join(f"{key}={settings[key]}" for key, _ in TRL_CHOICES)
    return [f"TRL: {head} (fp32 on CPU, the same DPO loss and AdamW update as alignlab)",
            *(f"- {key}={settings[key]}: {why}" for key, why in TRL_CHOICES),
            "- left off: " + "; ".join(f"{key} ({why})" for key, why in TRL_LEFT_OFF)]


def run_trl(setup: dict[str, Any], args: argparse.Namespace, out_dir: Path,
            precompute: bool) -> tuple[list[float], dict[str, Any]]:
    """The step times, and what TRL actually ran with (optimizer class, fused, attention)."""
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    settings = trl_settings(args.device)

    class StepTimes(TrainerCallback):
        def __init__(self) -> None:
            self.begin, self.ends = None, []

        def on_step_begin(self, args, state, control, **kwargs):
            if self.begin is None:
                self.begin = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.perf_counter())

    # A datasets cache of this run's own: TRL's tokenized data and precomputed reference log-probs are
    # cached there, and a shared cache would hand later alternations the first run's work.
    dataset = load_dataset("json", data_files=setup["data"], split="train", cache_dir=str(out_dir / "datasets"))
    tokenizer = AutoTokenizer.from_pretrained(setup["model_dir"])
    model = AutoModelForCausalLM.from_pretrained(setup["model_dir"], dtype=torch.float32,
                                                 attn_implementation=settings["attn_implementation"])
    config = DPOConfig(
        output_dir=str(out_dir), beta=BETA, loss_type=["sigmoid"], learning_rate=LR,
        per_device_train_batch_size=BATCH, gradient_accumulation_steps=1, max_steps=args.steps,
        lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, optim=settings["optim"],
        bf16=args.dtype == "bf16", fp16=False, gradient_checkpointing=settings["gradient_checkpointing"],
        use_cpu=args.device == "cpu", max_length=settings["max_length"], truncation_mode=settings["truncation_mode"],
        pad_to_multiple_of=settings["pad_to_multiple_of"], padding_free=settings["padding_free"],
        dataset_num_proc=settings["dataset_num_proc"], use_liger_kernel=settings["use_liger_kernel"],
        torch_compile=settings["torch_compile"], train_sampling_strategy=settings["train_sampling_strategy"],
        precompute_ref_log_probs=precompute, precompute_ref_batch_size=settings["precompute_ref_batch_size"],
        eval_strategy="no", save_strategy="no", logging_strategy="no", report_to=[], disable_tqdm=True,
        dataloader_num_workers=settings["dataloader_num_workers"],
        dataloader_pin_memory=settings["dataloader_pin_memory"], seed=0)
    timer = StepTimes()
    trainer = DPOTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                         callbacks=[timer])
    trainer.train()
    marks = [timer.begin, *timer.ends]
    group = trainer.optimizer.param_groups[0]
    used = {"optimizer": type(getattr(trainer.optimizer, "optimizer", trainer.optimizer)).__name__,
            "fused": bool(group.get("fused")), "foreach": group.get("foreach"),
            "attn_implementation": trainer.model.config._attn_implementation}
    return [b - a for a, b in zip(marks, marks[1:], strict=False)], used


def child(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads)
    setup = json.loads(Path(args.workdir, "setup.json").read_text())
    out_dir = Path(tempfile.mkdtemp(prefix=f"bench_{args.child}_", dir=args.workdir))
    started = time.perf_counter()
    used: dict[str, Any] = {}
    if args.child.startswith("alignlab"):
        seconds = run_alignlab(setup, args, out_dir, "copy" if args.child == "alignlab_copy" else "auto")
    else:
        seconds, used = run_trl(setup, args, out_dir, precompute=args.child == "trl_precompute")
    wall = time.perf_counter() - started
    gpu_peak = torch.cuda.max_memory_allocated() if args.device == "cuda" else None
    Path(args.result).write_text(json.dumps({"tool": args.child, "step_seconds": seconds, "wall_s": wall,
                                             "peak_rss_bytes": peak_rss_bytes(), "peak_gpu_bytes": gpu_peak,
                                             "threads": torch.get_num_threads(), **used}))
    return 0


# ---- parent: alternate, summarise, print ---------------------------------------------------------

def summarise(runs: list[dict[str, Any]], setup: dict[str, Any], args: argparse.Namespace,
              peak_flops: float | None) -> dict[str, Any]:
    per_run = []
    for run in runs:
        steady = run["step_seconds"][WARMUP_STEPS:] or run["step_seconds"]
        per_run.append({"s_per_step": statistics.median(steady), "wall_s": run["wall_s"],
                        "peak_rss_gib": run["peak_rss_bytes"] / 2**30,
                        "peak_gpu_gib": (run.get("peak_gpu_bytes") or 0) / 2**30})
    s = statistics.median(r["s_per_step"] for r in per_run)
    wall = statistics.median(r["wall_s"] for r in per_run)
    epoch_steps = -(-args.pairs // BATCH)
    out = {"s_per_step": s, "tokens_per_s": setup["tokens_per_step"] / s, "wall_s": wall,
           "epoch_wall_s_estimate": wall + (epoch_steps - args.steps) * s,
           "peak_rss_gib": statistics.median(r["peak_rss_gib"] for r in per_run), "runs": per_run}
    if args.device == "cuda":
        out["peak_gpu_gib"] = statistics.median(r["peak_gpu_gib"] for r in per_run)
        # Model FLOPs of the useful tokens (each prompt once, no padding): 6 × params × tokens.
        out["mfu"] = 6 * setup["params"] * setup["tokens_per_step"] / s / peak_flops if peak_flops else None
    return out


def table(summary: dict[str, dict[str, Any]], steps: int, trl: dict[str, Any] | None = None) -> str:
    """The results table, the ratio table, and (with TRL tools and their ``trl`` settings) a line
    naming TRL's optimizer and speed options."""
    gpu = any("mfu" in r for r in summary.values())
    extra = " peak GPU memory | MFU |" if gpu else ""
    rows = [f"| tool | s/step | tokens/s | wall ({steps} steps) | epoch wall (est.) | peak RSS |{extra}",
            "|---|---|---|---|---|---|" + ("---|---|" if gpu else "")]
    for tool, r in summary.items():
        cells = ""
        if gpu:
            mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") else "n/a"
            cells = f" {r['peak_gpu_gib']:.2f} GiB | {mfu} |"
        rows.append(f"| {tool} | {r['s_per_step']:.3f} | {r['tokens_per_s']:,.0f} | {r['wall_s']:.1f} s | "
                    f"{r['epoch_wall_s_estimate']:.1f} s | {r['peak_rss_gib']:.2f} GiB |{cells}")
    ours = [t for t in summary if t.startswith("alignlab")]
    memory = "peak GPU memory" if gpu else "peak RSS"
    if ours:
        rows += ["", f"| alignlab / baseline | tokens/s (speed-up) | s/step | epoch wall | {memory} |",
                 "|---|---|---|---|---|"]
    for name in ours:
        a = summary[name]
        key = "peak_gpu_gib" if gpu else "peak_rss_gib"
        for tool, r in summary.items():
            if tool.startswith("trl"):
                rows.append(f"| {name} vs {tool} | {a['tokens_per_s'] / r['tokens_per_s']:.2f}× | "
                            f"{a['s_per_step'] / r['s_per_step']:.2f}× | "
                            f"{a['epoch_wall_s_estimate'] / r['epoch_wall_s_estimate']:.2f}× | "
                            f"{a[key] / r[key]:.2f}× |")
    if trl is not None and any(tool.startswith("trl") for tool in summary):
        rows += ["", *trl_notes(trl)]
    return "\n".join(rows)


def peak_bf16_flops(args: argparse.Namespace) -> tuple[float | None, str]:
    """The chip's dense bf16 peak (FLOP/s) and its name; (None, name) when unknown."""
    if args.device != "cuda":
        return None, platform.processor() or platform.machine()
    import torch

    name = torch.cuda.get_device_name()
    if args.peak_tflops:
        return args.peak_tflops * 1e12, name
    known = [tflops for key, tflops in PEAK_BF16_TFLOPS.items() if key in name]
    return (known[0] * 1e12 if known else None), name


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "machine": platform.machine(), "cpus": str(os.cpu_count())}
    for name in ("torch", "transformers", "trl", "alignlab"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "missing"
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child(args)
    import torch

    torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_preference: --device cuda but no CUDA device is visible", file=sys.stderr)
        return 2
    if args.steps < WARMUP_STEPS + 2:
        print("bench_preference: --steps must be at least 4", file=sys.stderr)
        return 2
    tools = [t for t in args.tools.split(",") if t]
    if any(t.startswith("trl") for t in tools):
        try:
            import trl  # noqa: F401
        except ImportError:
            print("bench_preference: TRL is not installed; run: pip install -e '.[bench]'", file=sys.stderr)
            return 1
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_preference_"))
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    setup = prepare(workdir, args.model, args.pairs)
    (workdir / "setup.json").write_text(json.dumps(setup))
    print(f"setup in {time.perf_counter() - started:.0f} s: model ({args.model}) {setup['params'] / 1e6:.1f}M params, "
          f"vocab {setup['vocab']}, {args.pairs} pairs, {setup['tokens_per_pair']:.1f} tokens per pair "
          f"(prompt {setup['mean_prompt_tokens']:.1f}, chosen {setup['mean_chosen_tokens']:.1f}, "
          f"rejected {setup['mean_rejected_tokens']:.1f}); {workdir}", flush=True)
    runs: dict[str, list[dict[str, Any]]] = {t: [] for t in tools}
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
           "WANDB_DISABLED": "true"}
    for alternation in range(args.alternations):
        for tool in tools:
            result = workdir / f"result_{tool}_{alternation}.json"
            command = [sys.executable, __file__, "--child", tool, "--workdir", str(workdir), "--steps",
                       str(args.steps), "--threads", str(args.threads), "--device", args.device,
                       "--dtype", args.dtype, "--result", str(result)]
            t0 = time.perf_counter()
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"{tool} failed (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}",
                      file=sys.stderr)
                return 1
            run = json.loads(result.read_text())
            runs[tool].append(run)
            steady = statistics.median(run["step_seconds"][WARMUP_STEPS:])
            print(f"[{alternation + 1}/{args.alternations}] {tool}: {steady:.3f} s/step, wall {run['wall_s']:.1f} s, "
                  f"peak RSS {run['peak_rss_bytes'] / 2**30:.2f} GiB ({time.perf_counter() - t0:.0f} s)"
                  + (f"; {run['optimizer']} fused={run['fused']}, {run['attn_implementation']}" if "optimizer" in run
                     else ""), flush=True)
    peak, chip = peak_bf16_flops(args)
    summary = {tool: summarise(rs, setup, args, peak) for tool, rs in runs.items()}
    trl = trl_settings(args.device) if any(t.startswith("trl") for t in tools) else None
    text = table(summary, args.steps, trl)
    info = {**versions(), "chip": chip}
    where = f"CUDA ({chip})" if args.device == "cuda" else f"CPU {args.threads} threads"
    print(f"\nDPO sigmoid β={BETA}, batch {BATCH} pairs, {args.dtype}, {where}, model ({args.model}) "
          f"{setup['params'] / 1e6:.1f}M params, {args.steps} steps × {args.alternations} alternations; "
          f"torch {info['torch']}, transformers {info['transformers']}, trl {info['trl']}\n")
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": {k: v for k, v in vars(args).items() if k not in ("child", "result")},
                               "setup": {k: v for k, v in setup.items() if k not in ("model_dir", "data")},
                               "versions": info, "trl_settings": trl, "summary": summary, "raw": runs,
                               "table": text}, indent=2) + "\n")
    print(f"\nwritten: {out}")
    if args.workdir is None:  # a temporary folder of ours: models, data, run directories
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
