"""A 4-bit or 8-bit base model under LoRA adapters (QLoRA: Dettmers et al. 2023, arXiv 2305.14314).

Example: ``model.quantization: 4bit`` with ``model.lora.enabled: true`` in a config; or
``load_kwargs(config, device)`` for ``from_pretrained``.

The base's linear layers are stored by bitsandbytes (4-bit NF4 with double quantisation, as the
QLoRA paper; or LLM.int8() for 8-bit) and frozen; only the LoRA adapters train, in float32. The
checks here run before any model loads: bitsandbytes installed (the ``qlora`` extra), LoRA on
(a quantised base cannot be fine-tuned fully), a device bitsandbytes supports (CPU or CUDA), and
no merge into quantised weights at save time (``alignlab merge`` folds the adapters into the
full-precision base afterwards).
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch

from alignlab.config import ModelConfig
from alignlab.errors import ConfigError

SUPPORTED_DEVICES = ("cpu", "cuda")


def check_quantization(config: ModelConfig, device: torch.device | str | None = None) -> None:
    """Every reason ``model.quantization`` cannot work here, as a ConfigError, before loading."""
    if config.quantization == "none":
        return
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError(f"model.quantization={config.quantization} needs bitsandbytes, which is not "
                          "installed\n  hint: pip install 'alignlab[qlora]'")
    if not config.lora.enabled:
        raise ConfigError(f"model.quantization={config.quantization} with full fine-tuning: quantised weights "
                          "cannot be trained\n  hint: set model.lora.enabled=true (QLoRA), or model.quantization=none")
    if config.lora.merge_on_save:
        raise ConfigError("model.lora.merge_on_save with a quantised base would fold the adapters into "
                          "rounded weights\n  hint: keep merge_on_save=false and run `alignlab merge RUN_DIR OUT`, "
                          "which merges into the full-precision base")
    if config.gguf_file:
        raise ConfigError("model.quantization and model.gguf_file: a GGUF file is loaded dequantised; "
                          "choose one")
    if device is not None and torch.device(device).type not in SUPPORTED_DEVICES:
        raise ConfigError(f"model.quantization={config.quantization}: bitsandbytes does not run on "
                          f"{torch.device(device).type} here\n  hint: train.device=cpu or cuda, or model.quantization=none")


def load_kwargs(config: ModelConfig, device: torch.device | str) -> dict[str, Any]:
    """``from_pretrained`` keywords of the quantised load (none when off); the weights are placed
    on ``device`` as they load (a quantised model cannot be moved afterwards)."""
    if config.quantization == "none":
        return {}
    from transformers import BitsAndBytesConfig

    if config.quantization == "4bit":
        compute = torch.bfloat16 if config.dtype == "bfloat16" else torch.float32
        quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                          bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute)
    else:
        quantization = BitsAndBytesConfig(load_in_8bit=True)
    device = torch.device(device)
    return {"quantization_config": quantization, "device_map": {"": device.index if device.type == "cuda" and
                                                                   device.index is not None else device.type}}


def prepare_for_adapters(model: Any) -> Any:
    """peft's preparation of a quantised base for training adapters: norms in float32, inputs
    that require gradients (so the adapters below the first layer get them)."""
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
