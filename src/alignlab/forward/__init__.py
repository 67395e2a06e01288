"""The model-forward layer: sequence batches, packing with tree attention, lean layers, log-probs.

Example: ``lp = sequence_logps(model, collate_sequences([(prompt_ids, completion_ids)], pad_id=0))``

Training, the reference and its cache, sampling, scoring and rewards all run a model through
here, so it sits below all of them (the layer order is in docs/design.md).
"""

from alignlab.forward.batch import SequenceBatch, collate_sequences
from alignlab.forward.causal_lm import CompletionLogps, frozen_logps, sequence_logps, split_model
from alignlab.forward.runtime import (
    autocast_for,
    base_model,
    eval_mode,
    model_device,
    pick_device,
    unwrap,
)

__all__ = [
    "CompletionLogps", "SequenceBatch", "autocast_for", "base_model", "collate_sequences",
    "eval_mode", "frozen_logps", "model_device", "pick_device", "sequence_logps", "split_model", "unwrap",
]
