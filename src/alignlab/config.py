"""The run configuration: typed, frozen sections loaded from YAML with dotted overrides.

Example: ``load_config("run.yaml", ["train.lr=1e-6", "data.mapping.chosen=response_a"])``

The generic machinery (types, YAML, overrides, help text) is in :mod:`alignlab.typed_yaml`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from alignlab.data.load import LoadOptions
from alignlab.data.tokenize import TokenizeOptions
from alignlab.errors import ConfigError, require
from alignlab.typed_yaml import (  # noqa: F401  (re-exported: the config API in one place)
    apply_overrides,
    dump_yaml,
    from_dict,
    help_text,
    to_dict,
)
from alignlab.typed_yaml import load_config as _load_typed


@dataclass(frozen=True)
class DataConfig(LoadOptions):
    """Where the training data comes from; how it is read is :class:`LoadOptions`, inherited."""

    path: str | None = None
    """Training data: a file (.jsonl, .json, .parquet, .csv), a directory, or a hub dataset id."""
    eval_path: str | None = None
    """Held-out evaluation data in the same format as `path`; none means no evaluation set."""


TokenizeConfig = TokenizeOptions
"""The ``tokenize`` section is the tokenizer's own options class: one definition, one set of checks."""


@dataclass(frozen=True)
class ModelConfig:
    """Which model and tokenizer to load, and how."""

    name_or_path: str | None = None
    """The policy model: a Hugging Face hub id or a local directory."""
    tokenizer: str | None = None
    """Tokenizer hub id or directory; none uses the model's own."""
    trust_remote_code: bool = False
    """Run model code shipped with the checkpoint; only for sources you trust."""
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    """Weight dtype; "auto" keeps the dtype stored in the checkpoint."""


@dataclass(frozen=True)
class TrainConfig:
    """The objective and the optimization schedule."""

    loss: str = "dpo"
    """Name of a registered loss, e.g. dpo."""
    loss_kwargs: dict[str, Any] = field(default_factory=dict)
    """Hyperparameters of the loss by name, e.g. {beta: 0.1}; unset ones keep the paper defaults."""
    lr: float = 5e-7
    """Peak learning rate."""
    batch_size: int = 8
    """Examples per forward pass on each device; a step sees batch_size x grad_accum x devices."""
    grad_accum: int = 1
    """Batches whose gradients are accumulated into one optimizer step."""
    epochs: float = 1.0
    """Passes over the training data; a fraction stops partway. max_steps takes precedence."""
    max_steps: int | None = None
    """Optimizer steps to run; when set it replaces epochs."""
    warmup_ratio: float = 0.0
    """Share of all steps spent raising the learning rate linearly from 0 to lr."""
    schedule: Literal["constant", "linear", "cosine"] = "linear"
    """Learning rate after warmup: constant, or a linear or cosine decay to 0."""
    seed: int = 0
    """Random seed for data order, dropout and initialization."""
    output_dir: str = "runs/latest"
    """Run directory: resolved config, metrics, checkpoints and the final model."""

    def __post_init__(self) -> None:
        for key in ("lr", "epochs"):
            value = getattr(self, key)
            require(math.isfinite(value) and value > 0, key, f"must be positive, got {value}")
        for key in ("batch_size", "grad_accum", "max_steps"):
            value = getattr(self, key)
            require(value is None or value >= 1, key, f"must be at least 1, got {value}")
        ratio = self.warmup_ratio
        require(0 <= ratio < 1, "warmup_ratio", f"must be in [0, 1), got {ratio}")


@dataclass(frozen=True)
class RunConfig:
    """Everything one `alignlab train` run needs."""

    data: DataConfig = field(default_factory=DataConfig)
    """Training and evaluation data."""
    tokenize: TokenizeConfig = field(default_factory=TokenizeConfig)
    """Tokenization limits and chat template."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Model and tokenizer to load."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Objective and optimization schedule."""


def check_run_config(config: RunConfig) -> None:
    """Checks that need the registries: the loss exists and its hyperparameters are its own.

    Run before any training starts, so a typo fails in a second, not after the model loads.
    """
    from alignlab.losses.contract import check_loss_kwargs, get_loss

    try:
        get_loss(config.train.loss)
        check_loss_kwargs(config.train.loss, config.train.loss_kwargs)
    except ConfigError as error:
        raise ConfigError(f"train.loss / train.loss_kwargs: {error}") from None



def load_config(path: str | Path | None = None, overrides: Sequence[str] = (), cls: type = None) -> Any:
    """A :class:`RunConfig` (or ``cls``) from a YAML file (or defaults) and dotted overrides."""
    return _load_typed(path, overrides, cls or RunConfig)
