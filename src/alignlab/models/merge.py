"""Fold a LoRA run's adapters into a full model (`alignlab merge RUN_DIR OUT`).

Example: ``merge_adapters("runs/qwen-dpo", "runs/qwen-dpo-merged")``; then
``AutoModelForCausalLM.from_pretrained("runs/qwen-dpo-merged")`` loads it without peft.

A LoRA run saves only its adapters (``model/adapter_config.json`` naming the base model); the
merge loads the base, applies the adapters, folds them into the weights (W + BA·α/r) and saves a
plain Hugging Face folder with the run's tokenizer, atomically.
"""

from __future__ import annotations

from pathlib import Path

from alignlab.config import ModelConfig
from alignlab.errors import AlignlabError
from alignlab.models.loading import ADAPTER_CONFIG, load_policy, load_tokenizer, save_final


def adapter_folder(run_dir: str | Path) -> Path:
    """The folder holding a run's adapters: RUN_DIR/model, or RUN_DIR itself."""
    run = Path(run_dir)
    for folder in (run / "model", run):
        if (folder / ADAPTER_CONFIG).is_file():
            return folder
    if not run.exists():
        raise AlignlabError(f"{run} does not exist\n  hint: pass a run directory (train.output_dir) or its model/ folder")
    raise AlignlabError(f"{run} holds no LoRA adapters ({ADAPTER_CONFIG} in {run / 'model'} or {run})\n"
                        "  hint: a run without model.lora.enabled already saved a full model, which "
                        "AutoModelForCausalLM.from_pretrained loads as it is")


def merge_adapters(run_dir: str | Path, out: str | Path, *, dtype: str = "auto",
                   trust_remote_code: bool = False) -> Path:
    """Write the run's base model with its adapters folded in to ``out``; returns ``out``."""
    folder = adapter_folder(run_dir)
    target = Path(out)
    if target.resolve() == folder.resolve():
        raise AlignlabError(f"the merged model would overwrite its own adapters in {folder}\n"
                            "  hint: choose another output folder")
    config = ModelConfig(name_or_path=str(folder), dtype=dtype, trust_remote_code=trust_remote_code)
    model = load_policy(config, "cpu")  # a folder of adapters loads as its base with them merged
    tokenizer = load_tokenizer(str(folder), trust_remote_code=trust_remote_code)
    return save_final(model, tokenizer, target)
