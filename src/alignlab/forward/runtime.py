"""Where a model runs and how: its device, its wrappers, autocast, and eval mode for one call.

Example: ``with eval_mode(model), autocast_for("bf16", model_device(model)): ...``

Every module that runs a model (training, the reference, the cache, sampling, scoring) asks
these, so that a wrapped model (DistributedDataParallel, FSDP's root, peft) is unwrapped the same
way everywhere and a mode or precision change is undone the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import torch
from torch import nn


def unwrap(model: Any) -> Any:
    """The model inside a DistributedDataParallel wrapper (which holds it as ``.module``)."""
    return getattr(model, "module", model)


def base_model(model: Any) -> Any:
    """The Hugging Face model itself: outside DDP and inside peft (whose LoRA layers it holds)."""
    model = unwrap(model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def pick_device(name: str) -> torch.device:
    """A device from its name; "auto" is CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def model_device(model: Any) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def autocast_for(precision: str | None, device: torch.device) -> AbstractContextManager:
    """Autocast for "bf16" and "fp16", autocast off for "fp32", the caller's context for None."""
    if precision is None:
        return nullcontext()
    if precision == "fp32":
        return torch.autocast(device.type, enabled=False)
    if precision in AUTOCAST_DTYPES:
        return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision])
    raise ValueError(f"precision must be 'fp32', 'bf16', 'fp16' or None, got {precision!r}")


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Every module in eval mode inside; each module's own previous mode restored after (not
    ``model.train(previous)``, which would also switch a deliberately frozen submodule)."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training
