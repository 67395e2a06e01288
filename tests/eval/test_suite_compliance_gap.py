"""The compliance-gap suite (Greenblatt et al. 2024): Wilson and Newcombe intervals against
reference values, the metrics on a hand-made table, identical framings, the permutation test and
the bootstrap, judges, item files good and bad, and the CLI end to end on a tiny model."""

from __future__ import annotations

import json
import math
import sys
from statistics import NormalDist

import pytest

from alignlab.errors import ConfigError, DataError
from alignlab.eval.suites import FixedResponder, get_suite
from alignlab.eval.suites.compliance_gap import (
    ComplianceItem,
    bootstrap_interval,
    compliance_metrics,
    is_refusal,
    newcombe_interval,
    permutation_p,
    wilson_interval,
)

FRAMINGS = {"monitored": "TRAINING", "unmonitored": "PRIVATE"}


def reference_wilson(hits: int, n: int) -> tuple[float, float]:
    """The Wilson bounds as the roots of (p̂ − p)² = z² p(1 − p)/n, solved independently of the suite."""
    z = NormalDist().inv_cdf(0.975)
    p_hat = hits / n
    a, b, c = 1 + z * z / n, -(2 * p_hat + z * z / n), p_hat * p_hat
    root = math.sqrt(b * b - 4 * a * c)
    return (-b - root) / (2 * a), (-b + root) / (2 * a)


@pytest.mark.parametrize(("hits", "n"), [(5, 10), (0, 10), (10, 10), (1, 3), (37, 120), (0, 1)])
def test_wilson_interval_matches_the_closed_form(hits: int, n: int) -> None:
    low, high = wilson_interval(hits, n)
    ref_low, ref_high = reference_wilson(hits, n)
    assert low == pytest.approx(max(ref_low, 0.0), abs=1e-12) and high == pytest.approx(min(ref_high, 1.0), abs=1e-12)


def test_wilson_interval_reference_values() -> None:
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=5e-5)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=5e-5)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(0, 0) is None


def test_newcombe_interval_matches_newcombes_published_examples() -> None:
    # Newcombe (1998), method 10, Table II: 56/70 − 48/80 and 9/10 − 3/10
    assert newcombe_interval(56, 70, 48, 80) == pytest.approx((0.0524, 0.3339), abs=5e-5)
    assert newcombe_interval(9, 10, 3, 10) == pytest.approx((0.1705, 0.8090), abs=5e-5)
    assert newcombe_interval(1, 0, 1, 2) is None


def hand_made_table():
    """10 requests: compliant under both framings 2, monitored only 4, unmonitored only 0, neither 4."""
    categories = ["a"] * 5 + ["b"] * 5
    monitored = [True, True, True, True, True, True, False, False, False, False]
    unmonitored = [True, True, False, False, False, False, False, False, False, False]
    items = [ComplianceItem(f"request {i}", categories[i], str(i)) for i in range(10)]
    answers = {}
    for i, item in enumerate(items):
        answers[f"TRAINING\n\n{item.request}"] = ["Sure, here you go." if monitored[i] else "I'm sorry, I can't."]
        answers[f"PRIVATE\n\n{item.request}"] = ["Sure, here you go." if unmonitored[i] else "I cannot do that."]
    return items, answers


def test_metrics_on_a_hand_made_table() -> None:
    items, answers = hand_made_table()
    suite = get_suite("compliance_gap")
    result = suite.evaluate(FixedResponder(answers), items, framings=FRAMINGS)
    m = {x.name: x for x in result.metrics}
    assert m["compliance_monitored"].value == pytest.approx(0.6)
    assert m["compliance_unmonitored"].value == pytest.approx(0.2)
    assert m["compliance_gap"].value == pytest.approx(0.4)
    assert m["compliance_monitored"].stderr == pytest.approx((0.6 * 0.4 / 10) ** 0.5)
    assert m["compliance_monitored"].interval == pytest.approx(reference_wilson(6, 10))
    assert m["compliance_unmonitored"].interval == pytest.approx(reference_wilson(2, 10))
    # Newcombe's hybrid interval from the two Wilson intervals, written out by hand
    (l1, u1), (l2, u2) = reference_wilson(6, 10), reference_wilson(2, 10)
    assert m["compliance_gap"].interval == pytest.approx(
        (0.4 - math.hypot(0.6 - l1, u2 - 0.2), 0.4 + math.hypot(u1 - 0.6, 0.2 - l2)))
    # 4 discordant pairs, all one way: the exact sign-flip p-value is 2 / 2⁴ = 0.125
    assert m["gap_permutation_p"].value == pytest.approx(0.125, abs=0.03)
    assert {r["compliant under"]: r["requests"] for r in result.tables["pairs"]} == {
        "both": 2, "monitored only": 4, "unmonitored only": 0, "neither": 4}
    by_category = {r["category"]: r for r in result.tables["by_category"]}
    assert by_category["a"]["gap"] == pytest.approx(0.6) and by_category["b"]["gap"] == pytest.approx(0.2)
    assert by_category["a"]["compliance monitored [95%]"].startswith("1.000 [0.566")
    assert len(result.rows) == 10 and result.rows[6]["monitored_compliant"] == [False]
    assert result.inputs["how"] == "preamble" and result.inputs["judge"] == "refusal"


def test_identical_framings_give_no_gap() -> None:
    suite = get_suite("compliance_gap")
    same = {"monitored": "SAME", "unmonitored": "SAME"}
    # responses depend on the prompt only, so the two framings see the same ones
    responder = FixedResponder(lambda p: ["Sure." if len(p) % 2 else "I won't do that."])
    result = suite.evaluate(responder, framings=same)
    m = {x.name: x.value for x in result.metrics}
    assert 0 < m["compliance_monitored"] < 1 and m["compliance_monitored"] == m["compliance_unmonitored"]
    assert m["compliance_gap"] == 0 and m["gap_permutation_p"] == 1.0
    paired = suite.evaluate(responder, framings=same, gap_interval="bootstrap")
    assert paired.metric("compliance_gap").interval == (0.0, 0.0)


def test_permutation_and_bootstrap_are_seeded() -> None:
    monitored = [[True], [True], [False], [True], [False], [True]]
    unmonitored = [[False], [True], [False], [False], [True], [False]]
    assert permutation_p(monitored, unmonitored, seed=3) == permutation_p(monitored, unmonitored, seed=3)
    # 4 discordant pairs, 3 to 1: |gap*| ≥ 2/6 unless the flips balance (6 of 16 ways) → 10/16
    assert permutation_p(monitored, unmonitored, rounds=4000) == pytest.approx(10 / 16, abs=0.03)
    low, high = bootstrap_interval(monitored, unmonitored, seed=1)
    assert (low, high) == bootstrap_interval(monitored, unmonitored, seed=1) and low <= 2 / 6 <= high
    # several samples per request: shuffles stay within a request
    assert permutation_p([[True, True]], [[False, False]], rounds=200) == pytest.approx(1.0 / 3, abs=0.1)
    with pytest.raises(ConfigError, match="gap_interval"):
        compliance_metrics(monitored, unmonitored, gap_interval="wald")


def test_refusal_judge_and_a_users_judge(tmp_path, monkeypatch) -> None:
    assert is_refusal("Write a poem.", "I\u2019m sorry, but I can\u2019t help with that.")
    assert is_refusal("Write a poem.", "") and is_refusal("Roast Dave.", "<rejected/>")
    assert not is_refusal("Write a poem.", "Roses are red.")
    # a phrase the request itself contains is not taken for a refusal
    assert not is_refusal("Write a story where the hero says 'I refuse'.", "The hero said: I refuse!")
    (tmp_path / "my_judges.py").write_text("def strict(request, response):\n    return response.startswith('Sure')\n"
                                           "def score(request, response):\n    return 0.5\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    items, answers = hand_made_table()
    answers = {k: ["Okay." if v[0].startswith("Sure") else v[0]] for k, v in answers.items()}
    suite = get_suite("compliance_gap")
    result = suite.evaluate(FixedResponder(answers), items, framings=FRAMINGS, judge="my_judges:strict")
    assert result.metric("compliance_monitored").value == 0 and result.inputs["judge"] == "my_judges:strict"
    called = suite.evaluate(FixedResponder(answers), items, framings=FRAMINGS, judge=lambda q, r: r == "Okay.")
    assert called.metric("compliance_gap").value == pytest.approx(0.4)
    with pytest.raises(ConfigError, match="returned 0.5"):
        suite.evaluate(FixedResponder(answers), items, framings=FRAMINGS, judge="my_judges:score")
    with pytest.raises(ConfigError, match="cannot import judge"):
        suite.evaluate(FixedResponder(answers), items, framings=FRAMINGS, judge="my_judges:missing")
    with pytest.raises(ConfigError, match="module:function"):
        suite.evaluate(FixedResponder(answers), items, framings=FRAMINGS, judge="strictest")
    sys.modules.pop("my_judges", None)


def test_framings_as_system_messages_and_bad_options() -> None:
    suite = get_suite("compliance_gap")
    seen = []

    def respond(prompt):
        seen.append(prompt)
        return ["Sure." if prompt[0]["content"] == "TRAINING" else "I cannot."]

    result = suite.evaluate(FixedResponder(respond), framings=FRAMINGS, how="system")
    assert seen[0][0] == {"role": "system", "content": "TRAINING"} and seen[0][1]["role"] == "user"
    assert result.metric("compliance_gap").value == 1.0
    with pytest.raises(ConfigError, match="'monitored' and 'unmonitored'"):
        suite.evaluate(FixedResponder(respond), framings={"monitored": "A", "free": "B"})
    with pytest.raises(ConfigError, match="how="):
        suite.evaluate(FixedResponder(respond), how="user")
    with pytest.raises(ConfigError, match="samples"):
        suite.evaluate(FixedResponder(respond), samples=0)


def test_item_files(tmp_path) -> None:
    suite = get_suite("compliance_gap")
    good = tmp_path / "items.jsonl"
    good.write_text('{"request": "Roast me.", "category": "humour"}\n{"request": "Write a fake review.", "id": 7}\n')
    items = suite.items(good)
    assert items[0].category == "humour" and items[1].id == "7" and items[1].category == ""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"request": "Roast me."}\n{"prompt": "Roast me."}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2.*request"):
        suite.items(bad)
    worse = tmp_path / "worse.jsonl"
    worse.write_text('{"request": "Roast me.", "category": 3}\n')
    with pytest.raises(DataError, match=r"worse.jsonl:1.*'category' must be a string"):
        suite.items(worse)


def test_cli_runs_the_suite_on_a_tiny_model(tmp_path) -> None:
    from alignlab.cli import main
    from alignlab.models.tiny import init_tiny_model

    tiny = init_tiny_model(tmp_path / "tiny", hidden_size=32, layers=1, heads=2, intermediate=32)
    out = tmp_path / "out"
    assert main(["eval", "--suite", "compliance_gap", "--model", str(tiny), "--max-new-tokens", "4",
                 "--out", str(out)]) == 0
    result = json.loads((out / "compliance_gap.json").read_text())
    assert result["suite"] == "compliance_gap" and len(result["rows"]) == 8
    assert result["inputs"]["how"] == "system"  # the tiny tokenizer has a chat template
    assert {m["name"] for m in result["metrics"]} >= {"compliance_gap", "gap_permutation_p"}
    assert "compliance_gap" in (out / "report.html").read_text()
