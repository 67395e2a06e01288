"""The best evaluation so far: keep its model beside the last (``train.keep_best``), and stop when
it has not improved for a while (``train.early_stopping_patience``).

Example: ``tracker = BestTracker(config.train, export=lambda path: save_final(...))``; after each
evaluation ``if tracker.update(step, metrics): stop``.

"Better" is ``train.best_metric`` moving by more than ``train.early_stopping_min_delta`` in the
direction of ``train.best_mode`` (lower loss, higher accuracy). The tracker's state (best value
and step, evaluations without improvement, whether it stopped) is checkpointed with the run, so a
resumed run keeps counting where it left off, and a run that stopped early stays stopped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from alignlab.config import TrainConfig
from alignlab.errors import AlignlabError

BEST_DIR = "best"
"""RUN_DIR/best: the best evaluation's model (Hugging Face format) and best.json."""


class BestTracker:
    """Follows one eval metric; exports the model on each improvement when asked to."""

    def __init__(self, settings: TrainConfig, run_dir: Path, export: Callable[[Path], Any] | None = None) -> None:
        self.metric, self.mode = settings.best_metric, settings.best_mode
        self.patience, self.min_delta = settings.early_stopping_patience, settings.early_stopping_min_delta
        self.keep = settings.keep_best
        self.run_dir, self.export = Path(run_dir), export
        self.best: float | None = None
        self.best_step: int | None = None
        self.stale = 0
        """Evaluations since the last improvement."""
        self.stopped = False

    @property
    def active(self) -> bool:
        return self.keep or self.patience is not None

    def update(self, step: int, metrics: Mapping[str, float], *, writer: bool = True) -> bool:
        """Record an evaluation at ``step``; True when training should stop. ``writer``: this
        process writes the best model (rank 0)."""
        if self.metric not in metrics:
            raise AlignlabError(f"train.best_metric={self.metric!r} is not among the eval metrics "
                                f"{sorted(metrics)}\n  hint: choose one of them (e.g. loss, or ranking/accuracy "
                                "with train.best_mode=max)")
        value = float(metrics[self.metric])
        if math.isfinite(value) and self._better(value):
            self.best, self.best_step, self.stale = value, step, 0
            if self.keep and writer:
                self._write(step, value)
        else:
            self.stale += 1
        if self.patience is not None and self.stale >= self.patience:
            self.stopped = True
        return self.stopped

    def _better(self, value: float) -> bool:
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def _write(self, step: int, value: float) -> None:
        folder = self.run_dir / BEST_DIR
        if self.export is None:
            raise AlignlabError("train.keep_best needs a way to save the model (the trainer got no export)")
        self.export(folder)
        (folder / "best.json").write_text(json.dumps({"step": step, "metric": self.metric, "value": value,
                                                      "mode": self.mode}) + "\n", encoding="utf-8")

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step, "stale": self.stale, "stopped": self.stopped}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best, self.best_step = state.get("best"), state.get("best_step")
        self.stale, self.stopped = int(state.get("stale", 0)), bool(state.get("stopped", False))
