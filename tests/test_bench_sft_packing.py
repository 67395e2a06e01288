"""bench/bench_sft_packing.py runs end to end on a small setting: every mode covers the same real
tokens, the rows run fewer positions than padding (the timing itself is `make bench`)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_sft_packing.py"


def test_bench_sft_packing_runs_and_reports_every_mode(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("bench_sft_packing", BENCH)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    out = tmp_path / "sft.json"
    threads = torch.get_num_threads()
    try:
        code = module.main(["--examples", "6", "--batch", "3", "--pack-length", "520", "--repeats", "1",
                            "--threads", "1", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    result = json.loads(out.read_text())
    assert set(result["modes"]) == {"padded", "batch-packed", "rows"}
    assert result["tokens"] <= result["row_positions"] < result["padded_positions"]
    assert all(mode["tokens_per_second"] > 0 for mode in result["modes"].values())
