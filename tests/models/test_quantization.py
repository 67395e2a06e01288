"""model.quantization (QLoRA): a bitsandbytes 4-bit (or 8-bit) base under LoRA adapters trains on
CPU, only the adapters move, and `alignlab merge` folds them into the full-precision base;
without bitsandbytes, with full fine-tuning or with a merge into rounded weights: clear errors
before any model loads."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from rich.console import Console

import alignlab
from alignlab.errors import ConfigError
from alignlab.models.tiny import init_tiny_model

ROOT = Path(__file__).resolve().parents[2]
PAIRS = str(ROOT / "examples" / "data" / "pairs.jsonl")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return init_tiny_model(tmp_path_factory.mktemp("quant") / "tiny", hidden_size=64, layers=2, heads=4, intermediate=128)


def config(tiny: Path, out: Path, **model) -> dict:
    return {"data": {"path": PAIRS}, "model": {"name_or_path": str(tiny), **model},
            "train": {"loss": "dpo", "reference": "adapters", "max_steps": 2, "batch_size": 4, "lr": 1e-2,
                      "output_dir": str(out)}}


@pytest.mark.parametrize("bits", ["4bit", "8bit"])
def test_a_quantised_base_trains_its_adapters_and_merges(tiny, tmp_path, bits):
    pytest.importorskip("bitsandbytes")
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    lora = {"enabled": True, "r": 4, "target_modules": ["q_proj", "v_proj"]}
    try:
        run = alignlab.train(config(tiny, tmp_path / bits, quantization=bits, lora=lora), console=Console(quiet=True))
    except NotImplementedError as error:  # an 8-bit kernel this bitsandbytes build lacks on CPU
        pytest.skip(f"bitsandbytes {bits} on CPU: {error}")
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["loss"] == pytest.approx(0.6931, abs=1e-3)  # the reference is the policy, adapters off
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in lines)
    adapters = run / "model"
    assert (adapters / "adapter_config.json").is_file() and not (adapters / "model.safetensors").exists()
    from alignlab.models.merge import merge_adapters

    out = merge_adapters(run, tmp_path / f"{bits}-merged")
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    full = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny), adapters).eval()
    ids = torch.tensor([[1, 17, 42, 99, 7]])
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, full(ids).logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize(("model", "message"), [
    ({"quantization": "4bit"}, "full fine-tuning"),
    ({"quantization": "4bit", "lora": {"enabled": True, "merge_on_save": True}}, "alignlab merge"),
], ids=["no-lora", "merge-on-save"])
def test_impossible_combinations_fail_before_loading(tiny, tmp_path, monkeypatch, model, message):
    import alignlab.train.run as run

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, _real=importlib.util.find_spec:
                        object() if name == "bitsandbytes" else _real(name, *a))
    monkeypatch.setattr(run, "load_policy", lambda *a, **k: pytest.fail("a model loaded"))
    settings = config(tiny, tmp_path / "bad", **model)
    settings["train"]["reference"] = "auto"
    with pytest.raises(ConfigError, match=message):
        alignlab.train(settings, console=Console(quiet=True))


def test_without_bitsandbytes_the_error_names_the_extra(tiny, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install 'alignlab\[qlora\]'"):
        alignlab.train(config(tiny, tmp_path / "nobnb", quantization="4bit", lora={"enabled": True}),
                       console=Console(quiet=True))
