"""The reference model behind one interface: a frozen copy, the policy with adapters off, a cache.

Example: ``ref = CopyReference(policy); lp = ref.logps(batch)``

Every mode returns the :class:`~alignlab.logprobs.LogProbs` of the batch's completion tokens
without gradients, and counts in ``forward_sequences`` the sequences it ran through a model (0
for a cache hit). The batch names its rows (``batch.keys``: "17:chosen", "17:rejected"); only
the cache reads the names.

A copy is taken when the reference is made, so it never moves with the policy (TRL PR #6443:
evaluation after training silently scored against the trained policy). Disabled adapters give the
base weights whatever the adapters learnt. The third mode, a cache of the numbers of the model
it was built from, is :class:`alignlab.models.ref_cache.CachedReference`.
"""

from __future__ import annotations

import copy
from typing import Any, Protocol, runtime_checkable

from torch import nn

from alignlab.errors import AlignlabError
from alignlab.forward import SequenceBatch, frozen_logps, unwrap
from alignlab.logprobs import LogProbs


@runtime_checkable
class Reference(Protocol):
    """Reference log-probs of a batch (whose rows ``batch.keys`` name, for a cache)."""

    forward_sequences: int
    """Sequences that went through a reference forward pass so far."""

    def logps(self, batch: SequenceBatch) -> LogProbs: ...


class CopyReference:
    """A frozen copy of ``model``: eval mode, no gradients, its own weights.

    ``copy=False`` uses ``model`` itself (already a separate instance, e.g. loaded from disk) and
    freezes it in place. ``precision`` ("fp32", "bf16", "fp16") sets autocast for the forward; None keeps
    the caller's autocast. ``packing`` and ``temperature`` (the logits' divisor, online RL's
    sampling temperature) as in :class:`~alignlab.forward.CompletionLogps`.
    """

    def __init__(
        self,
        model: nn.Module,
        chunk_size: int = 1024,
        *,
        copy: bool = True,
        precision: str | None = None,
        packing: bool | None = None,
        temperature: float = 1.0,
    ) -> None:
        self.model = frozen_copy(model) if copy else _frozen(model)
        self.packing = packing
        self.chunk_size = chunk_size
        self.precision = precision
        self.temperature = temperature
        self.forward_sequences = 0

    def logps(self, batch: SequenceBatch) -> LogProbs:
        self.model.eval()  # a stray .train() on a parent module must not turn dropout on
        lp = frozen_logps(self.model, batch, self.chunk_size, self.precision, self.packing, self.temperature)
        self.forward_sequences += batch.input_ids.shape[0]
        return lp


class AdapterReference:
    """The policy itself with its (peft) adapters disabled: the base weights, no copy in memory.

    Each call runs in eval mode (dropout off) and restores every module's previous train/eval
    mode afterwards.
    """

    def __init__(
        self,
        peft_model: Any,
        chunk_size: int = 1024,
        *,
        precision: str | None = None,
        packing: bool | None = None,
        temperature: float = 1.0,
    ) -> None:
        model = unwrap(peft_model)
        if not hasattr(model, "disable_adapter"):
            raise AlignlabError(
                f"reference 'adapters' needs a peft model with adapters, got {type(model).__name__}"
                "\n  hint: enable LoRA, or use reference: copy (or cache) for full fine-tuning"
            )
        self.model = model
        self.chunk_size = chunk_size
        self.precision = precision
        self.packing = packing
        self.temperature = temperature
        self.forward_sequences = 0

    def logps(self, batch: SequenceBatch) -> LogProbs:
        with self.model.disable_adapter():
            lp = frozen_logps(self.model, batch, self.chunk_size, self.precision, self.packing, self.temperature)
        self.forward_sequences += batch.input_ids.shape[0]
        return lp


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` in eval mode with no gradients: the reference of "copy" mode."""
    model = unwrap(model)
    try:
        clone = copy.deepcopy(model)
    except Exception as exc:  # quantized or sharded weights do not always deep-copy
        raise AlignlabError(
            f"cannot copy {type(model).__name__} for the reference: {exc}\n  hint: use reference: "
            "cache (computed once before training) or LoRA with reference: adapters"
        ) from exc
    for parameter in clone.parameters():
        parameter.grad = None  # deepcopy copies gradients too
    return _frozen(clone)


def _frozen(model: nn.Module) -> nn.Module:
    model.eval()
    model.requires_grad_(False)
    return model
