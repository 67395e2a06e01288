"""Sampling speed: alignlab's engine against plain ``model.generate``, side by side in one run.

Run: ``.venv/bin/python bench/bench_generate.py [--model a|b] [--prompt-tokens 96] [--new-tokens 32]
[--alternations 3] [--threads 2] [--device cpu|cuda] [--out runs/bench/generate_a.json]``

Setup: the random-init Llama-style models of bench_preference.py ((a) 6.3M, (b) 91M parameters,
vocabulary 8,192, tied embeddings, sdpa attention), prompts of random token ids, fp32, no EOS
(every completion has ``--new-tokens`` tokens, so both sides generate exactly the same number).
Two workloads:

- plain sampling: 16 prompts, one sample each, in one batch;
- best-of-16: 4 prompts, 16 samples each (64 rows). ``generate`` gets
  ``num_return_sequences=16`` (it encodes each prompt 16 times); alignlab encodes each prompt once
  and repeats its KV cache.

Both sample at temperature 1 with top-k and top-p off (``generate``'s default top_k=50 is switched
off so the distributions are the same), the KV cache on, and the same batches. The two alternate
within one process, a warm-up call each first; tokens/s is generated tokens over wall time, the
median of the alternations, and the ratio alignlab / generate is printed per workload.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

MODELS = {
    "a": dict(num_hidden_layers=4, hidden_size=256, num_attention_heads=4, intermediate_size=1024),
    "b": dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=2048),
}
VOCAB = 8192
WORKLOADS = {"sample": (16, 1), "best_of_16": (4, 16)}
"""Workload → (prompts, samples per prompt)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="a")
    parser.add_argument("--prompt-tokens", type=int, default=96)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--alternations", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", help="write the results as JSON here")
    return parser.parse_args(argv)


def build_model(key: str, device: str) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, tie_word_embeddings=True, max_position_embeddings=1024,
                         bos_token_id=0, eos_token_id=1, pad_token_id=2, attn_implementation="sdpa", **MODELS[key])
    model = LlamaForCausalLM(config).to(device).eval()
    model.generation_config.eos_token_id = None  # generate: no EOS, every row runs to max_new_tokens
    return model


def prompts_of(count: int, length: int, seed: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    # Ids from 3 up: never BOS, EOS or PAD; same length, so both sides pad nothing.
    return [[0, *torch.randint(3, VOCAB, (length - 1,), generator=generator).tolist()] for _ in range(count)]


NO_EOS = -1
"""alignlab's EOS here: an id the model never emits, so every completion runs to --new-tokens
(generate gets no EOS at all)."""


def run_generate(model: Any, prompts: list[list[int]], n: int, new_tokens: int, seed: int) -> int:
    torch.manual_seed(seed)
    input_ids = torch.tensor(prompts, device=model.device)
    with torch.no_grad():
        out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), do_sample=True,
                             temperature=1.0, top_k=0, top_p=1.0, num_return_sequences=n,
                             max_new_tokens=new_tokens, pad_token_id=2)
    return int((out.shape[1] - input_ids.shape[1]) * out.shape[0])


def run_alignlab(model: Any, prompts: list[list[int]], n: int, new_tokens: int, seed: int) -> int:
    from alignlab.decode import SamplingOptions, sample

    options = SamplingOptions(max_new_tokens=new_tokens, seed=seed, batch_size=len(prompts))
    out = sample(model, prompts, n, options, eos_id=NO_EOS, pad_id=2)
    return sum(len(y) for row in out for y in row)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    model = build_model(args.model, args.device)
    params = sum(p.numel() for p in model.parameters())
    print(f"model ({args.model}) {params / 1e6:.1f}M params, prompts of {args.prompt_tokens} tokens, "
          f"{args.new_tokens} new tokens, {args.threads} threads, {args.device}", flush=True)
    tools = {"generate": run_generate, "alignlab": run_alignlab}
    results: dict[str, dict[str, Any]] = {}
    for workload, (count, n) in WORKLOADS.items():
        prompts = prompts_of(count, args.prompt_tokens, seed=1)
        for run in tools.values():  # warm-up: allocator, kernels, lazy imports
            run(model, prompts[:1], 1, 2, seed=0)
        speeds: dict[str, list[float]] = {t: [] for t in tools}
        tokens_of: dict[str, set[int]] = {t: set() for t in tools}
        for alternation in range(args.alternations):
            for tool, run in tools.items():
                if args.device == "cuda":
                    torch.cuda.synchronize()
                started = time.perf_counter()
                tokens = run(model, prompts, n, args.new_tokens, seed=alternation)
                if args.device == "cuda":
                    torch.cuda.synchronize()
                speeds[tool].append(tokens / (time.perf_counter() - started))
                tokens_of[tool].add(tokens)
        median = {t: statistics.median(v) for t, v in speeds.items()}
        if len(tokens_of["generate"] | tokens_of["alignlab"]) != 1:
            raise RuntimeError(f"{workload}: the two sides generated different token counts {tokens_of}")
        results[workload] = {"prompts": count, "n": n, "tokens": tokens_of["alignlab"].pop(),
                             "tokens_per_s": speeds, "median_tokens_per_s": median,
                             "ratio": median["alignlab"] / median["generate"]}
        print(f"{workload:>11}: generate {median['generate']:8.0f} tok/s   alignlab {median['alignlab']:8.0f} tok/s"
              f"   ratio {results[workload]['ratio']:.2f}x", flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"model": args.model, "params": params, "args": vars(args),
                                              "torch": torch.__version__, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
