"""``alignlab.train(config, ...)``: one training run from Python, the CLI's `alignlab train` without a shell.

Example::

    import alignlab
    run_dir = alignlab.train({"train": {"loss": "dpo", "max_steps": 10, "output_dir": "runs/py"}},
                             train_data=[{"prompt": "2+2?", "chosen": "4", "rejected": "5"}, ...],
                             model=my_model, tokenizer=my_tokenizer)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from alignlab.config import RunConfig, load_config
from alignlab.errors import ConfigError
from alignlab.typed_yaml import apply_overrides, from_dict, to_dict


def train(config: RunConfig | Mapping[str, Any] | str | Path, *, train_data: Any = None, eval_data: Any = None,
          model: Any = None, tokenizer: Any = None, callbacks: Sequence[Any] = (),
          overrides: Sequence[str] = (), console: Console | None = None) -> Path:
    """Train as ``config`` says and return the run directory (config.yaml, metrics.jsonl, model/).

    ``config``: a :class:`~alignlab.config.RunConfig`, a dict of its sections (``{"train":
    {"loss": "dpo"}}``), or a YAML path; ``overrides``: dotted ``key=value`` strings on top.
    ``train_data`` / ``eval_data``: rows in any supported format as a list of dicts, a
    ``datasets.Dataset``, or records, instead of data.path / data.eval_path. ``model`` and
    ``tokenizer``: objects already in memory, instead of model.name_or_path. ``callbacks``: objects
    with any of ``on_step(trainer, record)``, ``on_evaluate(trainer, record)`` and
    ``on_save(trainer, checkpoint_path)``, called on the main process.
    """
    from alignlab.train.run import run_training

    return run_training(resolve_config(config, overrides), console, train_data=train_data, eval_data=eval_data,
                        model=model, tokenizer=tokenizer, callbacks=callbacks)


def resolve_config(config: RunConfig | Mapping[str, Any] | str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    """A RunConfig from any of the forms :func:`train` takes, with ``overrides`` applied."""
    if isinstance(config, str | Path):
        return load_config(config, overrides)
    if isinstance(config, RunConfig):
        data: Mapping[str, Any] = to_dict(config)
    elif isinstance(config, Mapping):
        data = config
    else:
        raise ConfigError(f"config must be a RunConfig, a dict of its sections or a YAML path, "
                          f"got {type(config).__name__}")
    return from_dict(RunConfig, apply_overrides(dict(data), overrides))
