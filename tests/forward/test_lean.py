"""Memory-lean RMSNorm and SwiGLU (alignlab.forward.lean) against the modules' own forward."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

from alignlab.forward.lean import lean_layers, lean_modules

SMALL = dict(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
             intermediate_size=80, max_position_embeddings=64)


def llama() -> Any:
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**SMALL)).float()
    with torch.no_grad():  # weights away from 1, so that the norm's weight gradient is exercised
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.3 * torch.randn_like(p))
    return model


def loss_and_grads(model: Any, ids: torch.Tensor, modules: list) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    with lean_layers(modules):
        logits = model(ids).logits
    loss = (logits.float().log_softmax(-1)[..., 3] * torch.linspace(-1, 1, logits.shape[1])).sum()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("make", [llama, lambda: Qwen3ForCausalLM(Qwen3Config(**SMALL, head_dim=8, num_key_value_heads=2)).float()])
def test_lean_layers_give_the_same_loss_and_gradients(make: Any) -> None:
    model = make()
    modules = lean_modules(model)
    layers = model.config.num_hidden_layers
    norms = 2 * layers + 1 + (2 * layers if isinstance(model, Qwen3ForCausalLM) else 0)  # Qwen3: q/k norms
    assert len(modules) == layers + norms
    ids = torch.randint(0, 50, (2, 11), generator=torch.Generator().manual_seed(1))
    plain_loss, plain = loss_and_grads(model, ids, [])
    lean_loss, lean = loss_and_grads(model, ids, modules)
    torch.testing.assert_close(lean_loss, plain_loss, atol=1e-5, rtol=1e-6)
    assert lean.keys() == plain.keys()
    for name in plain:
        torch.testing.assert_close(lean[name], plain[name], atol=1e-6, rtol=1e-5, msg=name)


def test_lean_layers_keep_fewer_bytes_for_the_backward() -> None:
    model = llama()
    ids = torch.randint(0, 50, (4, 40), generator=torch.Generator().manual_seed(2))

    def saved_bytes(modules: list) -> int:
        storages: dict[int, int] = {}

        def keep(t: torch.Tensor) -> torch.Tensor:
            if not isinstance(t, torch.nn.Parameter):
                storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t), lean_layers(modules):
            model.model(ids)
        return sum(storages.values())

    plain, lean = saved_bytes([]), saved_bytes(lean_modules(model))
    h, i, tokens, layers = 32, 80, 4 * 40, 2
    # The MLP keeps gate and up instead of gate, silu(gate), up and their product; each norm its
    # input and 1/rms instead of also the normalised copy: 2i + 2h floats per token and layer
    # (the final norm's copy besides).
    assert plain - lean >= 4 * tokens * (layers * (2 * i + 2 * h) + h)


def test_only_plain_modules_are_switched_and_every_forward_comes_back() -> None:
    model = llama()
    lora = get_peft_model(model, LoraConfig(r=2, target_modules=["gate_proj"]))
    modules = lean_modules(lora)
    assert not any(type(m).__name__ == "LlamaMLP" for m in modules)  # its gate_proj is a LoRA layer
    assert sum(type(m).__name__ == "LlamaRMSNorm" for m in modules) == 5
    with pytest.raises(RuntimeError, match="boom"), lean_layers(modules):
        assert all("forward" in m.__dict__ for m in modules)
        raise RuntimeError("boom")
    assert not any("forward" in m.__dict__ for m in modules)


def test_under_autocast_the_modules_own_forward_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    from alignlab.forward import lean

    calls: list[str] = []
    for name in ("_SwiGLUDown", "_RMSNorm"):
        function = getattr(lean, name)
        monkeypatch.setattr(function, "apply", lambda *a, _f=function.apply, _n=name: calls.append(_n) or _f(*a))
    model = llama()
    ids = torch.randint(0, 50, (1, 9))
    with lean_layers(lean_modules(model)):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(ids)
        assert calls == []
        model(ids)
    assert calls.count("_SwiGLUDown") == 2 and calls.count("_RMSNorm") == 5
