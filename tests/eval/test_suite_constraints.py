"""The constraints suite (ACT, Wang et al. 2024): every verifier on strings that do and do not
satisfy it, CSR and the metrics on hand-computed values, ACT's pairs against the CSR order (none
among ties), item files good and bad, and the CLI end to end on a tiny model."""

from __future__ import annotations

import json

import pytest

from alignlab.data.load import load_records
from alignlab.data.records import PreferencePair, RankedResponses
from alignlab.errors import DataError
from alignlab.eval.suites import FixedResponder, get_suite
from alignlab.eval.suites.constraints import (
    CONSTRAINTS,
    ConstraintItem,
    act_pairs,
    build_constraint,
    constraint_metrics,
    csr,
)

PASS_FAIL = [
    # (spec, prompt, satisfying response, violating response)
    ({"type": "max_words", "value": 3}, "", "one two three", "one two three four"),
    ({"type": "min_words", "value": 3}, "", "one two three", "one two"),
    ({"type": "max_sentences", "value": 2}, "", "One. Two!", "One. Two? Three."),
    ({"type": "min_sentences", "value": 2}, "", "One. Two", "Just one sentence."),
    ({"type": "max_chars", "value": 5}, "", "abcde", "abcdef"),
    ({"type": "min_chars", "value": 5}, "", "ab de", "abcd"),
    ({"type": "include_keywords", "value": ["cat", "red hat"]}, "", "A Cat in a RED HAT.", "A catalog in a red hat."),
    ({"type": "forbidden_words", "value": ["water"]}, "", "Waterfalls are wet.", "I drink Water."),
    ({"type": "json_format"}, "", '```json\n[1, 2]\n```', "{'a': 1}"),
    ({"type": "json_format", "value": ["name", "age"]}, "", '{"name": "Al", "age": 3}', '{"name": "Al"}'),
    ({"type": "starts_with", "value": "Yes"}, "", "  yes, they can.", "Well, yes."),
    ({"type": "ends_with", "value": "Thank you."}, "", "Sure. Thank you.\n", "Thank you. Bye."),
    ({"type": "lowercase"}, "", "all lower, 123.", "Not lower."),
    ({"type": "uppercase"}, "", "HELLO THERE!", "HELLO there"),
    ({"type": "bullet_count", "value": 2}, "", "Fruits:\n- apple\n* pear", "- apple\n- pear\n- plum"),
    ({"type": "paragraphs", "value": 2}, "", "First.\n\n\nSecond.\n", "First.\nStill first."),
    ({"type": "english_ascii"}, "", "Plain English.", "Un café, s'il vous plaît."),
    ({"type": "one_of", "value": ["fruit", "vegetable"]}, "", ' "Fruit." ', "It is a fruit."),
    ({"type": "extractive", "value": 0.75}, "The committee approved the budget on Monday.",
     "Committee approved budget Monday.", "The council rejected the budget."),
]


@pytest.mark.parametrize(("spec", "prompt", "good", "bad"), PASS_FAIL, ids=[s[0]["type"] for s in PASS_FAIL])
def test_each_verifier_on_satisfying_and_violating_strings(spec, prompt, good, bad) -> None:
    constraint = build_constraint(spec)
    assert constraint.check(good, prompt) is True
    assert constraint.check(bad, prompt) is False
    assert csr([constraint], good, prompt)[0] == 1.0 and csr([constraint], bad, prompt)[0] == 0.0


def test_every_constraint_type_is_exercised_and_empty_responses_fail_the_affirmative_ones() -> None:
    assert {s[0]["type"] for s in PASS_FAIL} == set(CONSTRAINTS)
    for name in ("lowercase", "uppercase", "english_ascii", "json_format", "min_words"):
        assert build_constraint({"type": name, "value": 1} if name == "min_words" else name).check("") is False
    assert build_constraint({"type": "extractive", "value": 0.5}).check("", "some text") is False


def test_csr_is_the_share_of_satisfied_constraints() -> None:
    constraints = [build_constraint(s) for s in ({"type": "max_words", "value": 3}, "lowercase",
                                                 {"type": "include_keywords", "value": "cat"})]
    assert csr(constraints, "the cat sat") == (1.0, [True, True, True])
    assert csr(constraints, "The cat sat down") == (pytest.approx(1 / 3), [False, False, True])
    assert csr(constraints, "Dogs bark loudly here") == (0.0, [False, False, False])
    with pytest.raises(ValueError, match="unknown constraint type 'max_word'.*Did you mean 'max_words'"):
        build_constraint({"type": "max_word", "value": 3})


def test_metrics_on_hand_computed_rates() -> None:
    metrics = {m.name: m for m in constraint_metrics([1.0, 0.5, 0.0])}
    assert metrics["csr"].value == pytest.approx(0.5)
    assert metrics["csr"].stderr == pytest.approx(0.5 / 3 ** 0.5)  # s.d. 0.5 over 3 items
    assert metrics["all_satisfied"].value == pytest.approx(1 / 3)
    assert metrics["all_satisfied"].stderr == pytest.approx((1 / 3 * 2 / 3 / 3) ** 0.5)


def test_suite_with_fixed_responses_and_the_per_type_table() -> None:
    suite = get_suite("constraints")
    items = [
        ConstraintItem("p1", (build_constraint({"type": "max_words", "value": 3}), build_constraint("lowercase"))),
        ConstraintItem("p2", (build_constraint({"type": "max_words", "value": 3}),)),
        ConstraintItem("p3", (build_constraint("lowercase"), build_constraint({"type": "min_words", "value": 2}))),
    ]
    answers = {"p1": ["short answer"], "p2": ["far too many words here"], "p3": ["Two words"]}
    result = suite.evaluate(FixedResponder(answers), items=items)
    assert [r["csr"] for r in result.rows] == [1.0, 0.0, 0.5]
    assert result.metric("csr").value == pytest.approx(0.5)
    assert result.metric("all_satisfied").value == pytest.approx(1 / 3)
    table = {row["constraint type"]: row for row in result.tables["per_constraint_type"]}
    assert (table["max_words"]["instances"], table["max_words"]["satisfied"]) == (2, 1)
    assert table["lowercase"]["share"] == 0.5 and table["min_words"]["share"] == 1.0
    assert result.rows[2]["constraints"][0] == {"type": "lowercase", "satisfied": False}
    # the embedded set: a perfect responder is not needed, every item is judged
    embedded = suite.evaluate(FixedResponder(lambda p: ["- a\n- b\n- c"]))
    assert len(embedded.rows) == len(suite.embedded_items()) and 0 < embedded.metric("csr").value < 1


def test_append_constraints_states_them_in_the_prompt() -> None:
    item = ConstraintItem("Say hi.", (build_constraint({"type": "max_words", "value": 2}),))
    assert item.text() == "Say hi."
    assert item.text(append_constraints=True) == "Say hi.\n\nConstraints:\n- Use at most 2 words."


def test_act_pairs_follow_the_csr_order_and_skip_ties(tmp_path) -> None:
    item = ConstraintItem("Name a fruit in lowercase, in at most two words.",
                          (build_constraint("lowercase"), build_constraint({"type": "max_words", "value": 2})))
    tied = ConstraintItem("Say yes.", (build_constraint({"type": "starts_with", "value": "yes"}),))
    samples = [["Apple", "a ripe red apple", "apple", "Big Red Apple"], ["yes", "yes indeed"]]
    # CSRs: "Apple" 0.5, "a ripe red apple" 0.5, "apple" 1.0, "Big Red Apple" 0.0
    data = act_pairs([item, tied], samples)
    assert data.counts == {"prompts": 2, "pairs": 5, "ranked": 1, "all_tied": 1}
    score = {r: csr(item.constraints, r)[0] for r in samples[0]}
    assert all(score[p["chosen"]] > score[p["rejected"]] for p in data.pairs)
    assert {(p["chosen"], p["rejected"]) for p in data.pairs} == {
        ("apple", "Apple"), ("apple", "a ripe red apple"), ("apple", "Big Red Apple"),
        ("Apple", "Big Red Apple"), ("a ripe red apple", "Big Red Apple")}
    assert not any({p["chosen"], p["rejected"]} == {"Apple", "a ripe red apple"} for p in data.pairs)
    assert data.ranked == [{"prompt": item.prompt, "responses": ["apple", "Apple", "a ripe red apple", "Big Red Apple"],
                            "scores": [1.0, 0.5, 0.5, 0.0]}]
    paths = data.write(tmp_path / "act")
    pairs = load_records(paths["pairs"]).records
    ranked = load_records(paths["ranked"]).records
    assert len(pairs) == 5 and all(isinstance(r, PreferencePair) for r in pairs)
    assert len(ranked) == 1 and isinstance(ranked[0], RankedResponses) and ranked[0].scores == (1.0, 0.5, 0.5, 0.0)


def test_item_files(tmp_path) -> None:
    suite = get_suite("constraints")
    good = tmp_path / "items.jsonl"
    good.write_text('{"prompt": "Hi", "constraints": [{"type": "max_words", "value": 5}, "lowercase"], "id": "a"}\n'
                    '{"prompt": "JSON", "constraints": [{"type": "json_format", "value": ["k"]}]}\n')
    items = suite.items(good)
    assert items[0].id == "a" and [c.type for c in items[0].constraints] == ["max_words", "lowercase"]
    assert items[1].constraints[0].value == ("k",)
    cases = {
        '{"prompt": "Hi", "constraints": [{"type": "max_word", "value": 5}]}':
            r"bad.jsonl:2, field 'constraints\[0\]\.type': unknown constraint type 'max_word'(.|\n)*known types: "
            r"max_words",
        '{"prompt": "Hi", "constraints": [{"type": "max_words", "value": -1}]}':
            r"bad.jsonl:2, field 'constraints\[0\]\.value'.*integer ≥ 0",
        '{"prompt": "Hi", "constraints": [{"type": "lowercase"}, {"type": "one_of", "value": []}]}':
            r"constraints\[1\]\.value",
        '{"prompt": "Hi", "constraints": []}': r"field 'constraints'.*empty",
        '{"prompt": "Hi", "constraints": [{"type": "lowercase", "values": 1}]}': r"constraints\[0\]\.values",
        '{"prompt": "", "constraints": ["lowercase"]}': r"field 'prompt'",
        '{"prompt": "Hi", "constraints": ["uppercase"], "extra": 1}': r"field 'extra'",
    }
    for line, pattern in cases.items():
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"prompt": "ok", "constraints": ["lowercase"]}\n' + line + "\n")
        with pytest.raises(DataError, match=pattern):
            suite.items(bad)


def test_cli_runs_the_suite_on_a_tiny_model(tmp_path) -> None:
    from alignlab.cli import main
    from alignlab.models.tiny import init_tiny_model

    tiny = init_tiny_model(tmp_path / "tiny", hidden_size=32, layers=1, heads=2, intermediate=32)
    out = tmp_path / "out"
    assert main(["eval", "--suite", "constraints", "--model", str(tiny), "--max-new-tokens", "4",
                 "--out", str(out)]) == 0
    result = json.loads((out / "constraints.json").read_text())
    assert result["suite"] == "constraints" and len(result["rows"]) == len(get_suite("constraints").embedded_items())
    assert {m["name"] for m in result["metrics"]} == {"csr", "all_satisfied"}
    assert result["tables"]["per_constraint_type"]
    assert "constraints" in (out / "report.html").read_text()
