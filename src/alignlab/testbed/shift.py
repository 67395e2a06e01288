"""URIAL's token distribution shift between the testbed's base and an aligned policy.

Example: ``results = token_shift(base_model, dpo_model, tokenizer, prompts)``

Lin et al. 2024 (arXiv 2312.01552, section 2) decode the aligned model greedily and ask, at
each position of its answer, where the base model ranks the token it chose: its top-1
(unshifted), within its top-3 (marginal), or lower (shifted). Their finding on Llama-2 and
Mistral: most positions are unshifted, and the shifted ones are mostly stylistic tokens
(discourse markers, safety disclaimers) — alignment as a "superficial" change. The testbed
measures the same shares and names the shifted tokens; what counts as style here is the
world's (filler, harmful words, abstentions), so the comparison with the paper is by kind of
token, not by the shares' size. URIAL itself (the in-context alignment prompt) needs a base
model that learns in context, which the testbed's two-layer model, trained only on single
chats, is not; the demo does not try it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from alignlab.decode import SamplingOptions, TextSampler
from alignlab.decode.urial import greedy_completions, token_distribution_shift
from alignlab.testbed.world import ABSTENTIONS, ANSWER_WORDS, FILLERS, HARMFUL_WORDS, Prompt, chat

TOP = 10
"""Shifted tokens listed."""


def token_shift(base_model: Any, aligned_model: Any, tokenizer: Any, prompts: Sequence[Prompt], *,
                max_new_tokens: int, k: int = 3) -> dict[str, Any]:
    """Shares of unshifted, marginal and shifted positions of the aligned model's greedy answers
    under the base, the shares at the first positions, and the most shifted tokens by kind."""
    sampler = TextSampler(aligned_model, tokenizer, SamplingOptions(max_new_tokens=max_new_tokens))
    prompt_ids = sampler.prompt_ids([chat(p) for p in prompts])
    completions = greedy_completions(aligned_model, prompt_ids, max_new_tokens=max_new_tokens,
                                     eos_id=sampler.encoder.eos_id, pad_id=sampler.pad_id, keep_eos=False)
    shift = token_distribution_shift(base_model, prompt_ids, completions, k, aligned=aligned_model, top=TOP,
                                     pad_id=sampler.pad_id, progress=False)
    by_position = shift.by_position()
    top = [{"token": tokenizer.decode([t.token_id]), "kind": _kind(tokenizer.decode([t.token_id])),
            "count": t.count, "mean_base_rank": t.mean_rank, "base_choice": tokenizer.decode([t.base_choice])}
           for t in shift.top_shifted]
    kl = [float(v) for row in (shift.kl or ()) for v in row]
    return {"prompts": len(prompts), "k": k, "positions": shift.positions, "shares": shift.shares,
            "first_positions": [dict(zip(("unshifted", "marginal", "shifted"), map(float, row), strict=True))
                                for row in by_position[:4]],
            "mean_kl_per_token": sum(kl) / len(kl) if kl else 0.0, "top_shifted": top}


def _kind(token: str) -> str:
    """What a token is in the testbed's world: the reward reads these kinds."""
    word = token.strip()
    if word in HARMFUL_WORDS:
        return "harmful"
    if word in ANSWER_WORDS:
        return "answer"
    kinds = [kind for kind, phrases in (("filler", FILLERS), ("abstention", ABSTENTIONS))
             if any(word in phrase.split() for phrase in phrases)]
    return " or ".join(kinds) or "other"
