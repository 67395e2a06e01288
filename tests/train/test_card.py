"""The model card a run writes (RUN_DIR/model/README.md) states what was run, from the run; and
pushing to the Hub without network access is a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

import alignlab
from alignlab.errors import AlignlabError
from alignlab.files import sha256_file
from alignlab.models.tiny import init_tiny_model
from alignlab.train.card import push_run

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "examples" / "data"


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("card")
    tiny = init_tiny_model(root / "tiny", hidden_size=32, layers=2, heads=4, intermediate=64)
    config = {"data": {"path": str(DATA / "pairs.jsonl"), "eval_path": str(DATA / "pairs_eval.jsonl")},
              "model": {"name_or_path": str(tiny), "lora": {"enabled": True, "r": 4}},
              "train": {"loss": "dpo", "loss_kwargs": {"beta": 0.2}, "max_steps": 2, "batch_size": 4,
                        "output_dir": str(root / "run")}}
    return alignlab.train(config, console=Console(quiet=True))


def test_the_card_states_base_data_loss_steps_and_results(lora_run):
    card = (lora_run / "model" / "README.md").read_text(encoding="utf-8")
    summary = json.loads((lora_run / "summary.json").read_text())
    assert "base_model: " in card and "tiny" in card.split("base_model: ")[1].splitlines()[0]
    for name, rows in (("pairs.jsonl", 32), ("pairs_eval.jsonl", 8)):
        assert f"sha256:{sha256_file(DATA / name)}" in card
        line = next(x for x in card.splitlines() if name in x)
        assert f"| {rows} | {rows} |" in line
    assert "`dpo` (Rafailov et al. 2023" in card and '"beta": 0.2' in card
    assert f"- steps: {summary['steps']}" in card and "LoRA: r 4" in card
    assert f"| loss | {summary['final_eval']['loss']:.6g} |" in card
    assert "alignlab 0.1.0" in card
    assert "More Information Needed" not in card  # not peft's template


def test_push_offline_is_a_clear_error(lora_run, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(AlignlabError, match="HF_HUB_OFFLINE"):
        push_run(lora_run, "someone/some-model")
    with pytest.raises(AlignlabError, match="no saved model"):
        push_run(lora_run / "nowhere", "someone/some-model")
