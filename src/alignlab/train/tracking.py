"""Experiment trackers beside metrics.jsonl: TensorBoard, Weights & Biases, MLflow (``train.report_to``).

Example: ``trackers = Trackers(("wandb", "mlflow"), run_dir, config_dict); trackers.log(record, step)``

Every record the loop writes to metrics.jsonl goes to each tracker as scalars named
``SPLIT/NAME`` (``train/loss``, ``eval/rewards/margins``) at the record's step, so the numbers
in a tracker are the numbers in the file. ``train.report_to`` null means TensorBoard when it is
installed (as before); a list names trackers explicitly, and one that is not installed is an
error before any model loads, naming the extra to install. W&B honours ``WANDB_MODE`` (offline
works without network) and ``WANDB_PROJECT``; MLflow honours ``MLFLOW_TRACKING_URI`` and otherwise
writes a file store in RUN_DIR/mlruns. A resumed run continues the same W&B and MLflow runs (their
ids are kept in RUN_DIR/trackers.json).
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from alignlab.errors import ConfigError

BACKENDS: Mapping[str, tuple[str, str]] = {
    # name: (module to import, the extra that installs it)
    "tensorboard": ("tensorboard", "tensorboard"),
    "wandb": ("wandb", "wandb"),
    "mlflow": ("mlflow", "mlflow"),
}
IDS_FILE = "trackers.json"


def check_trackers(report_to: Sequence[str] | None) -> tuple[str, ...]:
    """The trackers to use; an unknown or missing one is a ConfigError with the install hint."""
    if report_to is None:
        return ("tensorboard",) if _installed("tensorboard") else ()
    chosen = tuple(report_to)
    for name in chosen:
        if name not in BACKENDS:
            raise ConfigError(f"train.report_to: unknown tracker {name!r}; choose from {', '.join(BACKENDS)}")
        _, extra = BACKENDS[name]
        if not _installed(name):
            raise ConfigError(f"train.report_to names {name!r}, which is not installed\n"
                              f"  hint: pip install 'alignlab[{extra}]'")
    return chosen


def _installed(name: str) -> bool:
    if name == "tensorboard":  # torch's writer is the one used: it needs the tensorboard package
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401
        except ImportError:
            return False
        return True
    return importlib.util.find_spec(BACKENDS[name][0]) is not None


class Trackers:
    """The chosen trackers of one run (main process only)."""

    def __init__(self, names: Sequence[str], run_dir: Path, config: Mapping[str, Any]) -> None:
        self.run_dir = Path(run_dir)
        self.config = dict(config)
        self.names = tuple(names)
        self._ids = self._read_ids()
        self._open: dict[str, Any] = {}

    def log(self, record: Mapping[str, Any], step: int) -> None:
        scalars = {f"{record.get('split', 'train')}/{k}": float(v) for k, v in record.items()
                   if isinstance(v, int | float) and not isinstance(v, bool) and k != "step"}
        if not scalars:
            return
        for name in self.names:
            getattr(self, f"_log_{name}")(scalars, step)

    def close(self) -> None:
        for name, handle in self._open.items():
            if name == "tensorboard":
                handle.close()
            elif name == "wandb":
                handle.finish()
            elif name == "mlflow":
                import mlflow

                mlflow.end_run()
        self._open.clear()

    # ---- backends --------------------------------------------------------------------------------

    def _log_tensorboard(self, scalars: Mapping[str, float], step: int) -> None:
        if "tensorboard" not in self._open:
            from torch.utils.tensorboard import SummaryWriter

            self._open["tensorboard"] = SummaryWriter(str(self.run_dir / "tensorboard"))
        writer = self._open["tensorboard"]
        for key, value in scalars.items():
            writer.add_scalar(key, value, step)
        writer.flush()

    def _log_wandb(self, scalars: Mapping[str, float], step: int) -> None:
        if "wandb" not in self._open:
            import wandb

            run = wandb.init(project=os.environ.get("WANDB_PROJECT", "alignlab"), name=self.run_dir.name,
                             dir=str(self.run_dir), config=self.config, id=self._ids.get("wandb"), resume="allow")
            self._remember("wandb", run.id)
            self._open["wandb"] = run
        self._open["wandb"].log(dict(scalars), step=step)

    def _log_mlflow(self, scalars: Mapping[str, float], step: int) -> None:
        if "mlflow" not in self._open:
            import mlflow

            if "MLFLOW_TRACKING_URI" not in os.environ:
                # MLflow 3 keeps its file store behind an opt-in; it is what needs no server.
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
                mlflow.set_tracking_uri((self.run_dir / "mlruns").resolve().as_uri())
            mlflow.set_experiment("alignlab")
            run = mlflow.start_run(run_id=self._ids.get("mlflow"), run_name=None if "mlflow" in self._ids
                                   else self.run_dir.name)
            if "mlflow" not in self._ids:
                mlflow.log_params(_flat(self.config))
            self._remember("mlflow", run.info.run_id)
            self._open["mlflow"] = run
        import mlflow

        mlflow.log_metrics({_mlflow_key(k): v for k, v in scalars.items()}, step=step)

    # ---- run ids, for resumes ------------------------------------------------------------------

    def _read_ids(self) -> dict[str, str]:
        path = self.run_dir / IDS_FILE
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    def _remember(self, name: str, run_id: str) -> None:
        self._ids[name] = run_id
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / IDS_FILE).write_text(json.dumps(self._ids) + "\n", encoding="utf-8")


def _flat(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config sections as MLflow params: ``train.lr`` → "1e-06" (values as text)."""
    out: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = str(value)[:500]  # MLflow's limit on a param's value
    return out


def _mlflow_key(key: str) -> str:
    """MLflow accepts letters, digits, _ - . space / in metric names; anything else becomes _."""
    return "".join(c if c.isalnum() or c in "_-. /" else "_" for c in key)
