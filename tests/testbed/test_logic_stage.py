"""The demo's "logic" stage: derived losses against DPO over training seeds (small settings:
invariants and bookkeeping, not outcomes), its summary's closed-form numbers, and the report section."""

from __future__ import annotations

import io
import json
import math

from rich.console import Console

from alignlab.testbed.experiment import ExperimentSettings, PolicyResult
from alignlab.testbed.logic import LogicSettings, logic_demo, logic_section, print_logic, summarise


def _result(reward: float, kl: float, accuracy: float) -> PolicyResult:
    return PolicyResult(reward, 0.05, kl, 0.01, 10.0, 0.5, 0.02, ranking_accuracy=accuracy)


def test_summary_is_the_mean_and_standard_error_over_seeds_paired_with_dpo() -> None:
    logic = LogicSettings(losses=(("dpo", "dpo"), ("x", "derived:ref:l -> w given w | l")), seeds=3)
    evaluated = {"base": _result(-0.5, 0.0, 0.6),
                 "dpo @0": _result(0.1, 1.0, 0.7), "dpo @1": _result(0.2, 2.0, 0.7), "dpo @2": _result(0.3, 3.0, 0.7),
                 "x @0": _result(0.0, 1.0, 0.6), "x @1": _result(0.4, 1.0, 0.8), "x @2": _result(0.5, 1.0, 0.7)}
    rows = {r["label"]: r for r in summarise(evaluated, logic)}
    assert list(rows) == ["base", "dpo", "x"]
    assert math.isclose(rows["dpo"]["reward"][0], 0.2) and math.isclose(rows["dpo"]["reward"][1], 0.1 / math.sqrt(3))
    assert rows["dpo"]["vs_baseline"] is None
    diffs = [-0.1, 0.2, 0.2]  # paired by seed
    mean = sum(diffs) / 3
    se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2) / math.sqrt(3)
    assert math.isclose(rows["x"]["vs_baseline"][0], mean) and math.isclose(rows["x"]["vs_baseline"][1], se)
    assert math.isclose(rows["x"]["ranking_accuracy"][0], 0.7) and rows["x"]["kl"] == [1.0, 0.0]


def test_logic_stage_end_to_end_at_small_settings(tmp_path) -> None:
    settings = ExperimentSettings(sft_steps=20, steps=2, pairs=48, heldout_pairs=12, eval_prompts=6, samples=2,
                                  max_new_tokens=6)
    logic = LogicSettings(seeds=2)
    results = logic_demo(settings, logic, tmp_path, Console(file=io.StringIO()))
    stage = results["logic"]
    assert [r["label"] for r in stage["rows"]] == ["base", *(label for label, _ in logic.losses)]
    for label, _ in logic.losses:
        for seed in range(2):
            assert (tmp_path / "runs" / f"logic-{''.join(c if c.isalnum() else '-' for c in label).strip('-')}-{seed}"
                    / "model").is_dir()
    assert json.loads((tmp_path / "results.json").read_text())["logic"]["seeds"] == 2
    assert "base" in results["policies"]
    html = logic_section(stage)
    assert "Losses from logic against DPO" in html and "derived:ref:l -&gt; w given w | l" in html
    out = io.StringIO()
    print_logic(stage, Console(file=out, width=200))
    assert "losses from logic: 2 training seeds" in out.getvalue()
