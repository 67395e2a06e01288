"""PGR and its standard error on known numbers (the measurement half of the weak_to_strong suite).

Example: ``pytest tests/eval/test_suite_weak_to_strong.py``
"""

from __future__ import annotations

import pytest

from alignlab.eval.suites.weak_to_strong import (
    performance_gap_recovered,
    pgr_bootstrap,
    pooled_accuracy,
    weak_to_strong_metrics,
)


def test_pgr_closed_form():
    assert performance_gap_recovered(0.6, 0.7, 0.8) == pytest.approx(0.5)
    assert performance_gap_recovered(0.6, 0.6, 0.8) == pytest.approx(0.0)
    assert performance_gap_recovered(0.6, 0.8, 0.8) == pytest.approx(1.0)
    assert performance_gap_recovered(0.5, 0.9, 0.7) == pytest.approx(2.0)  # a student above its ceiling
    assert performance_gap_recovered(0.6, 0.5, 0.8) == pytest.approx(-0.5)
    assert performance_gap_recovered(0.7, 0.8, 0.7) is None  # no gap to recover
    assert performance_gap_recovered(0.8, 0.8, 0.7) is None


def test_pooled_accuracy_over_seeds_and_items():
    correct = [[True, False, True, False], [True, True, False, False]]
    assert pooled_accuracy(correct) == pytest.approx(0.5)
    assert pooled_accuracy(correct, seeds=[1]) == pytest.approx(0.5)
    assert pooled_accuracy(correct, items=[0, 0, 1]) == pytest.approx(5 / 6)


def test_bootstrap_se_is_the_binomial_se_when_only_the_student_varies():
    # weak always wrong, ceiling always right: PGR is the student's accuracy, whose s.e. over
    # n test items is sqrt(p(1-p)/n) = 0.5 / 20 = 0.025.
    n = 400
    correct = {"weak": [[False] * n], "ceiling": [[True] * n], "student": [[i % 2 == 0 for i in range(n)]]}
    point, stderr, undefined = pgr_bootstrap(correct, resamples=3000, seed=1)
    assert point == pytest.approx(0.5)
    assert stderr == pytest.approx(0.025, abs=0.002)
    assert undefined == 0


def test_bootstrap_resamples_seeds():
    # Two seeds, the student right everywhere in one and nowhere in the other: seed draws (0, 0),
    # (1, 1) and the two mixed ones give PGR 1, 0 and 0.5 with probabilities 1/4, 1/4, 1/2, whose
    # standard deviation is sqrt(2 · 1/4 · 1/4) = 0.3536.
    n = 50
    correct = {"weak": [[False] * n] * 2, "ceiling": [[True] * n] * 2, "student": [[True] * n, [False] * n]}
    point, stderr, _ = pgr_bootstrap(correct, resamples=4000, seed=0)
    assert point == pytest.approx(0.5)
    assert stderr == pytest.approx(0.3536, abs=0.015)


def test_no_gap_anywhere_is_undefined_not_a_division_by_zero():
    correct = {role: [[True, False, True]] for role in ("weak", "student", "ceiling")}
    point, stderr, undefined = pgr_bootstrap(correct, resamples=50)
    assert point is None and stderr is None and undefined == 50


def test_metrics_and_per_seed_table():
    correct = {"weak": [[True, False, False, False], [True, True, False, False]],
               "student": [[True, True, False, False], [True, True, True, False]],
               "ceiling": [[True, True, True, False], [True, True, True, True]]}
    metrics, table = weak_to_strong_metrics(correct, resamples=200)
    by_name = {m.name: m for m in metrics}
    assert by_name["weak_accuracy"].value == pytest.approx(3 / 8)
    assert by_name["student_accuracy"].value == pytest.approx(5 / 8)
    assert by_name["ceiling_accuracy"].value == pytest.approx(7 / 8)
    assert by_name["pgr"].value == pytest.approx((5 / 8 - 3 / 8) / (7 / 8 - 3 / 8))  # 0.5
    # s.e. over the two seeds: per-seed weak accuracies 0.25 and 0.5 → sd 0.1768, / sqrt 2
    assert by_name["weak_accuracy"].stderr == pytest.approx(0.125)
    assert by_name["pgr"].stderr is not None and by_name["pgr"].stderr > 0
    assert table == [{"seed": 0, "weak accuracy": 0.25, "student accuracy": 0.5, "ceiling accuracy": 0.75,
                      "PGR": 0.5},
                     {"seed": 1, "weak accuracy": 0.5, "student accuracy": 0.75, "ceiling accuracy": 1.0,
                      "PGR": 0.5}]
    assert all(m.definition for m in metrics)


def test_one_seed_uses_the_binomial_standard_error():
    correct = {"weak": [[True, False, False, False]], "student": [[True, True, False, False]],
               "ceiling": [[True, True, True, False]]}
    metrics, _ = weak_to_strong_metrics(correct, resamples=100)
    assert metrics[0].stderr == pytest.approx((0.25 * 0.75 / 4) ** 0.5)


@pytest.mark.parametrize("correct", [
    {"weak": [[True]], "student": [[True]]},  # a role missing
    {"weak": [[True, False]], "student": [[True]], "ceiling": [[True, False]]},  # other items
    {"weak": [[True]], "student": [[True], [False]], "ceiling": [[True]]},  # other seeds
    {"weak": [[]], "student": [[]], "ceiling": [[]]},  # no items
])
def test_inconsistent_shapes_are_refused(correct):
    with pytest.raises(ValueError, match="weak-to-strong needs|same seeds"):
        weak_to_strong_metrics(correct)
