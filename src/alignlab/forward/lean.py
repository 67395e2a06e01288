"""Memory-lean RMSNorm and SwiGLU MLP: the same math, fewer tensors kept for the backward.

Example: ``with lean_layers(lean_modules(model)): loss = f(model(...)); loss.backward()``

Autograd keeps, per token and layer of a Llama-style model, four intermediate-size tensors in the
MLP (gate, silu(gate), up, and their product for ``down_proj``) and a normalised copy of the
hidden state in each RMSNorm. These functions keep only what the backward cannot cheaply redo:
gate and up (the product and the SiLU are recomputed, elementwise, in the backward), and the
norm's input with its per-token 1/rms. For a hidden size h and an intermediate size i that is
9h + 2i floats per token and layer instead of 11h + 4i (a third less for Llama shapes), with no
extra matmul. Modules are switched for the duration of a call only, and only where the math is
known to be the same (:data:`LEAN_MLP`, :data:`LEAN_NORM`, plain bias-free ``nn.Linear``
projections, no autocast); tests check outputs and gradients against the modules' own forward.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alignlab.logprobs import hooked

LEAN_MLP = frozenset({"LlamaMLP", "MistralMLP", "Qwen2MLP", "Qwen3MLP"})
"""MLP classes computing ``down_proj(silu(gate_proj(x)) * up_proj(x))``."""
LEAN_NORM = frozenset({"LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm"})
"""RMSNorm classes computing ``weight * (x / rms(x)).to(x.dtype)`` in float32 with ``variance_epsilon``."""


class _SwiGLUDown(torch.autograd.Function):
    """down(silu(gate) * up), keeping gate and up only."""

    @staticmethod
    def forward(ctx: Any, gate: Tensor, up: Tensor, weight: Tensor) -> Tensor:
        ctx.save_for_backward(gate, up, weight)
        return F.linear(F.silu(gate) * up, weight)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        gate, up, weight = ctx.saved_tensors
        sigmoid = torch.sigmoid(gate)
        silu = gate * sigmoid
        grad_product = grad @ weight  # (..., i)
        grad_weight = None
        if ctx.needs_input_grad[2]:
            product = silu * up
            grad_weight = grad.reshape(-1, grad.shape[-1]).T @ product.reshape(-1, product.shape[-1])
        grad_up = grad_product * silu if ctx.needs_input_grad[1] else None
        grad_gate = None
        if ctx.needs_input_grad[0]:  # d silu(g)/dg = σ(g) (1 + g (1 − σ(g)))
            grad_gate = grad_product * up * sigmoid * (1 + gate * (1 - sigmoid))
        return grad_gate, grad_up, grad_weight


class _RMSNorm(torch.autograd.Function):
    """weight * (x · rstd).to(x.dtype), rstd = 1/sqrt(mean(x²) + eps) in float32; keeps x and rstd."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, eps: float) -> Tensor:
        x32 = x.float()
        rstd = torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
        ctx.save_for_backward(x, weight, rstd)
        return weight * (x32 * rstd).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, weight, rstd = ctx.saved_tensors
        normed = x.float() * rstd
        grad_weight = None
        if ctx.needs_input_grad[1]:
            grad_weight = (grad * normed.to(x.dtype)).reshape(-1, grad.shape[-1]).sum(0).to(weight.dtype)
        grad_x = None
        if ctx.needs_input_grad[0]:
            g = (grad * weight).float()  # gradient with respect to the normalised x
            grad_x = (rstd * (g - normed * (g * normed).mean(-1, keepdim=True))).to(x.dtype)
        return grad_x, grad_weight, None


def _lean_mlp(module: nn.Module) -> Any:
    def forward(x: Tensor) -> Tensor:
        if torch.is_autocast_enabled(x.device.type):
            return type(module).forward(module, x)
        return _SwiGLUDown.apply(module.gate_proj(x), module.up_proj(x), module.down_proj.weight)
    return forward


def _lean_norm(module: nn.Module) -> Any:
    def forward(x: Tensor) -> Tensor:
        if torch.is_autocast_enabled(x.device.type):
            return type(module).forward(module, x)
        return _RMSNorm.apply(x, module.weight, module.variance_epsilon)
    return forward


def lean_modules(model: nn.Module) -> list[nn.Module]:
    """The modules of ``model`` whose forward :func:`lean_layers` may replace."""
    def fits(module: nn.Module) -> bool:
        name = type(module).__name__
        if name in LEAN_MLP:
            return _plain_swiglu(module)
        return name in LEAN_NORM and isinstance(getattr(module, "weight", None), nn.Parameter)

    return [module for module in model.modules() if fits(module)]


@contextmanager
def lean_layers(modules: Sequence[nn.Module]) -> Iterator[None]:
    """Inside, ``modules`` (from :func:`lean_modules`) run the lean functions; their own forward
    after, also when the body raises."""
    for module in modules:
        module.forward = _lean_mlp(module) if type(module).__name__ in LEAN_MLP else _lean_norm(module)
    try:
        yield
    finally:
        for module in modules:
            module.__dict__.pop("forward", None)


def _plain_swiglu(module: nn.Module) -> bool:
    projections = [getattr(module, n, None) for n in ("gate_proj", "up_proj", "down_proj")]
    activation = type(getattr(module, "act_fn", None)).__name__
    # A LoRA- or otherwise wrapped projection does work of its own: that module keeps its forward.
    return (all(type(p) is nn.Linear and p.bias is None and not hooked(p) for p in projections)
            and activation in ("SiLU", "SiLUActivation"))
