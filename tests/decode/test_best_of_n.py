"""Best-of-N and rejection sampling on a tiny model: the choice is the argmax of the scores,
the shared-prompt fast path gives the plain path's candidates, rejection rounds continue the same
random streams, costs add up, None scores are never chosen, and pairs carry score gaps.

Example: ``pytest tests/decode/test_best_of_n.py``
"""

from __future__ import annotations

from typing import Any

import pytest

from alignlab.decode import SamplingOptions
from alignlab.decode.best_of_n import best_of_n, preference_pairs, rejection_sample
from alignlab.decode.candidates import Candidate, TextSampler, best_index
from alignlab.rewards import FunctionReward, build_reward

PROMPTS = ["What is 2 + 2?", "Name a capital.", [{"role": "user", "content": "Say hi."}]]


def chars(prompt: Any, completion: str) -> float:
    return float(len(completion))


def test_best_of_n_chooses_the_argmax_and_counts_its_cost(sampler: TextSampler) -> None:
    decoded = best_of_n(sampler, PROMPTS, FunctionReward(chars), n=6)
    plain = sampler.sample(PROMPTS, 6)
    for selection, row in zip(decoded.selections, plain, strict=True):
        assert [c.token_ids for c in selection.candidates] == [c.token_ids for c in row]
        scores = [len(c.text) for c in row]
        assert selection.chosen == scores.index(max(scores))  # the first of equal maxima
        assert selection.completion == row[selection.chosen].text
    assert decoded.cost.reward_calls == 18
    assert decoded.cost.tokens_generated == sum(len(c.token_ids) for row in plain for c in row)
    assert 1 <= decoded.cost.forward_passes <= 6


def test_shared_prompt_best_of_n_equals_the_unshared_one(sampler: TextSampler) -> None:
    reward = build_reward("length_target(target=3, unit='chars')")
    fast = best_of_n(sampler, PROMPTS, reward, n=8)
    plain_sampler = TextSampler(sampler.model, sampler.tokenizer,
                                SamplingOptions(max_new_tokens=6, seed=3, share_prompt=False))
    slow = best_of_n(plain_sampler, PROMPTS, reward, n=8)
    assert fast.selections == slow.selections
    assert fast.cost.tokens_generated == slow.cost.tokens_generated


def test_unscorable_candidates_are_never_chosen(sampler: TextSampler) -> None:
    assert best_index([Candidate("a", (1,), None), Candidate("b", (1,), -5.0), Candidate("c", (1,), None)]) == 1
    assert best_index([Candidate("a", (1,), 2.0), Candidate("b", (1,), 2.0)]) == 0
    nothing = best_of_n(sampler, PROMPTS[:2], FunctionReward(lambda p, c: None, "none"), n=3)
    assert [s.chosen for s in nothing.selections] == [None, None]
    assert nothing.completions == [None, None]


def test_columns_reach_each_candidate_of_their_prompt(sampler: TextSampler) -> None:
    def tagged(prompt: Any, completion: str, answer: str) -> float:
        return float(answer)

    decoded = best_of_n(sampler, PROMPTS, FunctionReward(tagged), n=2, columns={"answer": ["1", "2", "3"]})
    assert [[c.score for c in s.candidates] for s in decoded.selections] == [[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]
    with pytest.raises(ValueError, match="column 'answer' has 2 values for 3 prompts"):
        best_of_n(sampler, PROMPTS, FunctionReward(tagged), n=2, columns={"answer": ["1", "2"]})


def test_rejection_rounds_continue_the_streams_and_stop_when_accepted(sampler: TextSampler) -> None:
    reward = FunctionReward(chars)
    everything = sampler.sample(PROMPTS, 12)  # 3 rounds of 4
    lengths = [[len(c.text) for c in row] for row in everything]
    threshold = sorted(lengths[0][:4])[-1]  # prompt 0 is accepted in round 1, at its first longest
    decoded = rejection_sample(sampler, PROMPTS, reward, n=4, threshold=threshold, max_rounds=3)
    for i, selection in enumerate(decoded.selections):
        got = [c.token_ids for c in selection.candidates]
        rounds = len(got) // 4
        assert got == [c.token_ids for c in everything[i][:len(got)]]  # a prefix of the one call
        accepted = [k for k, n_chars in enumerate(lengths[i][:len(got)]) if n_chars >= threshold]
        assert selection.chosen == (accepted[0] if accepted else None)
        # It stopped at the first round with an accepted candidate, or after the last round.
        first_round = accepted[0] // 4 + 1 if accepted else 3
        assert rounds == first_round
    assert decoded.selections[0].chosen is not None and len(decoded.selections[0].candidates) == 4
    assert decoded.cost.reward_calls == sum(len(s.candidates) for s in decoded.selections)
    impossible = rejection_sample(sampler, PROMPTS[:1], reward, n=2, threshold=1e9, max_rounds=2)
    assert impossible.selections[0].chosen is None and len(impossible.selections[0].candidates) == 4
    with pytest.raises(ValueError, match="max_rounds"):
        rejection_sample(sampler, PROMPTS, reward, n=2, threshold=0.0, max_rounds=0)


def test_best_against_worst_pairs_carry_the_score_gap(sampler: TextSampler) -> None:
    decoded = best_of_n(sampler, PROMPTS, FunctionReward(chars), n=6)
    pairs, skipped = preference_pairs(decoded)
    assert len(pairs) + skipped == len(PROMPTS)
    expected = []
    for selection in decoded.selections:
        scores = [c.score for c in selection.candidates]
        if max(scores) > min(scores):  # type: ignore[type-var]
            best = selection.candidates[scores.index(max(scores))]
            worst = selection.candidates[scores.index(min(scores))]
            expected.append((best.text, worst.text, max(scores) - min(scores)))  # type: ignore[operator]
    def text(completion: Any) -> str:  # a chat prompt's completions are assistant messages
        return completion if isinstance(completion, str) else completion[-1]["content"]

    assert [(text(p.chosen), text(p.rejected), p.margin) for p in pairs] == expected
    assert all(p.margin > 0 and p.source == "best_of_6" for p in pairs)  # type: ignore[operator]
    none_left, all_skipped = preference_pairs(decoded, min_margin=1e9)
    assert none_left == [] and all_skipped == len(PROMPTS)


def test_plain_prompts_go_through_the_chat_template_when_there_is_one(sampler: TextSampler) -> None:
    as_user = ({"role": "user", "content": "Say hi."},)
    assert sampler.as_chat  # the tiny tokenizer has a ChatML template
    assert sampler.prompt_ids(["Say hi."]) == [sampler.encoder.encode_prompt(as_user)]
    assert sampler.prompt_ids(["Say hi."], as_chat=False) == [sampler.encoder.encode_prompt("Say hi.")]
    plain = TextSampler(sampler.model, sampler.tokenizer, sampler.options, as_chat=False)
    assert plain.prompt_ids(["Say hi.", as_user]) == [sampler.encoder.encode_prompt("Say hi."),
                                                      sampler.encoder.encode_prompt(as_user)]
