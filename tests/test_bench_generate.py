"""bench/bench_generate.py runs end to end on a small setting: both sides generate the same
number of tokens and a ratio is reported per workload (the timing itself is `make bench`)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_generate.py"


def test_bench_generate_runs_and_reports_ratios(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("bench_generate", BENCH)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    out = tmp_path / "generate.json"
    threads = torch.get_num_threads()  # the bench sets its own; the rest of the session keeps ours
    try:
        code = module.main(["--model", "a", "--prompt-tokens", "8", "--new-tokens", "3", "--alternations", "1",
                            "--threads", "1", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    results = json.loads(out.read_text())["results"]
    assert results["sample"]["tokens"] == 16 * 3 and results["best_of_16"]["tokens"] == 4 * 16 * 3
    for workload in results.values():
        assert workload["ratio"] > 0
