"""SFT packing into fixed-length rows (train.pack_length) against unpacked batches, side by side.

Run: ``.venv/bin/python bench/bench_sft_packing.py [--model a|b] [--examples 64] [--repeats 3]``

One random-init Llama-style model of ``bench_preference.py`` and one epoch of SFT examples whose
lengths spread as chat data does (prompt 8–128 tokens, completion 8–384, log-uniform), fp32 on CPU.
Each mode runs forward + backward of the NLL over the whole epoch; the modes alternate run by run
(medians over ``--repeats`` after one warm-up each) and it prints tokens/s and ratios:

- ``padded``: micro-batches of ``--batch`` examples, right-padded (train.packing=off);
- ``batch-packed``: the same micro-batches, each one padding-free row (train.packing=on);
- ``rows``: best-fit-decreasing rows of ``--pack-length`` tokens, ``--rows`` to a micro-batch
  (train.pack_length), padded to the longest row of the micro-batch.

Real tokens are the same in every mode (the whole epoch); what differs is padding, the number of
attention calls and the shapes each call runs on.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent))
from alignlab.forward import CompletionLogps, collate_sequences  # noqa: E402
from alignlab.forward.rows import best_fit_decreasing  # noqa: E402
from bench_preference import MODELS  # noqa: E402

VOCAB = 8192


def examples(count: int, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    rng = random.Random(seed)

    def ids(low: int, high: int) -> list[int]:
        n = round(math.exp(rng.uniform(math.log(low), math.log(high))))
        return [rng.randrange(1, VOCAB) for _ in range(n)]

    return [(ids(8, 128), ids(8, 384)) for _ in range(count)]


def make_model(key: str) -> LlamaForCausalLM:
    torch.manual_seed(0)
    shape = dict(MODELS[key])
    shape.setdefault("num_key_value_heads", shape["num_attention_heads"])
    config = LlamaConfig(vocab_size=VOCAB, max_position_embeddings=2048, tie_word_embeddings=True, **shape)
    config._attn_implementation = "sdpa"
    return LlamaForCausalLM(config).float().train()


def epoch_runner(model: LlamaForCausalLM, batches: list, packing: bool) -> Callable[[], None]:
    forward = CompletionLogps(model, packing=packing)

    def run() -> None:
        for batch in batches:
            out = forward(batch)
            (-(out.sum / out.counts.clamp(min=1))).sum().backward()
        model.zero_grad(set_to_none=True)
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=("a", "b"), default="a")
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8, help="examples per unpacked micro-batch")
    parser.add_argument("--pack-length", type=int, default=1024)
    parser.add_argument("--rows", type=int, default=2, help="packed rows per micro-batch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    data = examples(args.examples)
    order = list(range(len(data)))
    random.Random(1).shuffle(order)
    unpacked = [collate_sequences([data[i] for i in order[s:s + args.batch]], pad_id=0)
                for s in range(0, len(order), args.batch)]
    bins = best_fit_decreasing([len(p) + len(c) for p, c in data], args.pack_length)
    rows = []
    for s in range(0, len(bins), args.rows):
        chosen = bins[s:s + args.rows]
        members = [i for b in chosen for i in b]
        numbers = torch.tensor([r for r, b in enumerate(chosen) for _ in b])
        rows.append(dataclasses.replace(collate_sequences([data[i] for i in members], pad_id=0), rows=numbers))
    tokens = sum(len(p) + len(c) for p, c in data)
    padded_positions = sum(b.input_ids.numel() for b in unpacked)
    row_positions = sum(len(chosen) * max(sum(len(data[i][0]) + len(data[i][1]) for i in b) for b in chosen)
                        for chosen in (bins[s:s + args.rows] for s in range(0, len(bins), args.rows)))
    model = make_model(args.model)
    modes = {"padded": epoch_runner(model, unpacked, packing=False),
             "batch-packed": epoch_runner(model, unpacked, packing=True),
             "rows": epoch_runner(model, rows, packing=True)}
    times: dict[str, list[float]] = {name: [] for name in modes}
    for run in modes.values():
        run()  # warm-up
    for _ in range(args.repeats):
        for name, run in modes.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(t) for name, t in times.items()}
    print(f"model {args.model}, {args.examples} examples, {tokens} tokens; {len(unpacked)} padded batches "
          f"({padded_positions} positions), {len(bins)} rows of <= {args.pack_length} in {len(rows)} batches "
          f"({row_positions} positions)")
    result = {}
    for name, seconds in median.items():
        speed = tokens / seconds
        result[name] = {"seconds": seconds, "tokens_per_second": speed}
        print(f"{name:>13}: {seconds:7.3f} s/epoch  {speed:9.0f} tok/s  "
              f"x{median['padded'] / seconds:.2f} vs padded")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"args": vars(args) | {"out": str(args.out)}, "tokens": tokens,
                                        "padded_positions": padded_positions, "row_positions": row_positions,
                                        "modes": result}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
