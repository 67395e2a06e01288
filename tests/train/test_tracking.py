"""train.report_to: W&B (offline) and MLflow (file store) receive exactly the numbers of
metrics.jsonl; a tracker that is not installed, or unknown, fails before any model loads."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from rich.console import Console

import alignlab
from alignlab.errors import ConfigError
from alignlab.models.tiny import init_tiny_model

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return init_tiny_model(tmp_path_factory.mktemp("track") / "tiny", hidden_size=32, layers=2, heads=4, intermediate=64)


def run(tiny: Path, out: Path, *trackers: str) -> Path:
    config = {"data": {"path": str(ROOT / "examples" / "data" / "pairs.jsonl"),
                       "eval_path": str(ROOT / "examples" / "data" / "pairs_eval.jsonl")},
              "model": {"name_or_path": str(tiny)},
              "train": {"loss": "simpo", "loss_kwargs": {}, "max_steps": 3, "batch_size": 4, "eval_every": 2,
                        "report_to": list(trackers), "output_dir": str(out)}}
    return alignlab.train(config, console=Console(quiet=True))


def jsonl(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_mlflow_metrics_equal_metrics_jsonl(tiny, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = run(tiny, tmp_path / "ml", "mlflow")
    ids = json.loads((out / "trackers.json").read_text())
    client = MlflowClient(tracking_uri=(out / "mlruns").resolve().as_uri())
    records = jsonl(out)
    for split, name in (("train", "loss"), ("train", "rewards/margins"), ("eval", "loss")):
        history = sorted((m.step, m.value) for m in client.get_metric_history(ids["mlflow"], f"{split}/{name}"))
        expected = sorted((r["step"], r[name]) for r in records if r["split"] == split)
        assert [s for s, _ in history] == [s for s, _ in expected]
        assert [v for _, v in history] == pytest.approx([v for _, v in expected], rel=1e-12), (split, name)
    params = client.get_run(ids["mlflow"]).data.params
    assert params["train.loss"] == "simpo" and params["train.max_steps"] == "3"


def wandb_history(path: Path) -> dict[int, dict]:
    """The history rows of an offline .wandb file: a 7-byte header, then LevelDB-log records
    (4-byte checksum, 2-byte length, 1-byte type: full, first, middle, last) in 32 KiB blocks,
    each a protobuf ``Record``; read here so the test checks what W&B stored, not what was sent."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data, block, pos, parts, history = path.read_bytes(), 32768, 7, [], {}
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:  # zero padding to the end of the block
            pos += left
            continue
        parts.append(data[pos + 7:pos + 7 + length])
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(parts))
            parts = []
            if record.WhichOneof("record_type") == "history":
                items = {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in record.history.item}
                history[items["_step"]] = items
    return history


def test_wandb_offline_history_equals_metrics_jsonl(tiny, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = run(tiny, tmp_path / "wb", "wandb")
    files = list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1
    history = wandb_history(files[0])
    expected: dict[int, dict] = {}
    for record in jsonl(out):  # a later record of the same step and name replaces the earlier, as in W&B
        for name, value in record.items():
            if isinstance(value, int | float) and not isinstance(value, bool) and name != "step":
                expected.setdefault(record["step"], {})[f"{record['split']}/{name}"] = value
    assert sorted(history) == sorted(expected) == [1, 2, 3]
    for step, values in expected.items():
        for key, value in values.items():
            assert history[step][key] == pytest.approx(value, rel=1e-12), (step, key)


def test_a_missing_or_unknown_tracker_fails_before_anything_loads(tiny, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install 'alignlab\[wandb\]'"):
        run(tiny, tmp_path / "missing", "wandb")
    with pytest.raises(ConfigError, match="unknown tracker 'comet'"):
        run(tiny, tmp_path / "unknown", "comet")
    assert not (tmp_path / "missing" / "metrics.jsonl").exists()
