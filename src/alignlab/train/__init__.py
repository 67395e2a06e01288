"""The training engine: one loop, thin steps per data kind, checkpoints, and the `train` command.

Example: ``import alignlab; alignlab.train("dpo.yaml", train_data=rows, model=model, tokenizer=tok)``,
or ``from alignlab.train.run import run_training; run_training(load_config("dpo.yaml"))``

The package itself is callable, as :func:`alignlab.train.api.train`: ``alignlab.train`` names both
this package and the one function a user reaches for, and Python lets a module be callable
through its class (a ModuleType subclass), which keeps ``alignlab.train.run`` and the other
submodules where they are.
"""

from __future__ import annotations

import sys
import types
from typing import Any


class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from alignlab.train.api import train

        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
