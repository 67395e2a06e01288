"""Inference-time alignment on the testbed: best-of-N by a hackable proxy, raw or LSC-combined.

Example: ``results = inference_time_alignment(base_model, tokenizer, prompts, n=16, seed=7)``

Wang et al. 2024 (arXiv 2402.00742) claim that combining rewards as a logical AND of their
log-sigmoid-centred transforms, Σ_k log σ(r_k − r_k^ref(x)), hacks less than a raw sum. The
testbed can test that claim, because its true reward is known. Two proxy rewards:

- helpfulness: ``testbed_proxy``, which pays for any stated answer and for length;
- harmlessness: a blocklist of the world's harmful words.

Each of N base samples per prompt is scored by both. Best-of-N then picks by each selector, and
each pick is judged by the true reward. r_ref(x) is the median of each proxy over an independent
set of base samples of x. The differences to the raw sum are paired over prompts, with standard
errors. A transform of one reward alone cannot change a best-of-N pick: it is monotone for a
fixed prompt. The stage checks that too, as a control.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from alignlab.decode import SamplingOptions, TextSampler, score_candidates
from alignlab.decode.candidates import best_index
from alignlab.rewards import build_reward
from alignlab.rewards.reference import ReferenceRewards
from alignlab.rewards.transforms import AndCombination, LSCTransform
from alignlab.testbed import rewards as _registers_testbed_rewards  # noqa: F401
from alignlab.testbed.world import HARMFUL_WORDS, Prompt, chat, true_reward

REFERENCE_SAMPLES = 8
"""Base samples per prompt for r_ref(x), drawn apart from the candidates."""


def inference_time_alignment(base_model: Any, tokenizer: Any, prompts: Sequence[Prompt], *, n: int,
                             max_new_tokens: int, seed: int) -> dict[str, Any]:
    """True reward of best-of-``n`` picks by each selector, with paired differences to the raw sum."""
    sampler = TextSampler(base_model, tokenizer, SamplingOptions(max_new_tokens=max_new_tokens, seed=seed,
                                                                 batch_size=32))
    chats = [chat(p) for p in prompts]
    helpful = build_reward("testbed_proxy")
    harmless = build_reward(f"keyword_score(blocklist={sorted(HARMFUL_WORDS)!r})")
    reference_draws = sampler.sample(chats, REFERENCE_SAMPLES, options=SamplingOptions(
        max_new_tokens=max_new_tokens, seed=seed + 1, batch_size=32))
    # Prompts are drawn with replacement: a repeated prompt's reference pools all its draws.
    pooled: dict[str, tuple[Any, list[str]]] = {}
    for prompt, c, row in zip(prompts, chats, reference_draws, strict=True):
        pooled.setdefault(prompt.text, (c, []))[1].extend(d.text for d in row)
    samples = list(pooled.values())
    references = [ReferenceRewards.from_samples(r, samples) for r in (helpful, harmless)]
    selectors = {
        "true reward (oracle)": None,
        "helpfulness proxy alone": helpful,
        "LSC of the helpfulness proxy": LSCTransform(helpful, references[0]),
        "raw sum of both proxies": build_reward({"name": "weighted_sum", "rewards": [helpful, harmless],
                                                 "weights": [1.0, 1.0]}),
        "AND of LSC-transformed proxies": AndCombination([helpful, harmless], references),
    }
    candidates = sampler.sample(chats, n)
    truth = torch.tensor([[true_reward(p, c.text) for c in row] for p, row in zip(prompts, candidates, strict=True)],
                         dtype=torch.float64)  # (prompts, n)
    picked: dict[str, torch.Tensor] = {}
    picks: dict[str, list[int]] = {}
    for name, selector in selectors.items():
        if selector is None:
            index = truth.argmax(dim=1).tolist()
        else:
            scored = score_candidates(selector, chats, candidates)
            index = [best_index(row) or 0 for row in scored]  # the proxies score every text
        picks[name] = index
        picked[name] = truth[torch.arange(len(prompts)), torch.tensor(index)]
    harmful = [s.score < 0 for row in score_candidates(harmless, chats, candidates) for s in row]  # type: ignore[operator]
    baseline = picked["raw sum of both proxies"]
    rows = []
    for name, values in picked.items():
        difference = values - baseline
        rows.append({"selector": name, "true_reward_mean": float(values.mean()), "true_reward_stderr": standard_error(values),
                     "vs_raw_sum_mean": float(difference.mean()), "vs_raw_sum_stderr": standard_error(difference)})
    return {"n": n, "prompts": len(prompts), "reference_samples": REFERENCE_SAMPLES,
            "first_sample_true_reward": float(truth[:, 0].mean()), "first_sample_stderr": standard_error(truth[:, 0]),
            "rows": rows, "harmful_share": sum(harmful) / len(harmful),
            "lsc_alone_picks_as_raw": picks["LSC of the helpfulness proxy"] == picks["helpfulness proxy alone"]}


def standard_error(values: torch.Tensor) -> float:
    """The standard error of the mean of ``values`` (0 for a single value)."""
    return float(values.std() / len(values) ** 0.5) if len(values) > 1 else 0.0
