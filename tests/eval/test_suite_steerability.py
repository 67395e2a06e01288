"""The steerability suite (Chang et al. 2025): the metrics on the hand-computed geometry (continuous
and binned), the goal measures on hand-counted texts, the prompt, item files good and bad, and
the CLI end to end on a tiny model."""

from __future__ import annotations

import json
import math

import pytest

from alignlab.errors import DataError
from alignlab.eval.suites import FixedResponder, get_suite
from alignlab.eval.suites.steerability import (
    GOALS,
    aggregate,
    binned_metrics,
    clean_response,
    flesch_kincaid_grade,
    formality,
    instruction,
    mtld,
    normalize,
    steering_metrics,
    syllables,
    text_length,
)


def test_the_worked_example_miscalibration_and_side_effects() -> None:
    m = steering_metrics((0.2, 0.2), (0.6, 0.2), (0.5, 0.5))
    assert m["miscalibration"] == pytest.approx(0.25)  # (−.1, .3)·(.4, 0) = −.04, over ‖(.4, 0)‖² = .16
    assert m["orthogonality"] == pytest.approx(math.sin(math.pi / 4))  # moved (.3, .3): 45° off the request
    assert m["steering_error"] == pytest.approx(math.sqrt(0.1 ** 2 + 0.3 ** 2))


def test_on_target_overshoot_sideways_and_standing_still() -> None:
    exact = steering_metrics((0.2, 0.2), (0.6, 0.2), (0.6, 0.2))
    assert exact["steering_error"] == pytest.approx(0) and exact["miscalibration"] == pytest.approx(0)
    assert exact["orthogonality"] == pytest.approx(0)
    over = steering_metrics((0.2, 0.2), (0.6, 0.2), (0.8, 0.2))
    assert over["miscalibration"] == pytest.approx(0.5) and over["orthogonality"] == pytest.approx(0)
    sideways = steering_metrics((0.2, 0.2), (0.6, 0.2), (0.2, 0.6))
    assert sideways["orthogonality"] == pytest.approx(1.0) and sideways["miscalibration"] == pytest.approx(1.0)
    still = steering_metrics((0.2, 0.2), (0.6, 0.2), (0.2, 0.2))  # no movement: no side effect, a full undershoot
    assert still["orthogonality"] == 0.0 and still["miscalibration"] == pytest.approx(1.0)


def test_binned_form_counts_bins_as_the_authors_code() -> None:
    # edges for a source at .2: clip(.2 + cut points) = 0, 0, 0, .1, .3, .4, .7, 1; bin = #(v ≥ edge) − 1
    # ẑ = (.5, .5) → bins (5, 5); z* = (.6, .2) → (5, 3); moved (2, 2)/7; requested δ = (.4, 0) → (2, 0)/7
    m = binned_metrics((0.2, 0.2), (0.6, 0.2), (0.5, 0.5))
    assert m["steering_error"] == pytest.approx(2 / 7)
    assert m["miscalibration"] == pytest.approx(0.0)  # .5 and .6 share a bin
    assert m["orthogonality"] == pytest.approx(1 / math.sqrt(2))
    # a requested change inside the no-change bin: miscalibration undefined
    assert binned_metrics((0.2, 0.2), (0.25, 0.2), (0.2, 0.2))["miscalibration"] is None


def test_aggregate_mean_median_and_distribution() -> None:
    per_item = [{"steering_error": v, "miscalibration": v, "orthogonality": None} for v in (0.1, 0.2, 0.6)]
    metrics, table = aggregate(per_item)
    values = {m.name: m for m in metrics}
    assert values["steering_error"].value == pytest.approx(0.3)
    assert values["steering_error"].stderr == pytest.approx(math.sqrt(((0.2 ** 2) + 0.1 ** 2 + 0.3 ** 2) / 2 / 3))
    assert values["steering_error_median"].value == pytest.approx(0.2)
    assert values["steering_error_median"].stderr is not None and values["steering_error_median"].stderr > 0
    assert values["orthogonality"].value is None
    row = next(r for r in table if r["metric"] == "miscalibration")
    assert (row["q1"], row["q3"], row["iqr"]) == (0.15, 0.4, 0.25)


def test_flesch_kincaid_on_hand_counted_sentences() -> None:
    # 6 words, 1 sentence, 6 syllables: 0.39·6 + 11.8·1 − 15.59
    assert flesch_kincaid_grade("The cat sat on the mat.") == pytest.approx(0.39 * 6 + 11.8 - 15.59)
    # read-ing is fun-da-men-tal. cats purr: 5 words, 2 sentences, 9 syllables
    assert flesch_kincaid_grade("Reading is fundamental. Cats purr.") == pytest.approx(
        0.39 * 5 / 2 + 11.8 * 9 / 5 - 15.59)
    assert [syllables(w) for w in ("make", "table", "jumped", "wanted", "boxes", "rhythm", "the")] == [1, 2, 1, 2, 2, 1, 1]
    assert flesch_kincaid_grade("") == 0.0


def test_mtld_length_and_normalisation() -> None:
    # forward: TTR falls to 5/7 ≤ .72 at the 7th word (one factor), the rest has TTR 1 (no partial); backward alike
    assert mtld("the cat sat on the mat the cat sat") == pytest.approx(9.0)
    # "x y z x": TTR 3/4 at the end, a partial factor (1 − .75)/(1 − .72) each way
    assert mtld("x y z x") == pytest.approx(4 / (0.25 / 0.28))
    assert mtld("") == 0.0 and mtld("all words differ") == math.inf
    assert text_length("Hello, world... it's fine!") == 7  # Hello , world ... it's fine !
    assert normalize("text_length", 78) == 0.0 and normalize("text_length", 5000) == 1.0
    assert normalize("reading_difficulty", 2.8 + 10.1 / 2) == pytest.approx(0.5)


def test_formality_approximation() -> None:
    # hand-tagged: the/ART cat/NOUN sat/VERB on/ADP the/ART mat/NOUN → (2+2+1 − 1)/6 = 66.7 %, F = (66.7 + 100)/2
    assert formality("The cat sat on the mat.") == pytest.approx((400 / 6 + 100) / 2)
    formal = formality("The committee's evaluation of the proposal indicated substantial deficiencies in the analysis.")
    casual = formality("Oh wow, I really think we should just go now, you know?")
    assert formal > 60 > casual
    assert formality("") == 50.0


def test_prompt_and_response_cleaning() -> None:
    text = instruction({"text_length": 0.6, "formality": 0.1, "reading_difficulty": -0.3, "textual_diversity": -0.15})
    assert text == ("Please rewrite the following, but make it easier to read, use slightly less diverse language, "
                    "much longer, and slightly more formal. Respond with only the rewritten text and do not explain "
                    "your response.")
    assert instruction({"formality": -0.3}).startswith("Please rewrite the following, but make it more informal.")
    assert clean_response("Here is the rewritten text:\nShort text.") == "Short text."
    assert clean_response("Here it is.") == "Here it is."


def test_suite_with_an_echoing_responder() -> None:
    suite = get_suite("steerability")
    items = suite.items()
    result = suite.evaluate(FixedResponder(lambda prompt: [prompt.split("\n\n", 1)[1]]))  # the source, unchanged
    assert len(result.rows) == len(items)
    assert result.metric("miscalibration").value == pytest.approx(1.0)  # no movement: the whole request undershot
    assert result.metric("orthogonality").value == pytest.approx(0.0)
    errors = [math.sqrt(sum(d * d for d in i.deltas.values())) for i in items]
    assert result.metric("steering_error").value == pytest.approx(sum(errors) / len(errors), abs=1e-6)
    per_goal = {r["goal"]: r for r in result.tables["per_goal"]}
    assert set(per_goal) == set(GOALS) and per_goal["formality"]["mean |ẑ − z0| where not requested"] == 0.0
    echo = FixedResponder(lambda prompt: [prompt.split("\n\n", 1)[1]])
    inside = [i for i in items if all(0 < z < 1 for z in i.z0)]
    binned = suite.evaluate(echo, items=inside, binned=True)
    assert binned.inputs["binned"] is True and len(binned.rows) == len(inside) >= 2
    assert binned.metric("orthogonality").value == pytest.approx(0.0)
    assert binned.metric("miscalibration").value == pytest.approx(1.0)
    # the authors' binned form counts a source at the top of a range (z0 = 1) as moved: an unchanged
    # text then shows side effects there
    assert any(z == 1.0 for i in items for z in i.z0)
    assert suite.evaluate(echo, binned=True).metric("orthogonality").value > 0


def test_item_files(tmp_path) -> None:
    suite = get_suite("steerability")
    source = "The cat sat on the mat. " * 20
    good = tmp_path / "items.jsonl"
    good.write_text(json.dumps({"source": source, "request": {"text_length": "+0.2"}, "id": "a"}) + "\n"
                    + json.dumps({"source": source, "target": {"formality": 0.5}}) + "\n")
    items = suite.items(good)
    assert items[0].id == "a" and items[0].deltas == {"text_length": pytest.approx(0.2)}
    assert items[1].target[GOALS.index("formality")] == pytest.approx(0.5)
    assert items[1].target[GOALS.index("text_length")] == items[1].z0[GOALS.index("text_length")]
    cases = [
        ({"source": source, "request": {"text_lenght": 0.1}},
         r"bad.jsonl:2, field 'request.text_lenght'.*Did you mean 'text_length'"),
        ({"source": source, "request": {"text_length": "more"}}, r"field 'request.text_length'.*must be a number"),
        ({"source": source, "request": {"text_length": -0.5}}, r"field 'request.text_length'.*leaves \[0, 1\]"),
        ({"source": source, "target": {"formality": 1.5}}, r"field 'target.formality'.*\[0, 1\]"),
        ({"source": source, "request": {"formality": 0}}, r"no change requested"),
        ({"source": source}, r"field 'request'.*needs a 'request'"),
        ({"source": "", "request": {"text_length": 0.1}}, r"field 'source'"),
        ({"source": source, "request": {"text_length": 0.1}, "target": {"text_length": 0.3}},
         r"field 'target.text_length'.*both requested and targeted"),
    ]
    for row, pattern in cases:
        bad = tmp_path / "bad.jsonl"
        bad.write_text(json.dumps({"source": source, "request": {"text_length": 0.1}}) + "\n" + json.dumps(row) + "\n")
        with pytest.raises(DataError, match=pattern):
            suite.items(bad)


def test_cli_runs_the_suite_on_a_tiny_model(tmp_path) -> None:
    from alignlab.cli import main
    from alignlab.models.tiny import init_tiny_model

    tiny = init_tiny_model(tmp_path / "tiny", hidden_size=32, layers=1, heads=2, intermediate=32)
    out = tmp_path / "out"
    assert main(["eval", "--suite", "steerability", "--model", str(tiny), "--max-new-tokens", "4",
                 "--out", str(out)]) == 0
    result = json.loads((out / "steerability.json").read_text())
    assert result["suite"] == "steerability" and len(result["rows"]) == len(get_suite("steerability").embedded_items())
    assert {"steering_error", "miscalibration", "orthogonality", "orthogonality_median"} <= {
        m["name"] for m in result["metrics"]}
    assert "steerability" in (out / "report.html").read_text()
