"""Run a causal LM on a sequence batch and return completion log-probs, never full logits.

Example: ``lp = sequence_logps(model, batch); lp.sum, lp.mean, lp.tokens``

The backbone gives hidden states; :func:`alignlab.logprobs.completion_logps` applies the output
layer to completion positions only, in chunks. Where the model allows it the whole batch runs as
one packed row, each shared prompt encoded once (:mod:`alignlab.forward.packing`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from alignlab.forward.batch import SequenceBatch
from alignlab.forward.lean import lean_layers, lean_modules
from alignlab.forward.packing import pack, packed_hidden, supports_packing
from alignlab.forward.rows import rows_hidden, rows_layout
from alignlab.forward.runtime import autocast_for, base_model, eval_mode, model_device
from alignlab.logprobs import LogProbs, completion_logps, head_logps_entropy, reduce_token_logps


def split_model(model: Any) -> tuple[nn.Module, nn.Module]:
    """(backbone, output layer) of a Hugging Face causal LM, PEFT-wrapped or not.

    Calling the backbone of a PEFT model still runs its LoRA layers (they are injected in place),
    and ``disable_adapter()`` still switches them off.
    """
    base = base_model(model)
    head = base.get_output_embeddings()
    backbone = getattr(base, base.base_model_prefix, None)
    if head is None or backbone is None:
        raise TypeError(f"{type(base).__name__} is not a causal LM with an output layer and a backbone")
    return backbone, head


class CompletionLogps(nn.Module):
    """A causal LM as a module whose forward returns completion log-probs.

    ``packing``: True runs each batch as one packed row with its shared prompts encoded once
    (models of :data:`~alignlab.forward.packing.PACKABLE_MODEL_TYPES`, else an error), and its
    norms and MLPs keep fewer tensors for the backward (:mod:`alignlab.forward.lean`); False runs
    the plain right-padded batch through the model's own layers; None (default) packs where the
    model supports it. Both give the same :class:`LogProbs` up to float rounding.

    Wrapping this (not the LM) in DistributedDataParallel keeps gradient synchronisation intact:
    DDP only sees a forward that goes through its own ``forward``.
    """

    def __init__(self, model: Any, chunk_size: int = 1024, packing: bool | None = None, *,
                 temperature: float = 1.0, entropy: bool = False) -> None:
        super().__init__()
        self.model = model
        self.chunk_size = chunk_size
        self.temperature, self.entropy = temperature, entropy
        supported = supports_packing(model)
        if packing and not supported:
            model_type = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
            raise ValueError(f"packing is not supported for model type {model_type!r}; "
                             "set train.packing=off (or auto)")
        self.packing = supported if packing is None else packing
        self._lean: list[nn.Module] | None = None  # found on the first forward with gradients

    def forward(self, batch: SequenceBatch) -> LogProbs:
        backbone, head = split_model(self.model)
        lean = self._lean_modules() if self.packing and torch.is_grad_enabled() else []
        if batch.rows is not None:  # SFT packing: whole sequences in fixed-length rows
            rows = rows_layout(batch, batch.rows)
            with lean_layers(lean):
                hidden = rows_hidden(backbone, rows)  # (R·L, H)
            return self._scattered(batch, hidden, rows.predictors, rows.targets, head)
        if self.packing:
            layout = pack(batch)
            with lean_layers(lean):
                hidden = packed_hidden(backbone, layout)[0]  # (T, H)
            return self._scattered(batch, hidden, layout.predictors, layout.targets, head)
        # position_ids follow from the right padding; the attention mask hides the pads.
        hidden = backbone(input_ids=batch.input_ids, attention_mask=batch.attention_mask.long(),
                          use_cache=False).last_hidden_state  # (N, L, H)
        return completion_logps(hidden, head, batch.input_ids, batch.completion_mask,
                                chunk_size=self.chunk_size, temperature=self.temperature, entropy=self.entropy)

    def _scattered(self, batch: SequenceBatch, hidden: torch.Tensor, predictors: torch.Tensor,
                   targets: torch.Tensor, head: nn.Module) -> LogProbs:
        """Log-probs of the completion tokens predicted by ``hidden[predictors]``, put back in
        the places of ``batch.completion_mask`` (row-major order)."""
        logps, entropy = head_logps_entropy(hidden.index_select(0, predictors), targets, head,
                                            chunk_size=self.chunk_size, temperature=self.temperature,
                                            entropy=self.entropy)
        mask = batch.completion_mask.bool()
        tokens = logps.new_zeros(mask.shape).masked_scatter(mask, logps)
        if entropy is not None:
            entropy = entropy.new_zeros(mask.shape).masked_scatter(mask, entropy)
        return reduce_token_logps(tokens, mask, entropy)

    def _lean_modules(self) -> list[nn.Module]:
        """The norms and MLPs that keep fewer tensors for the backward (nothing to keep without
        gradients: reference and scoring passes run the model's own layers)."""
        if self._lean is None:
            self._lean = lean_modules(self.model)
        return self._lean


def sequence_logps(model: Any, batch: SequenceBatch, chunk_size: int = 1024,
                   packing: bool | None = None, temperature: float = 1.0) -> LogProbs:
    """Completion log-probs of every sequence of ``batch`` (right-padded), of the logits divided
    by ``temperature``."""
    return CompletionLogps(model, chunk_size, packing, temperature=temperature)(batch)


@torch.no_grad()
def frozen_logps(model: nn.Module, batch: SequenceBatch, chunk_size: int = 1024,
                 precision: str | None = None, packing: bool | None = None, temperature: float = 1.0) -> LogProbs:
    """Log-probs of ``batch`` without gradients, on the model's device, ``model`` in eval mode
    for the call only; ``precision`` as :func:`~alignlab.forward.runtime.autocast_for`."""
    device = model_device(model)
    with eval_mode(model), autocast_for(precision, device):
        return sequence_logps(model, batch.to(device), chunk_size, packing, temperature)
