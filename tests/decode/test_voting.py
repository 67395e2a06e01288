"""Choosing among N solutions: majority and weighted votes, canonical answers, ORM/PRM best-of-N.

Example: ``pytest tests/decode/test_voting.py``
"""

from __future__ import annotations

import math

import pytest

from alignlab.decode.voting import (
    Ranked,
    Vote,
    aggregate_steps,
    best_by_orm,
    canonical_answer,
    majority_vote,
    rerank,
    split_steps,
    weighted_vote,
)


def test_majority_counts_abstentions_and_picks_first_carrier() -> None:
    vote = majority_vote(["7", None, "42", "7", "42", "42", None])
    assert vote == Vote(answer="42", index=2, totals={"7": 2.0, "42": 3.0}, counts={"7": 2, "42": 3},
                        abstained=2, unscored=0)
    assert list(vote.counts) == ["7", "42"]  # first-appearance order


def test_majority_tie_goes_to_the_answer_reached_first() -> None:
    assert majority_vote(["b", "a", "a", "b"]).answer == "b"
    assert majority_vote(["b", "a", "a", "b"]).index == 0
    assert majority_vote([None, "a", "b", "b", "a"]).index == 1


def test_majority_with_no_votes_chooses_nothing() -> None:
    assert majority_vote([None, None]) == Vote(answer=None, index=None, totals={}, counts={}, abstained=2)


def test_weighted_vote_flips_the_majority() -> None:
    answers = ["7", "7", "7", "42", "42"]
    assert majority_vote(answers).answer == "7"
    vote = weighted_vote(answers, [0.1, 0.2, 0.1, 0.9, 0.8])
    assert (vote.answer, vote.index) == ("42", 3)
    assert vote.totals["7"] == pytest.approx(0.4) and vote.totals["42"] == pytest.approx(1.7)
    assert vote.counts == {"7": 3, "42": 2}


def test_weighted_vote_with_equal_weights_is_majority() -> None:
    answers = [3.0, None, 5.0, 5.0, 3.0, 5.0]
    weighted, majority = weighted_vote(answers, [0.1] * 6), majority_vote(answers)
    assert (weighted.answer, weighted.index, weighted.counts) == (majority.answer, majority.index,
                                                                 majority.counts) == (5.0, 2, {3.0: 2, 5.0: 3})
    assert weighted_vote(["b", "a", "a", "b"], [0.1, 0.2, 0.3, 0.4]).answer == "b"  # exact tie: first


def test_weighted_vote_skips_and_counts_none_weights() -> None:
    vote = weighted_vote(["x", "y", "y", None], [0.5, None, 0.2, 0.9])
    assert (vote.answer, vote.index, vote.unscored, vote.abstained) == ("x", 0, 1, 1)
    assert vote.counts == {"x": 1, "y": 1}
    unscored = weighted_vote(["y", "x"], [None, 0.1])
    assert (unscored.answer, unscored.index) == ("x", 1)  # an unscored completion is never chosen


def test_weighted_vote_exponentiated() -> None:
    vote = weighted_vote(["a", "b", "b"], [math.log(3.0), 0.0, 0.0], exponentiate=True)
    assert vote.answer == "a"
    assert vote.totals == {"a": pytest.approx(1.0), "b": pytest.approx(2 / 3)}
    assert weighted_vote(["a", "b", "b"], [-1.0, -1.5, -1.5], exponentiate=True).answer == "b"
    assert weighted_vote(["a"], [1000.0], exponentiate=True).totals == {"a": 1.0}  # no overflow


@pytest.mark.parametrize("completion", [
    "So the answer is 42.", "#### 42", "We get $\\boxed{42.0}$.", "<answer>42</answer>",
    "The answer is $\\frac{84}{2}$", "6 times 7 makes 42",
])
def test_canonical_numbers_merge_formats(completion: str) -> None:
    assert canonical_answer(completion) == 42.0
    assert canonical_answer(completion, "numeric") == 42.0


def test_canonical_merging_decides_the_vote() -> None:
    completions = ["The answer is 42.", "#### 7", "\\boxed{42.0}", "#### 42", "The answer is 7", "no idea"]
    vote = majority_vote([canonical_answer(c) for c in completions])
    assert (vote.answer, vote.index, vote.counts, vote.abstained) == (42.0, 0, {42.0: 3, 7.0: 2}, 1)
    exact = majority_vote([canonical_answer(c, "exact") for c in completions])
    assert (exact.counts, exact.abstained) == ({"42": 2, "7": 2, "420": 1}, 1)  # "42.0" loses its dot
    assert (exact.answer, exact.index) == ("42", 0)


def test_canonical_modes_differ_on_non_numbers() -> None:
    pair = ["\\boxed{(1, 2)}", "\\boxed{(1, 3)}"]
    assert [canonical_answer(c) for c in pair] == ["1 2", "1 3"]
    assert [canonical_answer(c, "numeric") for c in pair] == [1.0, 1.0]
    assert canonical_answer("The answer is The Eiffel Tower!") == "eiffel tower"
    assert canonical_answer("The answer is 42 apples", "auto") == "42 apples"
    assert canonical_answer("The answer is 42 apples", "numeric") == 42.0
    assert canonical_answer("0.1 + 0.2 = 0.30000000000000004") == canonical_answer("#### 0.3") == 0.3
    assert canonical_answer("#### -0") == 0.0 and str(canonical_answer("#### -0")) == "0.0"
    assert canonical_answer("no answer here") is None
    assert canonical_answer("no number", "numeric") is None and canonical_answer("no mark", "exact") is None
    with pytest.raises(ValueError, match="unknown match 'fuzzy'; use auto, numeric, exact"):
        canonical_answer("x", "fuzzy")  # type: ignore[arg-type]


def test_best_by_orm() -> None:
    assert best_by_orm([0.2, None, 0.7, 0.7, 0.1]) == Ranked(index=2, score=0.7,
                                                                scores=(0.2, None, 0.7, 0.7, 0.1), unscored=1)
    assert best_by_orm([-3.0]).index == 0  # best-of-1 is the sample itself
    assert best_by_orm([None, None]) == Ranked(index=None, score=None, scores=(None, None), unscored=2)


STEPS = [0.9, 0.5, 0.8]


@pytest.mark.parametrize(("aggregate", "expected"), [("min", 0.5), ("prod", 0.36), ("last", 0.8)])
def test_prm_aggregates(aggregate: str, expected: float) -> None:
    assert aggregate_steps(STEPS, aggregate) == pytest.approx(expected)  # type: ignore[arg-type]
    assert aggregate_steps([0.4], aggregate) == pytest.approx(0.4)  # type: ignore[arg-type]


def test_prm_min_is_at_most_every_step_and_logits_go_through_a_sigmoid() -> None:
    assert all(aggregate_steps(STEPS) <= step for step in STEPS)
    assert aggregate_steps([0.0, 0.0], "prod", logits=True) == 0.25
    assert aggregate_steps([math.log(3.0), 0.0], "min", logits=True) == pytest.approx(0.5)
    assert aggregate_steps([-1000.0, 2.0], "last", logits=True) == pytest.approx(1 / (1 + math.exp(-2)))
    assert aggregate_steps([-1000.0], "min", logits=True) == 0.0  # no overflow


def test_rerank_each_aggregate_picks_its_own_best() -> None:
    solutions = [[0.9, 0.5, 0.8], [0.6, 0.6, 0.6], None, [0.99, 0.99, 0.3]]
    by_min = rerank(solutions)
    assert (by_min.index, by_min.unscored) == (1, 1)
    assert by_min.scores == (0.5, 0.6, None, 0.3)
    assert rerank(solutions, "prod").index == 0  # 0.36 > 0.216 > 0.294
    assert rerank(solutions, "last").index == 0  # 0.8
    assert rerank([[0.5], [0.5]]).index == 0
    assert weighted_vote(["a", "b", "b", "a"], list(by_min.scores)).answer == "a"  # 0.8 vs 0.6


def test_split_steps() -> None:
    solution = "First, 6 * 7.\n\nSo 42.\n\n\n\nCheck: yes.\n\n# Answer\n\n42"
    assert split_steps(solution) == ["First, 6 * 7.", "So 42.", "Check: yes.", "# Answer\n\n42"]
    assert split_steps(solution, keep_answer=False) == ["First, 6 * 7.", "So 42.", "Check: yes."]
    assert split_steps("a\nb\n\nc\n") == ["a\nb", "c"]
    assert split_steps("a\nb", "\n") == ["a", "b"]
    assert split_steps("") == []


def test_invalid_inputs_are_specific() -> None:
    with pytest.raises(ValueError, match="majority_vote: no answers to vote on"):
        majority_vote([])
    with pytest.raises(ValueError, match="weighted_vote: no answers to vote on"):
        weighted_vote([], [])
    with pytest.raises(ValueError, match=r"weighted_vote: 3 answers but 2 weights\n  hint: give one weight"):
        weighted_vote(["a", "b", "c"], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"(?s)weight 1 is -0.5, but weights are summed.*hint: pass logits through a sigmoid"):
        weighted_vote(["a", "b"], [0.1, -0.5])
    with pytest.raises(ValueError, match="weight 0 is nan"):
        weighted_vote(["a"], [math.nan])
    with pytest.raises(ValueError, match="best_by_orm: no scores"):
        best_by_orm([])
    with pytest.raises(ValueError, match="best_by_orm: score 1 is nan"):
        best_by_orm([0.1, math.nan])
    with pytest.raises(ValueError, match="rerank: no solutions"):
        rerank([])
    with pytest.raises(ValueError, match=r"(?s)rerank: solution 1: no step scores.*hint: pass None"):
        rerank([[0.5], []])
    with pytest.raises(ValueError, match="rerank: solution 0: step 1 has score 1.5, but 'prod' multiplies"):
        rerank([[0.5, 1.5]], "prod")
    with pytest.raises(ValueError, match="aggregate_steps: step 0 has score nan"):
        aggregate_steps([math.nan])
    with pytest.raises(ValueError, match="aggregate_steps: unknown aggregate 'mean'; use min, prod, last"):
        aggregate_steps([0.5], "mean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="split_steps: the separator is empty"):
        split_steps("a", "")
