"""The tiny offline Llama: a real Hugging Face folder, deterministic, with a chat tokenizer.

Example: ``pytest tests/models/test_tiny.py``
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignlab.models.tiny import init_tiny_model


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return init_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def test_loads_with_the_auto_classes(tiny_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.dtype == torch.float32
    assert model.config.vocab_size == len(tokenizer) == 512
    assert (model.config.hidden_size, model.config.num_hidden_layers) == (64, 2)
    assert model.config.pad_token_id == tokenizer.pad_token_id != tokenizer.eos_token_id
    assert (tiny_dir / "model.safetensors").is_file()


def test_same_seed_writes_identical_bytes_and_another_seed_does_not(tmp_path: Path) -> None:
    a = init_tiny_model(tmp_path / "a", seed=3)
    b = init_tiny_model(tmp_path / "b", seed=3)
    c = init_tiny_model(tmp_path / "c", seed=4)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()


def test_leaves_the_callers_random_state_alone(tmp_path: Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    init_tiny_model(tmp_path / "m")
    assert torch.equal(torch.rand(3), expected)


def test_tokenizer_has_a_chat_template_and_eos(tiny_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    assert tokenizer.eos_token == "<|im_end|>"
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is two plus two?"}], tokenize=False,
        add_generation_prompt=True,
    )
    assert text == "<|bos|><|im_start|>user\nWhat is two plus two?<|im_end|>\n<|im_start|>assistant\n"
    # The corpus makes common words single tokens: far fewer tokens than bytes.
    assert len(tokenizer("the answer is")["input_ids"]) <= 5


def test_generates_tokens(tiny_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    inputs = tokenizer("Question: What is two plus two?", return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape == (1, inputs["input_ids"].shape[1] + 4)
    assert int(out.max()) < len(tokenizer)
