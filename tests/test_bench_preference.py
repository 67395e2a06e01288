"""bench/bench_preference.py: the summary arithmetic and tables, CPU and GPU variants, on made-up
runs (the benchmark itself is `make bench`; a GPU run needs a CUDA machine)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_preference.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_preference", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_preference"] = module
    spec.loader.exec_module(module)
    return module


def fake_run(seconds: list[float], rss_gib: float, gpu_gib: float | None = None) -> dict:
    return {"step_seconds": seconds, "wall_s": sum(seconds) + 10.0, "peak_rss_bytes": int(rss_gib * 2**30),
            "peak_gpu_bytes": None if gpu_gib is None else int(gpu_gib * 2**30)}


SETUP = {"params": 100e6, "tokens_per_step": 1600.0}


def test_cpu_summary_takes_steady_state_medians_and_ratios(bench) -> None:
    args = bench.parse_args(["--steps", "6", "--pairs", "64"])
    ours = bench.summarise([fake_run([9, 9, 2, 2, 3, 2], 2.0)], SETUP, args, None)
    assert ours["s_per_step"] == 2.0  # the first two steps are warm-up
    assert ours["tokens_per_s"] == 800.0
    assert ours["epoch_wall_s_estimate"] == 27 + 10 + (8 - 6) * 2.0
    assert "mfu" not in ours
    theirs = bench.summarise([fake_run([9, 9, 5, 4, 4, 6], 4.0)], SETUP, args, None)
    text = bench.table({"alignlab": ours, "trl": theirs}, 6)
    assert "| alignlab vs trl | 2.25× | 0.44× |" in text and "| 0.50× |" in text


def test_gpu_summary_reports_mfu_and_gpu_memory(bench) -> None:
    args = bench.parse_args(["--steps", "4", "--device", "cuda", "--dtype", "bf16"])
    ours = bench.summarise([fake_run([1, 1, 0.5, 0.5], 3.0, gpu_gib=10.0)], SETUP, args, 1e15)
    assert ours["mfu"] == pytest.approx(6 * 100e6 * 1600 / 0.5 / 1e15)
    assert ours["peak_gpu_gib"] == pytest.approx(10.0)
    theirs = bench.summarise([fake_run([1, 1, 1.0, 1.0], 3.0, gpu_gib=20.0)], SETUP, args, None)
    assert theirs["mfu"] is None  # an unknown card: no MFU, not a made-up one
    text = bench.table({"alignlab": ours, "trl": theirs}, 4)
    assert "| 10.00 GiB | 0.2% |" in text and "| n/a |" in text
    assert "| alignlab vs trl | 2.00× | 0.50× |" in text and text.rstrip().endswith("| 0.50× |")


def test_every_model_shape_names_a_known_architecture(bench) -> None:
    for shape in bench.MODELS.values():
        assert shape.get("architecture", "llama") in ("llama", "qwen2")
        assert shape["hidden_size"] % shape["num_attention_heads"] == 0


def test_table_names_trl_optimizer_and_speed_options(bench) -> None:
    args = bench.parse_args(["--steps", "4", "--pairs", "64"])
    ours = bench.summarise([fake_run([2, 2, 1, 1], 2.0)], SETUP, args, None)
    theirs = bench.summarise([fake_run([2, 2, 2, 2], 4.0)], SETUP, args, None)
    settings = bench.trl_settings("cpu")
    assert settings["optim"] == "adamw_torch_fused" and settings["attn_implementation"] == "sdpa"
    assert not settings["dataloader_pin_memory"] and bench.trl_settings("cuda")["dataloader_pin_memory"]
    text = bench.table({"alignlab": ours, "trl": theirs}, 4, settings)
    notes = text.split("\n\n")[-1]
    assert notes.startswith("TRL: optim=adamw_torch_fused, attn_implementation=sdpa,")
    assert "- optim=adamw_torch_fused: " in notes and "padding_free (" in notes and "torch_compile (" in notes
    # no TRL tool in the table, or no settings given: no TRL line
    assert "TRL:" not in bench.table({"alignlab": ours}, 4, settings)
    assert "TRL:" not in bench.table({"alignlab": ours, "trl": theirs}, 4)
