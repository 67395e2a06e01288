"""Run a causal LM on a sequence batch and return completion log-probs, never full logits.

Example: ``lp = sequence_logps(model, batch); lp.sum, lp.mean, lp.tokens``

The backbone gives hidden states; :func:`alignlab.logprobs.completion_logps` applies the output
layer to completion positions only, in chunks. Where the model allows it the whole batch runs as
one packed row, each shared prompt encoded once (:mod:`alignlab.train.packing`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from alignlab.logprobs import LogProbs, completion_logps, head_logps, reduce_token_logps
from alignlab.train.batching import SequenceBatch
from alignlab.train.lean import lean_layers, lean_modules
from alignlab.train.packing import pack, packed_hidden, supports_packing


def split_model(model: Any) -> tuple[nn.Module, nn.Module]:
    """(backbone, output layer) of a Hugging Face causal LM, PEFT-wrapped or not.

    Calling the backbone of a PEFT model still runs its LoRA layers (they are injected in place),
    and ``disable_adapter()`` still switches them off.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base = getattr(base, "module", base)  # DistributedDataParallel
    head = base.get_output_embeddings()
    backbone = getattr(base, base.base_model_prefix, None)
    if head is None or backbone is None:
        raise TypeError(f"{type(base).__name__} is not a causal LM with an output layer and a backbone")
    return backbone, head


class CompletionLogps(nn.Module):
    """A causal LM as a module whose forward returns completion log-probs.

    ``packing``: True runs each batch as one packed row with its shared prompts encoded once
    (models of :data:`~alignlab.train.packing.PACKABLE_MODEL_TYPES`, else an error), and its
    norms and MLPs keep fewer tensors for the backward (:mod:`alignlab.train.lean`); False runs
    the plain right-padded batch through the model's own layers; None (default) packs where the
    model supports it. Both give the same :class:`LogProbs` up to float rounding.

    Wrapping this (not the LM) in DistributedDataParallel keeps gradient synchronisation intact:
    DDP only sees a forward that goes through its own ``forward``.
    """

    def __init__(self, model: Any, chunk_size: int = 1024, packing: bool | None = None) -> None:
        super().__init__()
        self.model = model
        self.chunk_size = chunk_size
        supported = supports_packing(model)
        if packing and not supported:
            model_type = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
            raise ValueError(f"packing is not supported for model type {model_type!r}; "
                             "set train.packing=off (or auto)")
        self.packing = supported if packing is None else packing
        self._lean: list[nn.Module] | None = None  # found on the first forward with gradients

    def forward(self, batch: SequenceBatch) -> LogProbs:
        backbone, head = split_model(self.model)
        if self.packing:
            layout = pack(batch)
            with lean_layers(self._lean_modules() if torch.is_grad_enabled() else []):
                hidden = packed_hidden(backbone, layout)[0]  # (T, H)
            logps = head_logps(hidden.index_select(0, layout.predictors), layout.targets, head,
                               chunk_size=self.chunk_size)
            mask = batch.completion_mask.bool()
            tokens = logps.new_zeros(mask.shape).masked_scatter(mask, logps)  # row-major order
            return reduce_token_logps(tokens, mask, batch.token_weights)
        # position_ids follow from the right padding; the attention mask hides the pads.
        hidden = backbone(input_ids=batch.input_ids, attention_mask=batch.attention_mask.long(),
                          use_cache=False).last_hidden_state  # (N, L, H)
        return completion_logps(hidden, head, batch.input_ids, batch.completion_mask,
                                chunk_size=self.chunk_size, token_weights=batch.token_weights)


    def _lean_modules(self) -> list[nn.Module]:
        """The norms and MLPs that keep fewer tensors for the backward (nothing to keep without
        gradients: reference and scoring passes run the model's own layers)."""
        if self._lean is None:
            self._lean = lean_modules(self.model)
        return self._lean


def sequence_logps(model: Any, batch: SequenceBatch, chunk_size: int = 1024,
                   packing: bool | None = None) -> LogProbs:
    """Completion log-probs of every sequence of ``batch`` (right-padded)."""
    return CompletionLogps(model, chunk_size, packing)(batch)


@torch.no_grad()
def reference_logps(model: Any, batch: SequenceBatch, chunk_size: int = 1024,
                    packing: bool | None = None) -> LogProbs:
    """The same without gradients, for a frozen reference (callers set eval mode)."""
    return sequence_logps(model, batch, chunk_size, packing)


class RewardScores(nn.Module):
    """A reward model as a module mapping a SequenceBatch to rewards (N,) (DDP-wrappable)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: SequenceBatch) -> torch.Tensor:
        from alignlab.models import reward_scores

        return reward_scores(self.model, batch.input_ids, batch.attention_mask.long())
