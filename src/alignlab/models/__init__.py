"""Loading and saving models and tokenizers from Hugging Face ids or local folders, safely.

Example: ``tokenizer = load_tokenizer("path/to/model"); model = load_policy(config.model, "cpu")``
"""

from __future__ import annotations

from alignlab.models.loading import (
    RewardScores,
    ScalarHeadModel,
    TokenScores,
    add_lora,
    linear_layer_names,
    load_policy,
    load_reward_model,
    load_tokenizer,
    reward_scores,
    save_final,
)
from alignlab.models.reference import frozen_copy
from alignlab.models.tiny import init_tiny_model

__all__ = [
    "RewardScores",
    "TokenScores",
    "ScalarHeadModel",
    "add_lora",
    "frozen_copy",
    "init_tiny_model",
    "linear_layer_names",
    "load_policy",
    "load_reward_model",
    "load_tokenizer",
    "reward_scores",
    "save_final",
]
