"""DeAL against best-of-N on the testbed, at matched generated tokens.

Example: ``results = deal_against_best_of_n(base_model, tokenizer, prompts, max_new_tokens=24, seed=9)``

Both search the base policy for a high true reward (the oracle, as the best-of-N frontier of
the demo uses): best-of-N samples whole completions and keeps the best; DeAL (Huang et al.
2024, arXiv 2402.06147) searches token by token with greedy lookaheads scored by the reward,
on partial texts too. The cost they are matched on is generated tokens, DeAL's lookahead
tokens included (:class:`alignlab.decode.cost.Cost`). For each DeAL setting and each prompt,
best-of-N draws samples until their tokens reach what DeAL generated for that prompt, so
best-of-N never has less budget; the paired difference of their true rewards, with its
standard error, is the comparison. Forward passes and reward calls are reported beside it: DeAL
spends far more of both per token than batched sampling does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from alignlab.decode import SamplingOptions, TextSampler
from alignlab.decode.cost import Cost
from alignlab.decode.deal import deal
from alignlab.rewards import build_reward
from alignlab.testbed import rewards as _registers_testbed_rewards  # noqa: F401
from alignlab.testbed.inference import standard_error
from alignlab.testbed.world import Prompt, chat, true_reward

DEAL_SETTINGS = ((1, 2, 0), (1, 2, 2), (2, 2, 2), (2, 4, 4))
"""(beam width, candidates per step, lookahead) of each DeAL run, cheapest first."""
BEST_OF = (1, 2, 4, 8, 16, 32, 64)
"""N of the best-of-N curve; the largest is also the pool the matched budgets draw from."""


def deal_against_best_of_n(base_model: Any, tokenizer: Any, prompts: Sequence[Prompt], *, max_new_tokens: int,
                           seed: int, settings: Sequence[tuple[int, int, int]] = DEAL_SETTINGS,
                           best_of: Sequence[int] = BEST_OF) -> dict[str, Any]:
    """The best-of-N curve (true reward against tokens per prompt) and each DeAL setting's true
    reward with best-of-N at its per-prompt token budget."""
    sampler = TextSampler(base_model, tokenizer, SamplingOptions(max_new_tokens=max_new_tokens, seed=seed,
                                                                 batch_size=64))
    chats = [chat(p) for p in prompts]
    pool_cost = Cost()
    pool = sampler.sample(chats, max(best_of), cost=pool_cost)
    truth = torch.tensor([[true_reward(p, c.text) for c in row] for p, row in zip(prompts, pool, strict=True)],
                         dtype=torch.float64)  # (prompts, samples)
    tokens = torch.tensor([[len(c.token_ids) for c in row] for row in pool], dtype=torch.float64)
    curve = []
    for n in best_of:
        best = truth[:, :n].max(dim=1).values
        curve.append({"n": n, "tokens_per_prompt": float(tokens[:, :n].sum(1).mean()),
                      "true_reward_mean": float(best.mean()), "true_reward_stderr": standard_error(best)})
    oracle = build_reward("testbed_true")
    runs = []
    for beam_width, candidates, lookahead in settings:
        decoded = deal(sampler, chats, oracle, beam_width=beam_width, candidates=candidates, lookahead=lookahead)
        found = torch.tensor([true_reward(p, s.completion or "") for p, s in zip(prompts, decoded.selections,
                                                                                 strict=True)], dtype=torch.float64)
        budget = torch.tensor(_tokens_per_prompt(decoded), dtype=torch.float64)
        matched, capped = _best_within(truth, tokens, budget)
        runs.append({"beam_width": beam_width, "candidates": candidates, "lookahead": lookahead,
                     "tokens_per_prompt": float(budget.mean()),
                     "forward_passes_per_prompt": decoded.cost.forward_passes / len(prompts),
                     "reward_calls_per_prompt": decoded.cost.reward_calls / len(prompts),
                     "true_reward_mean": float(found.mean()), "true_reward_stderr": standard_error(found),
                     "best_of_n_matched_mean": float(matched.mean()), "best_of_n_matched_stderr": standard_error(matched),
                     "difference_mean": float((found - matched).mean()), "difference_stderr": standard_error(found - matched),
                     "budget_capped_prompts": capped})
    return {"prompts": len(prompts), "max_new_tokens": max_new_tokens, "best_of_n": curve, "deal": runs,
            "best_of_n_forward_passes_per_prompt": pool_cost.forward_passes / len(prompts)}


def _tokens_per_prompt(decoded: Any) -> list[int]:
    """DeAL counts its cost for the whole call; its search runs prompt by prompt, so the per-prompt
    spend is read back from each search's own counters."""
    return [int(s.details["cost"]["tokens_generated"]) for s in decoded.selections]


def _best_within(truth: torch.Tensor, tokens: torch.Tensor, budget: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Per prompt, the best true reward of the first samples whose tokens first reach the budget
    (at least one sample); and how many prompts ran out of samples before reaching it."""
    spent = tokens.cumsum(dim=1)
    reached = spent >= budget[:, None]
    capped = int((~reached.any(dim=1)).sum())
    # Index of the first sample that reaches the budget, or the last sample when none does.
    last = torch.where(reached.any(dim=1), reached.float().argmax(dim=1), torch.full_like(budget, truth.shape[1] - 1,
                                                                                          dtype=torch.long))
    keep = torch.arange(truth.shape[1])[None, :] <= last[:, None]
    best = truth.masked_fill(~keep, -torch.inf).max(dim=1).values
    return best, capped

