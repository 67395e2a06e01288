"""Gradient checkpointing (alignlab.forward.checkpointing) against no checkpointing: the same
log-probs and parameter gradients (1e-6, fp32) on the packed path (tree attention over a row of
several examples, lean layers), the plain padded path and with LoRA adapters; and the model's own
checkpointing, whose recompute forgets the packed attention, shown to fail on the packed path.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch.utils.checkpoint import CheckpointError
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from alignlab.errors import ConfigError
from alignlab.forward import CompletionLogps, collate_sequences
from alignlab.forward.checkpointing import enable_gradient_checkpointing

ROWS = [([1, 5, 7, 9], [11, 12, 13]), ([1, 5, 7, 9], [14, 2]), ([1, 8], [3, 4, 6, 10, 15]), ([1, 8], [16])]


def llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(config).float().train()


def loss_and_grads(model, packing: bool, lean: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    forward = CompletionLogps(model, chunk_size=5, packing=packing)
    if not lean:
        forward._lean = []  # no module swapped: the packed attention alone
    batch = collate_sequences(ROWS, pad_id=0)
    model.zero_grad(set_to_none=True)
    out = forward(batch)
    weights = torch.arange(1, out.tokens.numel() + 1, dtype=out.tokens.dtype).view_as(out.tokens)
    (out.tokens * weights).sum().backward()  # position-dependent weights: any misplaced token shows
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.tokens.detach(), grads


def assert_same(a, b, atol=1e-6) -> None:
    (tokens_a, grads_a), (tokens_b, grads_b) = a, b
    torch.testing.assert_close(tokens_a, tokens_b, atol=atol, rtol=0)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], atol=atol, rtol=0, msg=name)


@pytest.mark.parametrize("packing", [True, False], ids=["packed", "padded"])
def test_checkpointed_gradients_equal_plain(packing):
    plain = llama()
    checkpointed = copy.deepcopy(plain)
    assert enable_gradient_checkpointing(checkpointed) == 2  # both decoder layers
    assert_same(loss_and_grads(checkpointed, packing), loss_and_grads(plain, packing))


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "plain-layers"])
def test_the_models_own_checkpointing_cannot_replay_the_packed_forward(lean):
    """The reason this module exists: transformers' recompute runs after the packed call has
    restored the model's attention (and its lean layers' forwards), so the backward replays full
    causal attention over the packed row and the plain norm: other saved tensors, which torch's
    checkpoint refuses. The replayed context gives the plain gradients (1e-6)."""
    plain = llama()
    naive = copy.deepcopy(plain)
    naive.gradient_checkpointing_enable({"use_reentrant": False})
    with pytest.raises(CheckpointError):
        loss_and_grads(naive, True, lean=lean)
    ours = copy.deepcopy(plain)
    enable_gradient_checkpointing(ours)
    assert_same(loss_and_grads(ours, True, lean=lean), loss_and_grads(plain, True, lean=lean))


def test_checkpointing_with_lora_adapters():
    from peft import LoraConfig, get_peft_model

    def adapted():
        model = get_peft_model(llama(), LoraConfig(r=4, target_modules=["q_proj", "v_proj", "gate_proj"],
                                                   init_lora_weights=False))
        return model.train()

    plain, checkpointed = adapted(), adapted()
    checkpointed.load_state_dict(plain.state_dict())
    enable_gradient_checkpointing(checkpointed)
    a, b = loss_and_grads(checkpointed, True), loss_and_grads(plain, True)
    assert all("lora" in n for n in a[1])  # only adapters train
    assert_same(a, b)


def test_a_model_without_checkpointing_support_is_a_clear_error(monkeypatch):
    model = GPT2LMHeadModel(GPT2Config(vocab_size=32, n_embd=16, n_layer=1, n_head=2))
    monkeypatch.setattr(type(model), "supports_gradient_checkpointing", False)
    with pytest.raises(ConfigError, match="does not support gradient checkpointing"):
        enable_gradient_checkpointing(model)
