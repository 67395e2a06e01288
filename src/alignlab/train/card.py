"""The model card each run writes (RUN_DIR/model/README.md), and pushing a run's model to the Hub.

Example: ``write_model_card(run_dir / "model", config, summary, data)``;
``push_run("runs/dpo", "me/my-dpo-model")`` (`alignlab push RUN_DIR REPO_ID`).

The card states what was actually run, from the run itself: the base model, each data source
with its fingerprint (the file's SHA-256, or a digest of the rows given in memory) and row
counts, the loss with its paper and hyperparameters, the optimization settings, the steps taken,
the final train and eval metrics, and the alignlab, torch and transformers versions. It has no
fields left for the user to fill in.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignlab.errors import AlignlabError
from alignlab.files import sha256_file, write_text_atomic

CARD = "README.md"


@dataclass(frozen=True)
class DataSource:
    """One data source of a run, as the card describes it."""

    role: str
    """"train" or "eval"."""
    name: str
    """Its path, or "train_data (in memory)"."""
    fingerprint: str
    rows: int
    """Records read."""
    examples: int
    """Examples left after tokenization."""


def fingerprint_source(source: Any, records: Sequence[Any]) -> str:
    """sha256 of a local file, else of the records' text (rows given in memory, a hub id)."""
    path = Path(str(source)) if isinstance(source, str | Path) else None
    if path is not None and path.is_file():
        return "sha256:" + sha256_file(path)
    digest = hashlib.sha256()
    for record in records:
        digest.update(repr(record).encode("utf-8"))
    return "sha256:" + digest.hexdigest() + " (of the records)"


def write_model_card(folder: Path, config: Any, summary: Mapping[str, Any], data: Sequence[DataSource]) -> Path:
    """Write ``folder``/README.md for the run of ``config`` that ended with ``summary``."""
    import torch
    import transformers

    from alignlab import __version__
    from alignlab.losses import get_loss

    entry = get_loss(config.train.loss)
    hyper = {h.name: h.default for h in entry.contract.hyperparameters}
    hyper.update(config.train.loss_kwargs)
    train = config.train
    lines = [
        "---",
        "library_name: transformers",
        f"base_model: {config.model.name_or_path}" if config.model.name_or_path else "base_model: (a model object)",
        "tags: [alignlab, " + entry.name + ("" if not config.model.lora.enabled else ", lora") + "]",
        "---",
        "",
        f"# {Path(train.output_dir).name}: {entry.name} on {config.model.name_or_path or 'a model given in Python'}",
        "",
        f"Trained with alignlab {__version__} (torch {torch.__version__}, transformers {transformers.__version__}).",
        "",
        "## Objective",
        "",
        f"- loss: `{entry.name}` ({entry.contract.paper}; {entry.contract.equation})",
        f"- hyperparameters: {_inline(hyper)}",
        f"- reference: {summary.get('reference')}",
    ]
    if entry.contract.data == "prompt":
        rl = config.rl
        lines.append(f"- online RL: {rl.num_generations} completions per prompt, up to {rl.max_new_tokens} tokens, "
                     f"temperature {rl.temperature}; rewards {_inline(list(rl.rewards))}"
                     + (f" with weights {list(rl.reward_weights)}" if rl.reward_weights else ""))
    lines += ["", "## Data", "", "| role | source | fingerprint | rows | examples |", "|---|---|---|---|---|"]
    lines += [f"| {d.role} | `{d.name}` | `{d.fingerprint}` | {d.rows} | {d.examples} |" for d in data]
    lora = config.model.lora
    lines += ["", "## Training", "",
              f"- steps: {summary.get('steps')} (of max_steps {train.max_steps}, epochs {train.epochs})",
              f"- optimizer: AdamW, lr {train.lr}, schedule {train.schedule}, warmup ratio {train.warmup_ratio}, "
              f"weight decay {train.weight_decay}, max grad norm {train.max_grad_norm}",
              f"- batch: {train.batch_size} per process × {train.grad_accum} accumulation steps; precision {train.precision}; "
              f"seed {train.seed}",
              f"- LoRA: r {lora.r}, alpha {lora.alpha}, targets {list(lora.target_modules)}"
              + (" (merged into the weights)" if lora.merge_on_save else " (adapters only)") if lora.enabled
              else "- full fine-tuning",
              f"- non-finite steps skipped: {summary.get('skipped_nonfinite', 0)}"]
    best = summary.get("best")
    if best:
        lines.append(f"- best {train.best_metric}: {best.get('best')} at step {best.get('best_step')}"
                     + (" (stopped early)" if best.get("stopped") else ""))
    lines += ["", "## Results", "", _metrics_table("last training step", summary.get("last_train") or {})]
    if summary.get("final_eval"):
        lines += ["", _metrics_table("final evaluation", summary["final_eval"])]
    lines += ["", "Every step's metrics are in the run's `metrics.jsonl`; the resolved config in `config.yaml`.", ""]
    path = Path(folder) / CARD
    write_text_atomic(path, "\n".join(lines))
    return path


def _inline(values: Any) -> str:
    return json.dumps(values, default=str)


def _metrics_table(title: str, metrics: Mapping[str, Any]) -> str:
    rows = [f"| {name} | {value:.6g} |" for name, value in sorted(metrics.items())
            if isinstance(value, int | float) and not isinstance(value, bool)]
    return "\n".join([f"| {title} | value |", "|---|---|", *rows]) if rows else f"({title}: no metrics)"


def push_run(run_dir: str | Path, repo_id: str, *, private: bool = False, token: str | None = None) -> str:
    """Upload RUN_DIR/model (weights, tokenizer, model card) to the Hugging Face Hub repo
    ``repo_id``, creating it if needed; returns the repo's URL."""
    folder = Path(run_dir) / "model"
    if not (folder / "config.json").is_file() and not (folder / "adapter_config.json").is_file():
        raise AlignlabError(f"{folder} holds no saved model\n  hint: pass a finished run directory (train.output_dir)")
    try:
        from huggingface_hub import HfApi
        from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        raise AlignlabError("pushing needs huggingface_hub\n  hint: pip install huggingface_hub") from None
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message="alignlab: upload model")
    except OfflineModeIsEnabled:
        raise AlignlabError("cannot push: Hugging Face Hub access is off (HF_HUB_OFFLINE=1)\n"
                            "  hint: unset HF_HUB_OFFLINE, and log in with `huggingface-cli login`") from None
    except (HfHubHTTPError, OSError) as error:
        raise AlignlabError(f"cannot push to {repo_id}: {str(error).splitlines()[0]}\n"
                            "  hint: check the network, the repo id and your token (`huggingface-cli login`)") from None
    return str(url)
