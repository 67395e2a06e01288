"""DeAL and Guide-Align by name through ``decode_with``, and the rule that every strategy's reward
scores the prompt as the user wrote it (never the chat-wrapped, URIAL or guideline-laden text).

Example: ``pytest tests/decode/test_strategies_deal_guided.py``
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest

from alignlab.decode.candidates import TextSampler
from alignlab.decode.deal import deal
from alignlab.decode.guidelines import HEADER, GuidelineLibrary, guideline_block
from alignlab.decode.steering import read_steering_vectors
from alignlab.decode.strategies import STRATEGIES, decode_with, sample_first
from alignlab.errors import ConfigError
from alignlab.rewards import Columns, FunctionReward, Reward, Scores

PROMPTS: list[Any] = ["What is 2 + 2?", ({"role": "user", "content": "Name a capital."},)]

LIBRARY = GuidelineLibrary.from_texts(["add the two numbers and give the sum", "name the capital of a country",
                                       "answer briefly"])


class Recording(Reward):
    """Scores 1 for every completion and keeps each prompt it was asked about."""

    name = "recording"

    def __init__(self) -> None:
        self.prompts: list[Any] = []

    def score(self, prompts: Sequence[Any], completions: Sequence[str], columns: Columns) -> Scores:
        self.prompts.extend(prompts)
        return [1.0] * len(completions)


def options_for(strategy: str, sampler: TextSampler) -> dict[str, Any]:
    if strategy == "rejection":
        return {"threshold": 0.5}
    if strategy == "steer":
        vectors = read_steering_vectors(sampler.model, ["Be kind."], ["Be rude."], tokenizer=sampler.tokenizer)
        return {"steering": vectors, "alpha": 2.0}
    if strategy == "deal":
        return {"beam_width": 2, "candidates": 2, "lookahead": 1}
    if strategy == "guided":
        return {"guidelines": LIBRARY, "k": 2}
    return {}


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_every_strategy_gives_its_reward_the_prompts_as_written(sampler: TextSampler, strategy: str) -> None:
    assert sampler.as_chat  # the sampler wraps plain strings in the chat template: the case that could leak
    reward = Recording()
    n = 1 if strategy == "deal" else 2
    decoded = decode_with(strategy, sampler, PROMPTS, n=n, reward=reward, **options_for(strategy, sampler))
    assert reward.prompts and all(p in PROMPTS for p in reward.prompts)
    assert all(p in reward.prompts for p in PROMPTS)
    assert [s.prompt for s in decoded.selections] == PROMPTS


def spy_on_sampled_prompts(sampler: TextSampler, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    seen: list[Any] = []
    real = sampler.sample

    def sample(prompts: Sequence[Any], n: int, **kwargs: Any) -> Any:
        seen.extend(prompts)
        return real(prompts, n, **kwargs)

    monkeypatch.setattr(sampler, "sample", sample)
    return seen


def test_guided_sends_the_guidelines_as_a_system_message(sampler: TextSampler,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    sent = spy_on_sampled_prompts(sampler, monkeypatch)
    decoded = decode_with("guided", sampler, PROMPTS, n=2, guidelines=LIBRARY, k=1)
    first, second = (LIBRARY[0],), (LIBRARY[1],)
    # The plain string became the user turn the sampler would have made, with a system turn before it.
    assert [[dict(m) for m in p] for p in sent] == [
        [{"role": "system", "content": guideline_block(first)}, {"role": "user", "content": PROMPTS[0]}],
        [{"role": "system", "content": guideline_block(second)}, dict(PROMPTS[1][0])],
    ]
    assert [s.details["guidelines"] for s in decoded.selections] == [[{"id": None, "text": first[0].text}],
                                                                    [{"id": None, "text": second[0].text}]]
    assert [s.chosen for s in decoded.selections] == [0, 0]  # no reward: the first sample


def test_guided_how_user_and_a_base_model_put_the_guidelines_in_the_users_text(
        sampler: TextSampler, monkeypatch: pytest.MonkeyPatch) -> None:
    sent = spy_on_sampled_prompts(sampler, monkeypatch)
    decode_with("guided", sampler, PROMPTS[1:], guidelines=LIBRARY, k=1, how="user")
    assert [dict(m) for m in sent[0]] == [{"role": "user", "content": f"{guideline_block((LIBRARY[1],))}\n\n"
                                                                      "Name a capital."}]
    base = TextSampler(sampler.model, sampler.tokenizer, sampler.options, as_chat=False)
    sent = spy_on_sampled_prompts(base, monkeypatch)
    decode_with("guided", base, PROMPTS[:1], guidelines=LIBRARY, k=1)
    assert sent == [f"{HEADER}\n1. {LIBRARY[0].text}\n\nWhat is 2 + 2?"]  # raw text, never a template


def test_guided_with_k_zero_is_plain_sampling_and_with_a_reward_picks_the_best(sampler: TextSampler) -> None:
    plain = sample_first(sampler, PROMPTS, 3)
    unguided = decode_with("guided", sampler, PROMPTS, n=3, guidelines=LIBRARY, k=0)
    assert [[c.token_ids for c in s.candidates] for s in unguided.selections] == \
        [[c.token_ids for c in s.candidates] for s in plain.selections]
    guided = decode_with("guided", sampler, PROMPTS, n=3, guidelines=LIBRARY, k=2)
    assert [[c.token_ids for c in s.candidates] for s in guided.selections] != \
        [[c.token_ids for c in s.candidates] for s in plain.selections]
    longest = FunctionReward(lambda prompt, completion: float(len(completion)))
    best = decode_with("guided", sampler, PROMPTS, n=3, reward=longest, guidelines=LIBRARY, k=2)
    for selection, unscored in zip(best.selections, guided.selections, strict=True):
        lengths = [len(c.text) for c in selection.candidates]
        assert [c.token_ids for c in selection.candidates] == [c.token_ids for c in unscored.candidates]
        assert selection.chosen == lengths.index(max(lengths))
        assert len(selection.details["guidelines"]) == 2
    assert best.cost.reward_calls == 6 and best.cost.tokens_generated == guided.cost.tokens_generated


def constant(prompt: Any, completion: str) -> float:
    return 0.0


def test_deal_by_name_is_deal_and_one_beam_with_a_constant_reward_is_greedy(sampler: TextSampler) -> None:
    options = {"beam_width": 2, "candidates": 2, "lookahead": 1, "lm_weight": 0.5}
    reward = FunctionReward(lambda prompt, completion: -abs(len(completion) - 8.0))
    by_name = decode_with("deal", sampler, PROMPTS, reward=reward, **options)
    direct = deal(sampler, PROMPTS, reward, **options)
    assert by_name.strategy == direct.strategy == "deal(beam=2, k=2, lookahead=1, lm_weight=0.5)"
    assert [[c.token_ids for c in s.candidates] for s in by_name.selections] == \
        [[c.token_ids for c in s.candidates] for s in direct.selections]
    assert by_name.cost == direct.cost
    greedy = decode_with("greedy", sampler, PROMPTS)
    one_beam = decode_with("deal", sampler, PROMPTS, reward=FunctionReward(constant), beam_width=1, lookahead=0)
    assert [s.candidates[0].token_ids for s in one_beam.selections] == \
        [s.candidates[0].token_ids for s in greedy.selections]
    # The defaults are the CLI's: 2 beams of the top 4 with a 4-token lookahead, limited by the sampler.
    short = replace(sampler.options, max_new_tokens=3)
    default = decode_with("deal", TextSampler(sampler.model, sampler.tokenizer, short), PROMPTS, reward=reward)
    assert default.strategy == "deal(beam=2, k=4, lookahead=4)"
    assert all(len(s.candidates) == 2 and all(len(c.token_ids) <= 3 for c in s.candidates)
               for s in default.selections)


def test_deal_and_guided_say_what_they_miss(sampler: TextSampler) -> None:
    with pytest.raises(ConfigError, match="chooses by a reward"):
        decode_with("deal", sampler, PROMPTS)
    with pytest.raises(ConfigError, match="takes no n"):
        decode_with("deal", sampler, PROMPTS, n=4, reward=FunctionReward(constant))
    with pytest.raises(ConfigError, match=r"needs --guidelines\n  hint: a JSONL file"):
        decode_with("guided", sampler, PROMPTS)
    with pytest.raises(ConfigError, match="one of .*deal, guided"):
        decode_with("beam", sampler, PROMPTS)
