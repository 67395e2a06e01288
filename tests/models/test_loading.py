"""Loading policies and reward models, LoRA, final saves and reloads, on the tiny offline Llama.

Example: ``pytest tests/models/test_loading.py``
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignlab.config import LoraSettings, ModelConfig
from alignlab.errors import AlignlabError
from alignlab.models import (
    ScalarHeadModel,
    frozen_copy,
    load_policy,
    load_reward_model,
    reward_scores,
    save_final,
)
from alignlab.models.tiny import init_tiny_model

LORA = LoraSettings(enabled=True, r=4, alpha=8.0, dropout=0.0, target_modules=("q_proj", "v_proj"))
IDS = torch.tensor([[0, 17, 45, 300, 12, 9, 77, 5], [0, 250, 3, 19, 81, 64, 2, 400]])


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return init_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def tokenizer(tiny_dir: Path):
    return AutoTokenizer.from_pretrained(tiny_dir)


def logits(model: torch.nn.Module, ids: torch.Tensor = IDS) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


def train_a_little(model: torch.nn.Module, steps: int = 3) -> None:
    """A few Adam steps on random tokens, so that LoRA's B matrices leave zero."""
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(steps):
        ids = torch.randint(0, 512, (4, 12), generator=generator)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def right_padded(sequences: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(map(len, sequences))
    ids = torch.full((len(sequences), length), pad)
    mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    return ids, mask


SEQUENCES = [[0, 17, 45, 300, 12, 9, 77], [0, 250, 3], [0, 19, 81, 64, 2]]


# ---- policies ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("dtype", "expected"), [
    ("float32", torch.float32), ("bfloat16", torch.bfloat16), ("auto", torch.float32),
])
def test_load_policy_sets_the_dtype(tiny_dir: Path, dtype: str, expected: torch.dtype) -> None:
    model = load_policy(ModelConfig(name_or_path=str(tiny_dir), dtype=dtype), "cpu")
    assert {p.dtype for p in model.parameters()} == {expected}
    reference = AutoModelForCausalLM.from_pretrained(tiny_dir)
    if expected == torch.float32:  # "auto" keeps the stored float32
        torch.testing.assert_close(logits(model), logits(reference), rtol=0, atol=0)


@pytest.mark.parametrize("path", ["./no/such/model", "/no/such/model"])
def test_a_missing_folder_is_an_error_with_a_hint(path: str) -> None:
    with pytest.raises(AlignlabError, match="does not exist") as info:
        load_policy(ModelConfig(name_or_path=path), "cpu")
    assert "hint" in str(info.value)
    assert "Traceback" not in str(info.value)


def test_an_unset_model_is_an_error_with_a_hint() -> None:
    with pytest.raises(AlignlabError, match="name_or_path is not set.*\n.*hint"):
        load_policy(ModelConfig(), "cpu")


def test_an_unreachable_hub_id_is_an_error_with_a_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files.\nmore")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", offline)
    with pytest.raises(AlignlabError, match="couldn't connect") as info:
        load_policy(ModelConfig(name_or_path="someone/some-model"), "cpu")
    assert "hint" in str(info.value) and "network" in str(info.value)
    assert "more" not in str(info.value)


def test_pickled_weights_are_refused(tiny_dir: Path, tmp_path: Path) -> None:
    """Weights load through safetensors only, so no pickle from a model folder ever runs: a
    .bin-only folder is an error, not unpickled."""
    folder = tmp_path / "bin_only"
    folder.mkdir()
    shutil.copy(tiny_dir / "config.json", folder / "config.json")
    torch.save(load_file(tiny_dir / "model.safetensors"), folder / "pytorch_model.bin")
    with pytest.raises(AlignlabError, match="safetensors"):
        load_policy(ModelConfig(name_or_path=str(folder)), "cpu")


def test_frozen_copy_is_independent_eval_and_without_gradients(tiny_dir: Path) -> None:
    model = load_policy(ModelConfig(name_or_path=str(tiny_dir)), "cpu")
    train_a_little(model, steps=1)
    model.lm_head.weight.grad = torch.ones_like(model.lm_head.weight)
    before = logits(model)
    copy = frozen_copy(model)
    model.train()
    assert not copy.training
    assert all(not p.requires_grad and p.grad is None for p in copy.parameters())
    with torch.no_grad():
        model.lm_head.weight.add_(1.0)
    torch.testing.assert_close(logits(copy), before, rtol=0, atol=0)


# ---- LoRA ------------------------------------------------------------------------------------


def test_lora_trains_only_the_adapters(tiny_dir: Path) -> None:
    model = load_policy(ModelConfig(name_or_path=str(tiny_dir), lora=LORA), "cpu")
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    # 2 layers x (q_proj, v_proj) x (A, B)
    assert len(trainable) == 8 and all("lora_" in name for name in trainable)


def test_all_linear_shorthand(tiny_dir: Path) -> None:
    lora = LoraSettings(enabled=True, r=2, target_modules=("all-linear",))
    model = load_policy(ModelConfig(name_or_path=str(tiny_dir), lora=lora), "cpu")
    adapted = {name.split(".lora_")[0].rsplit(".", 1)[-1]
               for name, p in model.named_parameters() if p.requires_grad}
    assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def test_unknown_target_modules_list_the_linear_layers(tiny_dir: Path) -> None:
    lora = LoraSettings(enabled=True, target_modules=("q_proj", "query", "c_attn"))
    with pytest.raises(AlignlabError) as info:
        load_policy(ModelConfig(name_or_path=str(tiny_dir), lora=lora), "cpu")
    message = str(info.value)
    assert "['query', 'c_attn']" in message and "hint" in message
    for name in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"):
        assert f"'{name}'" in message


def test_lora_save_merge_and_reload_give_the_same_outputs(tiny_dir: Path, tokenizer, tmp_path: Path) -> None:
    model = load_policy(ModelConfig(name_or_path=str(tiny_dir), lora=LORA), "cpu")
    train_a_little(model)
    assert all(p.abs().max() > 0 for n, p in model.named_parameters() if "lora_B" in n)
    trained = logits(model)
    base = logits(AutoModelForCausalLM.from_pretrained(tiny_dir))
    assert (trained - base).abs().max() > 1e-3  # the adapters changed the outputs
    with model.disable_adapter():
        torch.testing.assert_close(logits(model), base, rtol=0, atol=1e-6)

    from peft import PeftModel

    adapters = save_final(model, tokenizer, tmp_path / "adapters", merge_lora=False)
    assert (adapters / "adapter_config.json").is_file() and not (adapters / "model.safetensors").exists()
    assert Path(json.loads((adapters / "adapter_config.json").read_text())["base_model_name_or_path"]).is_absolute()
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_dir), adapters)
    torch.testing.assert_close(logits(reloaded), trained, rtol=0, atol=1e-5)
    # load_policy reads an adapter folder as the model it stands for: adapters merged.
    as_policy = load_policy(ModelConfig(name_or_path=str(adapters)), "cpu")
    assert not hasattr(as_policy, "disable_adapter")
    torch.testing.assert_close(logits(as_policy), trained, rtol=0, atol=1e-5)

    merged = save_final(model, tokenizer, tmp_path / "merged", merge_lora=True)
    assert not (merged / "adapter_config.json").exists()
    torch.testing.assert_close(logits(AutoModelForCausalLM.from_pretrained(merged)), trained,
                               rtol=0, atol=1e-5)
    assert AutoTokenizer.from_pretrained(merged).eos_token == "<|im_end|>"
    # Merging worked on a copy: the model in memory keeps its adapters and its outputs.
    assert isinstance(model, PeftModel)
    torch.testing.assert_close(logits(model), trained, rtol=0, atol=0)
    with model.disable_adapter():
        torch.testing.assert_close(logits(model), base, rtol=0, atol=1e-6)


def test_save_final_replaces_an_existing_folder_and_leaves_no_temporaries(
    tiny_dir: Path, tokenizer, tmp_path: Path
) -> None:
    out = tmp_path / "final"
    plain = load_policy(ModelConfig(name_or_path=str(tiny_dir)), "cpu")
    save_final(plain, tokenizer, out)
    assert (out / "model.safetensors").is_file()
    lora = load_policy(ModelConfig(name_or_path=str(tiny_dir), lora=LORA), "cpu")
    save_final(lora, tokenizer, out, merge_lora=False)
    assert (out / "adapter_model.safetensors").is_file() and not (out / "model.safetensors").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]


# ---- reward models -------------------------------------------------------------------------


def test_scalar_head_pools_the_last_token_of_each_right_padded_sequence(tiny_dir: Path, tokenizer) -> None:
    config = ModelConfig(name_or_path=str(tiny_dir), reward_head="scalar_head")
    model = load_reward_model(config, "cpu").eval()
    assert isinstance(model, ScalarHeadModel)
    ids, mask = right_padded(SEQUENCES, tokenizer.pad_token_id)
    with torch.no_grad():
        batch = reward_scores(model, ids, mask)
        alone = torch.cat([reward_scores(model, torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long))
                           for s in SEQUENCES])
    assert batch.shape == (3,) and batch.dtype == torch.float32
    torch.testing.assert_close(batch, alone, rtol=0, atol=1e-5)
    assert batch.unique().numel() == 3


def test_scalar_head_save_and_load_round_trip(tiny_dir: Path, tokenizer, tmp_path: Path) -> None:
    config = ModelConfig(name_or_path=str(tiny_dir), reward_head="scalar_head")
    model = load_reward_model(config, "cpu").eval()
    with torch.no_grad():
        model.head.bias.fill_(0.25)  # a trained head, not a fresh one
    ids, mask = right_padded(SEQUENCES, tokenizer.pad_token_id)
    with torch.no_grad():
        expected = reward_scores(model, ids, mask)
    out = save_final(model, tokenizer, tmp_path / "rm")
    assert (out / "scalar_head.safetensors").is_file() and (out / "model.safetensors").is_file()
    for loaded in (ScalarHeadModel.from_pretrained(out),
                   load_reward_model(ModelConfig(name_or_path=str(out), reward_head="scalar_head"), "cpu")):
        with torch.no_grad():
            torch.testing.assert_close(reward_scores(loaded.eval(), ids, mask), expected, rtol=0, atol=0)


def test_scalar_head_with_lora_trains_adapters_and_head_and_reloads(
    tiny_dir: Path, tokenizer, tmp_path: Path
) -> None:
    config = ModelConfig(name_or_path=str(tiny_dir), reward_head="scalar_head", lora=LORA)
    model = load_reward_model(config, "cpu")
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert {"head.weight", "head.bias"} <= trainable
    assert all("lora_" in name for name in trainable - {"head.weight", "head.bias"})
    ids, mask = right_padded(SEQUENCES, tokenizer.pad_token_id)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        reward_scores(model, ids, mask).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
    with torch.no_grad():
        expected = reward_scores(model.eval(), ids, mask)
    for merge in (False, True):
        out = save_final(model, tokenizer, tmp_path / f"rm-{merge}", merge_lora=merge)
        assert (out / "adapter_config.json").exists() != merge
        with torch.no_grad():
            got = reward_scores(ScalarHeadModel.from_pretrained(out).eval(), ids, mask)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_sequence_classification_scores(tiny_dir: Path, tokenizer, tmp_path: Path) -> None:
    # A checkpoint without a pad token: it must come from the tokenizer.
    folder = tmp_path / "no_pad"
    shutil.copytree(tiny_dir, folder)
    config_json = json.loads((folder / "config.json").read_text())
    config_json.pop("pad_token_id")
    (folder / "config.json").write_text(json.dumps(config_json))
    config = ModelConfig(name_or_path=str(folder))
    with pytest.raises(AlignlabError, match="pad token"):
        load_reward_model(config, "cpu")
    model = load_reward_model(config, "cpu", tokenizer).eval()
    assert model.config.pad_token_id == tokenizer.pad_token_id
    ids, mask = right_padded(SEQUENCES, tokenizer.pad_token_id)
    with torch.no_grad():
        batch = reward_scores(model, ids, mask)
        alone = torch.cat([reward_scores(model, torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long))
                           for s in SEQUENCES])
    assert batch.shape == (3,) and batch.dtype == torch.float32
    torch.testing.assert_close(batch, alone, rtol=0, atol=1e-5)


def test_sequence_classification_with_lora_keeps_the_score_head_trainable(tiny_dir: Path, tokenizer) -> None:
    config = ModelConfig(name_or_path=str(tiny_dir), lora=LORA)
    model = load_reward_model(config, "cpu", tokenizer)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert any("score" in name for name in trainable)
    assert all("lora_" in name or "score" in name for name in trainable)
