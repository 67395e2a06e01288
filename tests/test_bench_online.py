"""bench/bench_online.py runs end to end on a small setting: the alignlab side trains 2 steps in
its own subprocess and reports positive speed, memory and a step-time split (the timing itself
is `make bench`); the TRL side only where TRL is installed."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_online.py"
SMALL = ["--model", "a", "--steps", "2", "--repeats", "1", "--prompts", "2", "--generations", "2",
         "--max-new-tokens", "4", "--threads", "1"]


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_online", BENCH)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def check_summary(result: dict, tool: str) -> None:
    summary = result["summary"][tool]
    for key in ("s_per_step", "tokens_per_s", "cpu_s_per_step", "tokens_per_cpu_s", "tokens_per_step", "wall_s",
                "peak_rss_gib"):
        assert summary[key] > 0, key
    for key in ("phases", "phases_cpu"):
        assert set(summary[key]) == {"sampling", "scoring", "other_rollout", "update"}
        assert summary[key]["sampling"] > 0 and summary[key]["update"] > 0
    assert 0 <= summary["first_step_reward"] <= 1
    raw = result["raw"][tool][0]
    assert len(raw["step_seconds"]) == len(raw["step_cpu_seconds"]) == len(raw["phases"]) == 2
    # 2 prompts × 2 completions of at most 4 tokens, each row with its prompt (BOS included)
    assert all(t > 4 for t in raw["step_tokens"])


def test_rewards_agree_between_the_two_calling_conventions() -> None:
    module = load_bench()
    completions = ["Banana split", "xyz", "", "AEIOU!"]
    assert module.trl_vowel_share(["p"] * 4, completions) == [module.vowel_share("p", c) for c in completions]
    assert module.vowel_share("p", "aab") == pytest.approx(2 / 3) and module.vowel_share("p", "123") == 0.0


def test_bench_online_alignlab_side_reports_positive_fields(tmp_path: Path) -> None:
    module = load_bench()
    out = tmp_path / "online.json"
    code = module.main([*SMALL, "--tools", "alignlab", "--out", str(out), "--workdir", str(tmp_path / "work")])
    assert code == 0
    result = json.loads(out.read_text())
    check_summary(result, "alignlab")
    assert "| alignlab |" in result["table"]


@pytest.mark.slow  # about 20 s: TRL's import and trainer set-up
def test_bench_online_trl_side_reports_positive_fields(tmp_path: Path) -> None:
    pytest.importorskip("trl")
    module = load_bench()
    out = tmp_path / "online.json"
    code = module.main([*SMALL, "--tools", "trl", "--out", str(out), "--workdir", str(tmp_path / "work")])
    assert code == 0
    check_summary(json.loads(out.read_text()), "trl")
