"""`alignlab merge`: a LoRA run's adapters folded into a full model whose logits equal the
adapter model's; a run without adapters and a missing folder are clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from rich.console import Console

from alignlab.config import load_config
from alignlab.errors import AlignlabError
from alignlab.models.merge import merge_adapters
from alignlab.models.tiny import init_tiny_model
from alignlab.train.run import run_training

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("merge")
    tiny = init_tiny_model(root / "tiny", hidden_size=32, layers=2, heads=4, intermediate=64)
    config = load_config(None, [f"data.path={ROOT / 'examples' / 'data' / 'pairs.jsonl'}", f"model.name_or_path={tiny}",
                                "model.lora.enabled=true", "model.lora.merge_on_save=false", "train.lr=1e-2",
                                "train.max_steps=3", "train.batch_size=4", f"train.output_dir={root / 'run'}"])
    return run_training(config, Console(quiet=True)), tiny


def test_merged_model_gives_the_adapter_models_logits(lora_run, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run, tiny = lora_run
    assert (run / "model" / "adapter_config.json").is_file()
    out = merge_adapters(run, tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny), run / "model").eval()
    base = AutoModelForCausalLM.from_pretrained(tiny).eval()
    ids = torch.tensor([[1, 17, 42, 99, 7, 250, 3]])
    with torch.no_grad():
        want, got, before = adapted(ids).logits, merged(ids).logits, base(ids).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert float((want - before).abs().max()) > 1e-3  # the adapters learnt something
    assert not (out / "adapter_config.json").exists() and (out / "tokenizer_config.json").is_file()


def test_a_run_without_adapters_and_a_missing_folder_are_errors(tmp_path):
    full = init_tiny_model(tmp_path / "full", hidden_size=32, layers=1, heads=4, intermediate=64)
    with pytest.raises(AlignlabError, match="no LoRA adapters"):
        merge_adapters(full, tmp_path / "out")
    with pytest.raises(AlignlabError, match="does not exist"):
        merge_adapters(tmp_path / "nowhere", tmp_path / "out")


def test_the_merge_and_push_commands(lora_run, tmp_path, monkeypatch, capsys):
    from alignlab.cli import main

    run, _ = lora_run
    assert main(["merge", str(run), str(tmp_path / "cli-merged")]) == 0
    assert (tmp_path / "cli-merged" / "model.safetensors").is_file()
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    capsys.readouterr()
    assert main(["push", str(run), "someone/model"]) != 0
    captured = capsys.readouterr()
    assert "HF_HUB_OFFLINE" in captured.out + captured.err
