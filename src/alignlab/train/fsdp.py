"""FSDP2 for `train.distributed=fsdp`: shard a policy per transformer block, and gather it back.

Example: ``forward = shard(CompletionLogps(model), model)``; ``plain = gathered_model(forward, ...)``

The root of the sharding is the module whose ``forward`` the step calls (CompletionLogps), so the
embeddings, final norm and output layer are gathered for every forward pass even though the step
calls the backbone and the head directly. Works with NCCL on GPUs and gloo on CPUs (tested).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from alignlab.forward import base_model

FULL = {"full_state_dict": True, "cpu_offload": True}


def block_types(model: Any) -> set[type]:
    """The transformer-block classes of a Hugging Face model (its ``_no_split_modules``)."""
    base = base_model(model)
    names = set(getattr(base, "_no_split_modules", None) or [])
    found = {type(m) for m in base.modules() if type(m).__name__ in names}
    if not found:
        raise TypeError(f"{type(base).__name__} declares no transformer blocks (_no_split_modules) to shard")
    return found


def shard(root: nn.Module, model: Any, *, cpu_offload: bool = False) -> nn.Module:
    """Shard every transformer block of ``model``, then ``root`` (which holds ``model``);
    ``cpu_offload`` keeps shards and optimizer state in CPU memory between uses (GPU runs only)."""
    from torch.distributed.fsdp import CPUOffloadPolicy, fully_shard

    options = {"offload_policy": CPUOffloadPolicy()} if cpu_offload else {}
    types = tuple(block_types(model))
    for module in model.modules():
        if isinstance(module, types):
            fully_shard(module, **options)
    fully_shard(root, **options)
    return root


def full_state(root: nn.Module, trainable_only: bool = True) -> dict[str, torch.Tensor]:
    """The unsharded weights on CPU (every rank must call; rank 0 gets the tensors)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(root, options=StateDictOptions(**FULL))
    if trainable_only:
        names = {n for n, p in root.named_parameters() if p.requires_grad}
        state = {k: v for k, v in state.items() if k in names}
    return state


def load_full_state(root: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(root, weights, options=StateDictOptions(full_state_dict=True, strict=False))


def full_optimizer_state(root: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(root, optimizer, options=StateDictOptions(**FULL))


def load_full_optimizer_state(root: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(root, optimizer, state, options=StateDictOptions(full_state_dict=True))


def gathered_model(root: nn.Module, fresh: Callable[[], nn.Module], rank: int) -> nn.Module | None:
    """On rank 0, a plain (unsharded) copy of the trained model: a fresh load with the gathered
    weights; other ranks take part in the gather and get None."""
    weights = full_state(root, trainable_only=False)
    if rank != 0:
        return None
    model = fresh()
    prefix = "model."  # root is CompletionLogps / RewardScores, holding the model as .model
    missing, unexpected = model.load_state_dict({k.removeprefix(prefix): v for k, v in weights.items()},
                                                strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:  # a tied head is not stored twice
        raise RuntimeError(f"gathered weights do not fit the model: missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]}")
    return model
