"""DeAL on a tiny model: a constant reward gives greedy decoding, a keyword reward steers the
search to a top-k token that greedy skips, the cost counters match hand counts, unscorable texts
rank last, and bad options fail with specific messages.

Example: ``pytest tests/decode/test_deal.py``
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import torch

from alignlab.decode.candidates import TextSampler
from alignlab.decode.deal import deal
from alignlab.rewards import FunctionReward

PROMPTS = ["What is 2 + 2?", "Name a capital.", [{"role": "user", "content": "Say hi."}]]


def constant(prompt: Any, completion: str) -> float:
    return 0.0


def greedy(sampler: TextSampler, prompts: list[Any]) -> list[tuple[int, ...]]:
    rows = sampler.sample(prompts, 1, options=replace(sampler.options, temperature=0.0))
    return [row[0].token_ids for row in rows]


@pytest.mark.parametrize(("beam_width", "candidates", "lookahead", "lm_weight"),
                         [(1, 4, 0, 0.0), (1, 1, 3, 0.0), (1, 3, 2, 1.0)])
def test_a_constant_reward_with_one_beam_is_greedy_decoding(sampler: TextSampler, beam_width: int,
                                                            candidates: int, lookahead: int, lm_weight: float) -> None:
    decoded = deal(sampler, PROMPTS, FunctionReward(constant), beam_width=beam_width, candidates=candidates,
                   lookahead=lookahead, lm_weight=lm_weight)
    assert [s.candidates[s.chosen or 0].token_ids for s in decoded.selections] == greedy(sampler, PROMPTS)
    assert [s.chosen for s in decoded.selections] == [0, 0, 0]
    assert [s.completion for s in decoded.selections] == [sampler.text(ids) for ids in greedy(sampler, PROMPTS)]


def _keyword(sampler: TextSampler, prompt: Any, k: int) -> str:
    """A token's text that is among the first step's top-k but not the argmax, and that greedy
    decoding never writes."""
    ids = torch.tensor([list(sampler.prompt_ids([prompt])[0])])
    with torch.no_grad():
        logits = sampler.model(input_ids=ids).logits[0, -1].float()
    order = torch.sort(logits, descending=True, stable=True).indices[:k].tolist()
    plain = sampler.text(greedy(sampler, [prompt])[0])
    for token in order[1:]:
        word = sampler.tokenizer.decode([token], skip_special_tokens=True).strip()
        if len(word) >= 2 and word not in plain:
            return word
    pytest.fail(f"no usable keyword among the top-{k} tokens {order} of {prompt!r}")


def test_a_keyword_reward_finds_a_top_k_token_that_greedy_skips(sampler: TextSampler) -> None:
    prompt = PROMPTS[0]
    word = _keyword(sampler, prompt, k=4)

    def has_word(p: Any, completion: str) -> float:
        return float(word in completion)

    decoded = deal(sampler, [prompt], FunctionReward(has_word), beam_width=2, candidates=4, lookahead=2)
    plain = sampler.text(greedy(sampler, [prompt])[0])
    assert word not in plain
    assert decoded.completions[0] is not None and word in decoded.completions[0]
    assert decoded.selections[0].candidates[0].score == 1.0


def test_the_cost_matches_a_hand_count(sampler: TextSampler) -> None:
    texts: list[str] = []

    def record(p: Any, completion: str) -> float:
        texts.append(completion)
        return 0.0

    decoded = deal(sampler, [PROMPTS[1]], FunctionReward(record), beam_width=2, candidates=3, lookahead=2,
                   max_new_tokens=3)
    # Hand count, T=3 tokens, b=2, k=3, l=2 (no EOS on this prompt: checked below).
    # step 1: 1 beam × 3 states, rollouts of min(2, 3-1)=2: 9 tokens, 2 forwards, 3 scored
    # step 2: 2 beams × 3 states, rollouts of min(2, 3-2)=1: 12 tokens, 1 forward, 6 scored
    # step 3: 2 beams × 3 states, complete, no rollout: 6 tokens, no forward, 6 scored
    # plus the prompt's forward.
    selection = decoded.selections[0]
    assert all(len(c.token_ids) == 3 and sampler.encoder.eos_id not in c.token_ids for c in selection.candidates)
    assert decoded.cost.as_dict() == {"tokens_generated": 27, "forward_passes": 4, "reward_calls": 15}
    assert selection.details["steps"] == 3
    assert len(texts) == selection.details["scored"] == 15


def test_reward_calls_equal_the_scored_texts(sampler: TextSampler) -> None:
    texts: list[str] = []

    def record(p: Any, completion: str) -> float:
        texts.append(completion)
        return float(len(completion))

    decoded = deal(sampler, PROMPTS, FunctionReward(record), beam_width=2, candidates=2, lookahead=1)
    assert decoded.cost.reward_calls == len(texts) == sum(s.details["scored"] for s in decoded.selections)
    for selection in decoded.selections:
        assert [c.score for c in selection.candidates] == [float(len(c.text)) for c in selection.candidates]
        assert selection.chosen == 0
        assert len(selection.candidates) <= 2


def test_unscorable_texts_rank_below_every_number(sampler: TextSampler) -> None:
    prompt = PROMPTS[0]
    plain = sampler.text(greedy(sampler, [prompt])[0])
    first = plain.split()[0] if plain.split() else plain

    def veto_greedy(p: Any, completion: str) -> float | None:
        return None if completion.startswith(first) else -100.0

    decoded = deal(sampler, [prompt], FunctionReward(veto_greedy), beam_width=1, candidates=4, lookahead=0)
    selection = decoded.selections[0]
    assert selection.details["unscorable"] >= 1
    assert selection.completion is not None and not selection.completion.startswith(first)
    assert selection.candidates[0].score == -100.0
    nothing = deal(sampler, [prompt], FunctionReward(lambda p, c: None, "none"), beam_width=2, candidates=2,
                   lookahead=1, max_new_tokens=2)
    assert nothing.selections[0].chosen is None and nothing.completions == [None]
    assert nothing.selections[0].details["unscorable"] == nothing.selections[0].details["scored"]


def test_columns_reach_the_reward(sampler: TextSampler) -> None:
    def tagged(p: Any, completion: str, answer: str) -> float:
        return float(answer)

    decoded = deal(sampler, PROMPTS[:2], FunctionReward(tagged), beam_width=1, candidates=2, lookahead=1,
                   max_new_tokens=2, columns={"answer": ["1", "2"]})
    assert [s.candidates[0].score for s in decoded.selections] == [1.0, 2.0]
    with pytest.raises(ValueError, match="column 'answer' has 1 values for 2 prompts"):
        deal(sampler, PROMPTS[:2], FunctionReward(tagged), columns={"answer": ["1"]})


@pytest.mark.parametrize(("options", "message"), [
    ({"beam_width": 0}, "beam_width must be at least 1, got 0"),
    ({"candidates": 0}, r"candidates \(top-k next tokens per beam\) must be at least 1, got 0"),
    ({"lookahead": -1}, r"lookahead must be >= 0 \(0 scores the prefix itself\), got -1"),
    ({"max_new_tokens": 0}, "max_new_tokens must be at least 1, got 0"),
    ({"lm_weight": float("nan")}, "lm_weight must be a finite number, got nan"),
])
def test_bad_options_fail_with_specific_messages(sampler: TextSampler, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        deal(sampler, PROMPTS, FunctionReward(constant), **options)


def test_beams_that_end_at_eos_stay_and_compete(sampler: TextSampler) -> None:
    def short(p: Any, completion: str) -> float:
        return -float(len(completion))

    decoded = deal(sampler, PROMPTS, FunctionReward(short), beam_width=3, candidates=8, lookahead=3)
    eos = sampler.encoder.eos_id
    ended = [c for s in decoded.selections for c in s.candidates if c.token_ids[-1] == eos]
    assert any(len(c.token_ids) < 6 for c in ended)  # stopped early, kept through the later steps
    for selection in decoded.selections:
        assert [c.score for c in selection.candidates] == [short(None, c.text) for c in selection.candidates]
        assert all(eos not in c.token_ids[:-1] for c in selection.candidates)  # nothing after an EOS
        scores = [c.score for c in selection.candidates]
        assert scores == sorted(scores, reverse=True)  # rank order (lm_weight 0: the reward alone)
    assert decoded.cost.reward_calls == sum(s.details["scored"] for s in decoded.selections)


def test_each_prompt_records_its_own_share_of_the_cost(sampler: TextSampler) -> None:
    decoded = deal(sampler, PROMPTS, FunctionReward(constant), beam_width=2, candidates=3, lookahead=2)
    shares = [s.details["cost"] for s in decoded.selections]
    assert len(shares) == len(PROMPTS) > 1
    for name, total in decoded.cost.as_dict().items():
        assert sum(share[name] for share in shares) == total > 0
    alone = deal(sampler, PROMPTS[1:2], FunctionReward(constant), beam_width=2, candidates=3, lookahead=2)
    assert alone.cost.as_dict() == shares[1]  # a prompt's share is what searching it alone costs
