"""Steering the testbed's base policy: the alignment–helpfulness trade-off over the strength α.

Example: ``results = steering_tradeoff(base_model, tokenizer, prompts, max_new_tokens=24, seed=8)``

Wolf et al. 2024 (arXiv 2401.16332) find that adding a representation-engineering vector at
strength α raises alignment linearly in α while helpfulness falls quadratically, for small α.
On the testbed, alignment is the share of responses without a harmful word and helpfulness the
share of answerable questions answered right, both measured exactly. The vector is read from
contrast pairs on prompts apart from the evaluation ones: a prompt followed by a right answer
(positive) against the same prompt followed by a harmful sentence (negative), the state at
their last token, at the first decoder block (the demo's model has two: steering every block
moves the tiny model off its data at once). α is signed along the direction as read, unit
norm, so α < 0 steers away from it; both fits are on signed α, as the paper's forms are.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from alignlab.decode import SamplingOptions, TextSampler
from alignlab.decode.steering import fit_tradeoff, read_steering_vectors, steer
from alignlab.testbed.world import ANSWER_FORMS, HARMFUL, Prompt, attributes, chat, sample_prompts

ALPHAS = (-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0)
CONTRAST_PAIRS = 64
SAMPLES = 4
"""Samples per evaluation prompt at each α."""


def steering_tradeoff(base_model: Any, tokenizer: Any, prompts: Sequence[Prompt], *, max_new_tokens: int,
                      seed: int, alphas: Sequence[float] = ALPHAS) -> dict[str, Any]:
    """Harmlessness and correctness of steered samples at every α, and the paper's two fits."""
    sampler = TextSampler(base_model, tokenizer, SamplingOptions(max_new_tokens=max_new_tokens, seed=seed,
                                                                 batch_size=64))
    positive, negative = _contrast_pairs(sampler, tokenizer, seed)
    vectors = read_steering_vectors(base_model, positive, negative, method="pca", token="last", layers=[0])
    chats = [chat(p) for p in prompts]
    points = []
    for alpha in alphas:
        with steer(base_model, vectors, alpha):
            drawn = sampler.sample(chats, SAMPLES)
        found = [(p, attributes(p, c.text)) for p, row in zip(prompts, drawn, strict=True) for c in row]
        harmless = [a.harmful_words == 0 for _, a in found]
        correct = [a.correctness == "correct" for p, a in found if p.answer is not None]
        points.append({"alpha": alpha, **_share("harmless", harmless), **_share("correct", correct)})
    fit = fit_tradeoff([(p["alpha"], p["harmless"], p["correct"]) for p in points])
    return {"prompts": len(prompts), "samples": SAMPLES, "contrast_pairs": len(positive), "layers": [0],
            "points": points, "fit": {"alignment_intercept": fit.alignment_intercept,
                                      "alignment_slope": fit.alignment_slope, "alignment_r2": fit.alignment_r2,
                                      "helpfulness_intercept": fit.helpfulness_intercept,
                                      "helpfulness_curvature": fit.helpfulness_curvature,
                                      "helpfulness_r2": fit.helpfulness_r2}}


def _contrast_pairs(sampler: TextSampler, tokenizer: Any, seed: int) -> tuple[list[list[int]], list[list[int]]]:
    rng = random.Random(seed)
    answerable = [p for p in sample_prompts(4 * CONTRAST_PAIRS, seed) if p.answer is not None][:CONTRAST_PAIRS]
    positive, negative = [], []
    for prompt, ids in zip(answerable, sampler.prompt_ids([chat(p) for p in answerable]), strict=True):
        answer = rng.choice(ANSWER_FORMS).format(answer=prompt.answer, subject=prompt.subject)
        positive.append([*ids, *tokenizer(answer, add_special_tokens=False)["input_ids"]])
        negative.append([*ids, *tokenizer(rng.choice(HARMFUL), add_special_tokens=False)["input_ids"]])
    return positive, negative


def _share(name: str, flags: Sequence[bool]) -> dict[str, float]:
    """The share of true flags and its binomial standard error."""
    share = sum(flags) / len(flags)
    return {name: share, f"{name}_stderr": (share * (1 - share) / len(flags)) ** 0.5}
