"""The reference model behind one interface: a frozen copy, the policy with adapters off, a cache.

Example: ``ref = CopyReference(policy); lp = ref.logps(batch, ["17:chosen", "17:rejected"])``

Every mode returns the :class:`~alignlab.logprobs.LogProbs` of the batch's completion tokens
without gradients, and counts in ``forward_sequences`` the sequences it ran through a model (0
for a cache hit). ``keys`` name the batch's sequences, one per row ("17:chosen", "17:kl"); only
the cache reads them, the other modes check their number.

A copy is taken when the reference is made, so it never moves with the policy (TRL PR #6443:
evaluation after training silently scored against the trained policy). Disabled adapters give the
base weights whatever the adapters learnt. A cache holds the numbers of the model it was built
from (see :mod:`alignlab.models.ref_cache`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from torch import nn

from alignlab.errors import AlignlabError
from alignlab.logprobs import LogProbs, reduce_token_logps
from alignlab.train.batching import SequenceBatch
from alignlab.train.forward import reference_logps

if TYPE_CHECKING:
    from alignlab.models.ref_cache import RefCache


@runtime_checkable
class Reference(Protocol):
    """Reference log-probs of a batch whose rows are named by ``keys``."""

    forward_sequences: int
    """Sequences that went through a reference forward pass so far."""

    def logps(self, batch: SequenceBatch, keys: Sequence[str]) -> LogProbs: ...


class CopyReference:
    """A frozen copy of ``model``: eval mode, no gradients, its own weights.

    ``copy=False`` uses ``model`` itself (already a separate instance, e.g. loaded from disk) and
    freezes it in place. ``precision`` ("fp32", "bf16") sets autocast for the forward; None keeps
    the caller's autocast. ``packing`` as in :class:`~alignlab.train.forward.CompletionLogps`.
    """

    def __init__(
        self,
        model: nn.Module,
        chunk_size: int = 1024,
        *,
        copy: bool = True,
        precision: str | None = None,
        packing: bool | None = None,
    ) -> None:
        self.model = _deepcopy(model) if copy else model
        self.packing = packing
        self.model.eval()
        self.model.requires_grad_(False)
        self.chunk_size = chunk_size
        self.precision = precision
        self.forward_sequences = 0

    def logps(self, batch: SequenceBatch, keys: Sequence[str]) -> LogProbs:
        _check_keys(batch, keys)
        self.model.eval()  # a stray .train() on a parent module must not turn dropout on
        lp = frozen_logps(self.model, batch, self.chunk_size, self.precision, self.packing)
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
    ) -> None:
        model = getattr(peft_model, "module", peft_model)  # DistributedDataParallel
        if not hasattr(model, "disable_adapter"):
            raise AlignlabError(
                f"reference 'adapters' needs a peft model with adapters, got {type(model).__name__}"
                "\n  hint: enable LoRA, or use reference: copy (or cache) for full fine-tuning"
            )
        self.model = model
        self.chunk_size = chunk_size
        self.precision = precision
        self.packing = packing
        self.forward_sequences = 0

    def logps(self, batch: SequenceBatch, keys: Sequence[str]) -> LogProbs:
        _check_keys(batch, keys)
        with self.model.disable_adapter():
            lp = frozen_logps(self.model, batch, self.chunk_size, self.precision, self.packing)
        self.forward_sequences += batch.input_ids.shape[0]
        return lp


class CachedReference:
    """Reference log-probs read from a :class:`RefCache`; no forward pass at all.

    The cached per-token log-probs of each key are placed on the completion positions of the
    batch, then reduced as :mod:`alignlab.logprobs` does (token weights come from the batch).
    """

    def __init__(self, cache: RefCache) -> None:
        self.cache = cache
        self.forward_sequences = 0

    def logps(self, batch: SequenceBatch, keys: Sequence[str]) -> LogProbs:
        _check_keys(batch, keys)
        mask = batch.completion_mask.bool()
        counts = mask.sum(-1).tolist()
        pieces = []
        for row, (key, count) in enumerate(zip(keys, counts, strict=True)):
            if key not in self.cache:
                raise AlignlabError(
                    f"reference cache {self.cache.fingerprint[:12]} has no sequence {key!r}: "
                    "it was built for other data (its fingerprint must cover every sequence "
                    "the run reads)"
                )
            values = self.cache[key]
            if values.numel() != count:
                raise AlignlabError(
                    f"reference cache {self.cache.fingerprint[:12]}: sequence {key!r} has "
                    f"{values.numel()} cached completion tokens but {count} in the batch (row "
                    f"{row}): the cache is not for this tokenization"
                )
            pieces.append(values)
        tokens = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
        if pieces:
            # Row-major boolean indexing visits row 0's completion positions first, in order.
            tokens[mask] = torch.cat(pieces).to(device=mask.device, dtype=torch.float32)
        return reduce_token_logps(tokens, mask, batch.token_weights)


def frozen_logps(
    model: nn.Module,
    batch: SequenceBatch,
    chunk_size: int,
    precision: str | None = None,
    packing: bool | None = None,
) -> LogProbs:
    """Log-probs of ``batch`` without gradients, ``model`` in eval mode for the call only."""
    device = model_device(model)
    batch = batch.to(device)
    with eval_mode(model), autocast_for(precision, device):
        return reference_logps(model, batch, chunk_size, packing)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Every module in eval mode inside; each module's own previous mode restored after."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def autocast_for(precision: str | None, device: torch.device) -> Any:
    """Autocast for "bf16", autocast off for "fp32", the caller's context for None."""
    if precision is None:
        return nullcontext()
    if precision == "fp32":
        return torch.autocast(device.type, enabled=False)
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    raise ValueError(f"precision must be 'fp32', 'bf16' or None, got {precision!r}")


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _deepcopy(model: nn.Module) -> nn.Module:
    model = getattr(model, "module", model)  # DistributedDataParallel
    try:
        return copy.deepcopy(model)
    except Exception as exc:  # quantized or sharded weights do not always deep-copy
        raise AlignlabError(
            f"cannot copy {type(model).__name__} for the reference: {exc}\n  hint: use reference: "
            "cache (computed once before training) or LoRA with reference: adapters"
        ) from exc


def _check_keys(batch: SequenceBatch, keys: Sequence[str]) -> None:
    if len(keys) != batch.input_ids.shape[0]:
        raise ValueError(f"{len(keys)} keys for a batch of {batch.input_ids.shape[0]} sequences")
