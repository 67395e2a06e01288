"""The pieces of alignlab's fast path against the plain path, side by side, on one batch.

Run: ``.venv/bin/python bench/bench_fast_path.py [--model a|b] [--repeats 3] [--threads 2]``

One random-init Llama-style model of ``bench_preference.py`` (tied embeddings, vocab 8,192) and
one DPO batch of 8 pairs (prompt ≈ 64, completions ≈ 64 tokens, ±25%), fp32 on CPU. Alternating,
with medians over ``--repeats`` timed runs after one warm-up each, it prints:

- forward + backward of the batch's completion log-probs: the plain padded path
  (``packing=False``: the model's own layers on 16 right-padded rows) against the packed path
  (each prompt once, no padding, lean norms and MLPs), and the same without gradients (a
  reference pass);
- positions the backbone runs on each path;
- bytes autograd keeps for the backward on the packed path with and without the lean layers;
- gradient checkpointing (``train.gradient_checkpointing``) on the packed path: time of forward +
  backward and bytes kept for the backward, against the same path without it;
- one AdamW step over the model's parameters: the single-tensor loop (``torch.optim.AdamW``'s
  CPU default) against the fused kernel the trainer uses;
- collating the batch and building its packed layout (the Python side of a step).
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from alignlab.forward import (
    CompletionLogps,  # noqa: E402
    collate_sequences,  # noqa: E402
)
from alignlab.forward.checkpointing import enable_gradient_checkpointing  # noqa: E402
from alignlab.forward.lean import lean_layers, lean_modules  # noqa: E402
from alignlab.forward.packing import pack, packed_hidden  # noqa: E402
from bench_preference import MODELS  # noqa: E402

VOCAB, PAIRS = 8192, 8


def batch_of_pairs(seed: int = 0) -> list[tuple[list[int], list[int]]]:
    rng = random.Random(seed)

    def ids() -> list[int]:
        return [rng.randrange(VOCAB) for _ in range(round(64 * rng.uniform(0.75, 1.25)))]

    prompts = [ids() for _ in range(PAIRS)]
    return [(p, ids()) for p in prompts] + [(p, ids()) for p in prompts]  # chosen, then rejected


def timed(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def alternate(named: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each function, the functions interleaved run by run."""
    runs: dict[str, list[float]] = {name: [] for name in named}
    for fn in named.values():
        fn()  # warm-up
    for _ in range(repeats):
        for name, fn in named.items():
            start = time.perf_counter()
            fn()
            runs[name].append(time.perf_counter() - start)
    return {name: statistics.median(times) for name, times in runs.items()}


def saved_bytes(run: Callable[[], object]) -> int:
    storages: dict[int, int] = {}

    def keep(t: torch.Tensor) -> torch.Tensor:
        if not isinstance(t, torch.nn.Parameter):
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        run()
    return sum(storages.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=("a", "b"), default="b")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, tie_word_embeddings=True, **MODELS[args.model])).float()
    rows = batch_of_pairs()
    batch = collate_sequences(rows, pad_id=0)
    plain, packed = CompletionLogps(model, packing=False), CompletionLogps(model, packing=True)

    def train_pass(forward: CompletionLogps) -> Callable[[], None]:
        def run() -> None:
            forward(batch).sum.sum().backward()
            model.zero_grad(set_to_none=True)
        return run

    def reference_pass(forward: CompletionLogps) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad():
                forward(batch)
        return run

    params = sum(p.numel() for p in model.parameters())
    print(f"model ({args.model}) {params / 1e6:.1f}M params, {PAIRS} pairs, fp32, {args.threads} threads, "
          f"median of {args.repeats} alternating runs\n")
    grad = alternate({"plain": train_pass(plain), "packed": train_pass(packed)}, args.repeats)
    nograd = alternate({"plain": reference_pass(plain), "packed": reference_pass(packed)}, args.repeats)
    layout = pack(batch)
    print("| pass | plain | packed | packed / plain |\n|---|---|---|---|")
    print(f"| forward + backward | {grad['plain']:.3f} s | {grad['packed']:.3f} s | {grad['packed'] / grad['plain']:.2f}× |")
    print(f"| forward, no gradients | {nograd['plain']:.3f} s | {nograd['packed']:.3f} s | "
          f"{nograd['packed'] / nograd['plain']:.2f}× |")
    print(f"| positions through the backbone | {batch.input_ids.numel()} | {layout.positions} | "
          f"{layout.positions / batch.input_ids.numel():.2f}× |")

    backbone = model.model

    def packed_forward(modules: list) -> Callable[[], None]:
        def run() -> None:
            with lean_layers(modules):
                packed_hidden(backbone, pack(batch))
        return run

    kept, lean = saved_bytes(packed_forward([])), saved_bytes(packed_forward(lean_modules(model)))
    print(f"| saved for the backward (packed) | {kept / 2**30:.2f} GiB | lean: {lean / 2**30:.2f} GiB | "
          f"{lean / kept:.2f}× |")

    checkpointed_model = copy.deepcopy(model).train()
    enable_gradient_checkpointing(checkpointed_model)
    checkpointed = CompletionLogps(checkpointed_model, packing=True)

    def kept_by(forward: CompletionLogps) -> int:
        return saved_bytes(lambda: forward(batch).sum.sum())

    model.train()
    timing = alternate({"packed": train_pass(packed), "checkpointed": train_pass(checkpointed)}, args.repeats)
    checkpointed_model.zero_grad(set_to_none=True)
    kept_packed, kept_checkpointed = kept_by(packed), kept_by(checkpointed)
    print(f"| gradient checkpointing (packed), forward + backward | {timing['packed']:.3f} s | "
          f"checkpointed: {timing['checkpointed']:.3f} s | {timing['checkpointed'] / timing['packed']:.2f}× |")
    print(f"| gradient checkpointing (packed), saved for the backward | {kept_packed / 2**30:.3f} GiB | "
          f"checkpointed: {kept_checkpointed / 2**30:.3f} GiB | {kept_checkpointed / kept_packed:.2f}× |")

    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    loop = torch.optim.AdamW(model.parameters(), lr=1e-9)
    fused = torch.optim.AdamW(model.parameters(), lr=1e-9, fused=True)
    steps = alternate({"loop": loop.step, "fused": fused.step}, args.repeats)
    print(f"| AdamW step | loop {steps['loop']:.3f} s | fused {steps['fused']:.3f} s | "
          f"{steps['fused'] / steps['loop']:.2f}× |")
    python_side = timed(lambda: pack(collate_sequences(rows, pad_id=0)).attention_masks(), args.repeats * 10)
    print(f"| collate + packed layout | | {1e3 * python_side:.1f} ms | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
