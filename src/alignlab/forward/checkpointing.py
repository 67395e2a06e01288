"""Gradient checkpointing that recomputes a layer the way its forward ran: packed, lean, LoRA.

Example: ``enable_gradient_checkpointing(model)`` once after loading; training then keeps only
each decoder layer's input and recomputes the layer in the backward pass.

The model's own checkpointing (transformers' ``GradientCheckpointingLayer``) recomputes a layer
during the backward pass, after the forward's context managers have exited. alignlab's packed
forward switches the attention function for the duration of a call (tree attention over a packed
row of several examples) and its lean layers swap module forwards the same way; a plain recompute
would run ordinary causal attention over the packed row and the plain norm and MLP, saving other
tensors than the forward did (torch's checkpoint then stops with a CheckpointError). So each layer's
checkpoint function records, when the layer runs, the attention implementation its modules read
and the forwards swapped into its submodules, and restores both around the recompute.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn
from torch.utils.checkpoint import checkpoint

from alignlab.errors import ConfigError
from alignlab.forward.runtime import base_model


def enable_gradient_checkpointing(model: nn.Module) -> int:
    """Turn on checkpointing of every decoder layer of ``model`` (PEFT-wrapped or not); returns
    the number of layers checkpointed. A model that cannot is a ConfigError naming it."""
    base = base_model(model)
    if not getattr(base, "supports_gradient_checkpointing", False):
        raise ConfigError(f"{type(base).__name__} does not support gradient checkpointing\n"
                          "  hint: set train.gradient_checkpointing=false")
    enable = getattr(base, "activation_checkpointing_enable", None) or base.gradient_checkpointing_enable
    enable({"use_reentrant": False})
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [m for m in base.modules() if isinstance(m, GradientCheckpointingLayer) and m.gradient_checkpointing]
    if not layers:
        raise ConfigError(f"{type(base).__name__} turned on gradient checkpointing but no layer uses it")
    for layer in layers:
        layer._gradient_checkpointing_func = functools.partial(_checkpoint_as_run, layer)
    return len(layers)


def _checkpoint_as_run(layer: nn.Module, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``checkpoint(function, *args)`` whose recompute sees the attention implementation and the
    swapped module forwards that were in place when the layer ran."""
    state = _capture(layer)

    def replay(*inner_args: Any, **inner_kwargs: Any) -> Any:
        with _restored(state):
            return function(*inner_args, **inner_kwargs)

    return checkpoint(replay, *args, use_reentrant=False, **kwargs)


def _capture(layer: nn.Module) -> tuple[list[tuple[Any, str]], list[tuple[nn.Module, Any]]]:
    configs = {id(m.config): m.config for m in layer.modules() if hasattr(getattr(m, "config", None),
                                                                           "_attn_implementation")}
    attention = [(config, config._attn_implementation) for config in configs.values()]
    forwards = [(m, m.__dict__["forward"]) for m in layer.modules() if "forward" in m.__dict__]
    return attention, forwards


@contextmanager
def _restored(state: tuple[list[tuple[Any, str]], list[tuple[nn.Module, Any]]]) -> Iterator[None]:
    attention, forwards = state
    before_attention = [(config, config._attn_implementation) for config, _ in attention]
    before_forwards = [(m, m.__dict__.get("forward")) for m, _ in forwards]
    for config, name in attention:
        config._attn_implementation = name
    for module, forward in forwards:
        module.forward = forward
    try:
        yield
    finally:
        for config, name in before_attention:
            config._attn_implementation = name
        for module, forward in before_forwards:
            if forward is None:
                module.__dict__.pop("forward", None)
            else:
                module.forward = forward
