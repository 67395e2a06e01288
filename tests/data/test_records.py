"""Record validation: chat normalisation, conversions between kinds, and the field checks."""

from __future__ import annotations

import dataclasses
import math
from types import MappingProxyType
from typing import Any

import pytest

from alignlab.data.records import (
    Feedback,
    Judged,
    PreferencePair,
    RankedResponses,
    SFTExample,
    pairs_to_feedback,
    ranked_to_pairs,
)
from alignlab.errors import FieldError

USER = {"role": "user", "content": "Capital of France?"}


def field_error(build: Any) -> FieldError:
    with pytest.raises(FieldError) as info:
        build()
    return info.value


# ---- chat normalisation ----------------------------------------------------------------------


def test_chat_lists_become_tuples_of_frozen_dicts() -> None:
    message = MappingProxyType({"role": "user", "content": "Capital of France?", "name": "x"})
    pair = PreferencePair([message], [{"role": "assistant", "content": "Paris."}], "Lyon.")
    assert pair.prompt == ({**USER, "name": "x"},)  # extra keys are kept, not silently dropped
    assert type(pair.prompt) is tuple and isinstance(pair.prompt[0], dict)
    assert pair.chosen == ({"role": "assistant", "content": "Paris."},)
    assert type(pair.chosen) is tuple
    with pytest.raises(TypeError, match="immutable"):
        pair.prompt[0]["content"] = "changed"
    assert hash(pair) == hash(PreferencePair([dict(message)], "Paris.", "Lyon."))


def test_string_completion_of_a_chat_prompt_becomes_an_assistant_message() -> None:
    pair = PreferencePair([USER], "Paris.", "Lyon.")
    assert pair.chosen == ({"role": "assistant", "content": "Paris."},)
    assert pair.rejected == ({"role": "assistant", "content": "Lyon."},)
    assert Feedback([USER], "Paris.", True).completion == ({"role": "assistant", "content": "Paris."},)
    assert SFTExample([USER], "Paris.").completion == ({"role": "assistant", "content": "Paris."},)
    assert Judged([USER], "Paris.").response == ({"role": "assistant", "content": "Paris."},)
    ranked = RankedResponses([USER], ["Paris.", "Lyon."], scores=[1, 0])
    assert ranked.responses == (({"role": "assistant", "content": "Paris."},),
                                ({"role": "assistant", "content": "Lyon."},))


def test_string_prompts_keep_string_completions() -> None:
    pair = PreferencePair("2+2?", "4", "5")
    assert (pair.prompt, pair.chosen, pair.rejected) == ("2+2?", "4", "5")


@pytest.mark.parametrize(("build", "field", "reason"), [
    (lambda: PreferencePair("2+2?", [{"role": "assistant", "content": "4"}], "5"),
     "chosen", "mixed string and chat"),
    (lambda: PreferencePair([USER, {"role": "assistant", "content": "4"}], "4", "5"),
     "prompt", "prompt ends with assistant turn"),
    (lambda: PreferencePair([{"role": "robot", "content": "hi"}], "4", "5"),
     "prompt[0].role", "invalid chat role"),
    (lambda: PreferencePair([{"role": "user"}], "4", "5"), "prompt[0]", "invalid chat message"),
    (lambda: PreferencePair(["hi"], "4", "5"), "prompt[0]", "invalid chat message"),
    (lambda: PreferencePair([{"role": "user", "content": ["hi"]}], "4", "5"),
     "prompt[0].content", "mistyped field"),
    (lambda: PreferencePair([], "4", "5"), "prompt", "empty text"),
    (lambda: PreferencePair("   ", "4", "5"), "prompt", "empty text"),
    (lambda: PreferencePair([USER], [USER], "5"), "chosen", "invalid chat role"),
    (lambda: PreferencePair(None, "4", "5"), "prompt", "missing field"),
    (lambda: PreferencePair(42, "4", "5"), "prompt", "mistyped field"),
])
def test_invalid_texts_name_field_and_reason(build: Any, field: str, reason: str) -> None:
    error = field_error(build)
    assert (error.field, error.reason) == (field, reason)


def test_empty_completions_are_allowed_but_not_empty_judgments() -> None:
    assert PreferencePair("2+2?", "", "5").chosen == ""
    assert Judged("Write.", "text", None).judgment is None
    error = field_error(lambda: Judged("Write.", "text", "  "))
    assert (error.field, error.reason) == ("judgment", "empty text")


# ---- conversions ---------------------------------------------------------------------------


def test_ranked_to_pairs_with_scores_leaves_ties_out() -> None:
    ranked = RankedResponses("Q?", ["a", "b", "c", "d"], scores=(3, 1, 3, 0), source="s", id="r")
    pairs = ranked_to_pairs(ranked)
    # 6 index pairs, a-c tied (3 = 3): 5 pairs, in (i, j) order, winner first.
    assert [(p.chosen, p.rejected) for p in pairs] == [
        ("a", "b"), ("a", "d"), ("c", "b"), ("b", "d"), ("c", "d"),
    ]
    assert [p.id for p in pairs] == ["r:0>1", "r:0>3", "r:2>1", "r:1>3", "r:2>3"]
    assert {p.prompt for p in pairs} == {"Q?"} and {p.source for p in pairs} == {"s"}


def test_ranked_to_pairs_with_ranks_one_is_best() -> None:
    ranked = RankedResponses("Q?", ["a", "b", "c"], ranks=(2, 1, 3))
    pairs = ranked_to_pairs(ranked)
    assert [(p.chosen, p.rejected) for p in pairs] == [("b", "a"), ("a", "c"), ("b", "c")]
    assert [p.id for p in pairs] == [None, None, None]


def test_ranked_to_pairs_skips_equal_texts_with_different_scores() -> None:
    ranked = RankedResponses("Q?", ["same", "same", "other"], scores=(2, 1, 0))
    assert [(p.chosen, p.rejected) for p in ranked_to_pairs(ranked)] == [
        ("same", "other"), ("same", "other"),
    ]


def test_preference_signs() -> None:
    scored = RankedResponses("Q?", ["a", "b", "c"], scores=(0.5, 2, 0.5))
    assert [scored.preference(0, 1), scored.preference(1, 0), scored.preference(0, 2)] == [-1, 1, 0]
    ranked = RankedResponses("Q?", ["a", "b", "c"], ranks=(1, 3, 1))
    assert [ranked.preference(0, 1), ranked.preference(1, 0), ranked.preference(0, 2)] == [1, -1, 0]


def test_pairs_to_feedback_splits_each_pair() -> None:
    pairs = [PreferencePair("Q1", "good1", "bad1", source="s", id="p1"),
             PreferencePair("Q2", "good2", "bad2")]
    assert pairs_to_feedback(pairs) == [
        Feedback("Q1", "good1", True, source="s", id="p1"),
        Feedback("Q1", "bad1", False, source="s", id="p1"),
        Feedback("Q2", "good2", True),
        Feedback("Q2", "bad2", False),
    ]


# ---- frozen records and field checks ---------------------------------------------------------


@pytest.mark.parametrize(("record", "name"), [
    (PreferencePair("Q", "a", "b"), "chosen"),
    (Feedback("Q", "a", True), "label"),
    (RankedResponses("Q", ["a", "b"], scores=[1, 0]), "scores"),
    (Judged("Q", "a"), "judgment"),
    (SFTExample("Q", "a"), "completion"),
])
def test_records_are_frozen(record: Any, name: str) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(record, name, "changed")


def test_numbers_are_floats_and_bools_are_not_numbers() -> None:
    pair = PreferencePair("Q", "a", "b", margin=2, rater_share=1)
    assert (pair.margin, pair.rater_share) == (2.0, 1.0)
    assert type(pair.margin) is float and type(pair.rater_share) is float
    error = field_error(lambda: PreferencePair("Q", "a", "b", margin=True))
    assert (error.field, error.reason) == ("margin", "mistyped field")
    error = field_error(lambda: RankedResponses("Q", ["a", "b"], scores=[1, False]))
    assert (error.field, error.reason) == ("scores[1]", "mistyped field")
    error = field_error(lambda: RankedResponses("Q", ["a", "b"], ranks=[True, 2]))
    assert (error.field, error.reason) == ("ranks[0]", "mistyped field")
    error = field_error(lambda: Feedback("Q", "a", 1))
    assert (error.field, error.reason) == ("label", "label not boolean")


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"rater_share": 1.5}, "rater_share"),
    ({"rater_share": -0.1}, "rater_share"),
    ({"margin": math.nan}, "margin"),
    ({"margin": math.inf}, "margin"),
    ({"chosen_token_weights": [1.0, -0.5]}, "chosen_token_weights[1]"),
])
def test_numbers_out_of_range(kwargs: dict, field: str) -> None:
    error = field_error(lambda: PreferencePair("Q", "a", "b", **kwargs))
    assert (error.field, error.reason) == (field, "number out of range")


def test_weights_become_float_tuples() -> None:
    pair = PreferencePair("Q", "a", "b", chosen_token_weights=[1, 0.5], rejected_token_weights=[0])
    assert pair.chosen_token_weights == (1.0, 0.5)
    assert pair.rejected_token_weights == (0.0,)
    error = field_error(lambda: PreferencePair("Q", "a", "b", chosen_token_weights=0.5))
    assert (error.field, error.reason) == ("chosen_token_weights", "mistyped field")


def test_integer_ids_become_strings() -> None:
    assert PreferencePair("Q", "a", "b", id=7).id == "7"
    assert Feedback("Q", "a", True, id=0).id == "0"
    assert RankedResponses("Q", ["a", "b"], ranks=[1, 2], id=12).id == "12"
    assert Judged("Q", "a", id=3).id == "3"
    assert SFTExample("Q", "a", id=-1, source="s").id == "-1"
    for bad in (True, 1.5, ["x"]):
        error = field_error(lambda bad=bad: SFTExample("Q", "a", id=bad))
        assert (error.field, error.reason) == ("id", "mistyped field")


@pytest.mark.parametrize(("kwargs", "field", "reason"), [
    ({"responses": ["a"], "scores": [1]}, "responses", "too few responses"),
    ({"responses": ["a", "b"]}, "scores", "missing field"),
    ({"responses": ["a", "b"], "scores": [1, 0], "ranks": [1, 2]}, "scores", "missing field"),
    ({"responses": ["a", "b"], "scores": [1, 0, 2]}, "scores", "length mismatch"),
    ({"responses": ["a", "b"], "ranks": [1, 0]}, "ranks[1]", "mistyped field"),
])
def test_ranked_response_checks(kwargs: dict, field: str, reason: str) -> None:
    error = field_error(lambda: RankedResponses("Q", **kwargs))
    assert (error.field, error.reason) == (field, reason)


def test_ranked_scores_and_ranks_are_tuples() -> None:
    assert RankedResponses("Q", ["a", "b"], scores=[2, 1.5]).scores == (2.0, 1.5)
    ranked = RankedResponses("Q", ["a", "b"], ranks=[2, 1])
    assert ranked.ranks == (2, 1) and type(ranked.ranks) is tuple
    assert ranked.responses == ("a", "b") and type(ranked.responses) is tuple
