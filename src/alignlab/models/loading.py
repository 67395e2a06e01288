"""Loading and saving models: policies (with optional LoRA), reward models, final exports.

Example: ``model = load_policy(config.model, "cuda"); save_final(model, tok, "run/model", False)``

Safety: remote code runs only when ``trust_remote_code`` is set by name, weights are
read from safetensors only (GGUF when ``gguf_file`` is named), and every failure to load is an
:class:`AlignlabError` with a hint instead of a stack of library internals.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alignlab.config import LoraSettings, ModelConfig
from alignlab.errors import AlignlabError, ConfigError
from alignlab.files import fsync_tree, replace_dir
from alignlab.forward import SequenceBatch, model_device, split_model, unwrap

SCALAR_HEAD_FILE = "scalar_head.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_tokenizer(name_or_path: str | Path, *, trust_remote_code: bool = False) -> Any:
    """An ``AutoTokenizer``; remote code runs only when asked for by name."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(name_or_path), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise AlignlabError(
            f"cannot load tokenizer {str(name_or_path)!r}: {_first_line(exc)}\n"
            "  hint: give a local folder holding tokenizer.json / tokenizer_config.json "
            "(hub ids need network access)"
        ) from None


def load_policy(config: ModelConfig, device: torch.device | str) -> Any:
    """The causal LM of ``config`` on ``device``, wrapped in LoRA adapters when enabled.

    A folder of saved adapters (``adapter_config.json``) loads as the model it stands for: its
    base with the adapters merged; new adapters, when enabled, go on top of that. The model is
    returned in the mode ``from_pretrained`` leaves it (eval); the trainer sets train mode.
    """
    from transformers import AutoModelForCausalLM

    from alignlab.models.quantization import check_quantization, load_kwargs, prepare_for_adapters

    check_quantization(config, device)
    if config.quantization != "none":  # placed as it loads: a quantised model cannot be moved
        model = prepare_for_adapters(_load_pretrained(AutoModelForCausalLM, config, **load_kwargs(config, device)))
    else:
        model = _load_pretrained(AutoModelForCausalLM, config).to(device)
    if config.lora.enabled:
        model = add_lora(model, config.lora, task_type="CAUSAL_LM")
    return model


def add_lora(model: nn.Module, lora: LoraSettings, task_type: str = "CAUSAL_LM") -> Any:
    """``model`` wrapped by peft with LoRA adapters; only adapter weights (and, for
    ``SEQ_CLS``, the classification head) keep ``requires_grad``.

    ``target_modules=("all-linear",)`` is peft's shorthand for every linear layer but the output.
    """
    from peft import LoraConfig, get_peft_model

    targets: str | list[str] = list(lora.target_modules)
    if targets == ["all-linear"]:
        targets = "all-linear"
    else:
        names = [name for name, _ in model.named_modules()]
        missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
        if missing:
            raise AlignlabError(_no_such_layers(model, missing))
    peft_config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                             target_modules=targets, task_type=task_type)
    try:
        return get_peft_model(model, peft_config)
    except ValueError as exc:  # e.g. a target that is not a layer type LoRA supports
        raise AlignlabError(f"{_no_such_layers(model, list(lora.target_modules))}\n"
                            f"  peft said: {_first_line(exc)}") from None


def linear_layer_names(model: nn.Module) -> list[str]:
    """Distinct last name parts of the model's linear layers, e.g. ``["k_proj", "lm_head", ...]``."""
    from transformers.pytorch_utils import Conv1D  # GPT-2's linear layers

    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if isinstance(module, nn.Linear | Conv1D)})


def load_reward_model(
    config: ModelConfig, device: torch.device | str, tokenizer: Any = None
) -> nn.Module:
    """A reward model as ``config.reward_head`` says; score it with :func:`reward_scores`.

    ``sequence_classification``: ``AutoModelForSequenceClassification`` with one label; its pad
    token id comes from ``tokenizer`` when the checkpoint has none (transformers pools the last
    token that is not the pad token, so a pad token equal to EOS would skip a final EOS).
    ``scalar_head``: a :class:`ScalarHeadModel` over the causal LM; a folder that holds a saved
    one (``scalar_head.safetensors``) gets its trained head back, any other gets a fresh head.
    """
    if config.reward_head == "scalar_head":
        source = _resolve_source(config.name_or_path)
        if (Path(source) / SCALAR_HEAD_FILE).is_file():
            model = ScalarHeadModel.from_pretrained(source, dtype=config.dtype,
                                                    trust_remote_code=config.trust_remote_code)
        else:
            from transformers import AutoModelForCausalLM

            model = ScalarHeadModel(_load_pretrained(AutoModelForCausalLM, config))
        if config.lora.enabled:  # adapters on the LM only; the head stays fully trainable
            model.lm = add_lora(model.lm, config.lora, task_type="CAUSAL_LM")
        return model.to(device)

    from transformers import AutoModelForSequenceClassification

    model = _load_pretrained(AutoModelForSequenceClassification, config, num_labels=1)
    text_config = model.config.get_text_config()
    if text_config.pad_token_id is None:
        pad = getattr(tokenizer, "pad_token_id", None)
        if pad is None:
            raise AlignlabError(
                f"reward model {config.name_or_path!r} and its tokenizer define no pad token, "
                "which sequence classification needs to find each sequence's last token\n"
                "  hint: pass the tokenizer, set a pad token on it, or use reward_head: scalar_head"
            )
        text_config.pad_token_id = pad
        model.config.pad_token_id = pad
    model = model.to(device)
    if config.lora.enabled:
        model = add_lora(model, config.lora, task_type="SEQ_CLS")
    return model


class ScalarHeadModel(nn.Module):
    """A causal LM backbone and a linear head ``(H → 1)`` on the last non-padding token.

    ``forward(input_ids, attention_mask)`` returns rewards ``(N,)`` in float32; the head is kept
    in float32 whatever the LM's dtype. ``save_pretrained(dir)`` writes the LM as Hugging Face
    files plus ``scalar_head.safetensors``; :meth:`from_pretrained` reads both back.
    """

    def __init__(self, lm: nn.Module, head: nn.Linear | None = None) -> None:
        super().__init__()
        self.lm = lm
        hidden = lm.config.get_text_config().hidden_size
        if head is None:
            head = nn.Linear(hidden, 1)
            # Small random weights (OpenRLHF/InstructGPT); zeros would give the backbone no
            # gradient on the first step.
            nn.init.normal_(head.weight, std=1 / math.sqrt(hidden + 1))
            nn.init.zeros_(head.bias)
        self.head = head.to(device=model_device(lm), dtype=torch.float32)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, every_token: bool = False) -> torch.Tensor:
        """Rewards (N,) at the last non-padding token; ``every_token``: the head at every position
        (N, L), what a process reward model reads its step scores from."""
        backbone, _ = split_model(self.lm)
        mask = attention_mask.long()
        hidden = backbone(input_ids=input_ids, attention_mask=mask,
                          use_cache=False).last_hidden_state  # (N, L, H)
        if every_token:
            return self.head(hidden.float()).squeeze(-1)  # (N, L)
        positions = torch.arange(mask.shape[1], device=mask.device)
        last = (mask * positions).argmax(dim=1)  # (N,) rightmost attended position
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]  # (N, H)
        return self.head(pooled.float()).squeeze(-1)  # (N,)

    def save_pretrained(self, out_dir: str | Path, merge_lora: bool = False) -> None:
        """The LM (merged or as adapters, see :func:`save_final`) and the head, into ``out_dir``."""
        from safetensors.torch import save_file

        out = Path(out_dir)
        _save_lm(self.lm, out, merge_lora)
        tensors = {name: value.detach().cpu().contiguous() for name, value in self.head.state_dict().items()}
        save_file(tensors, out / SCALAR_HEAD_FILE, metadata={"format": "pt", "alignlab": "scalar_head"})

    @classmethod
    def from_pretrained(
        cls, path: str | Path, *, dtype: str = "auto", trust_remote_code: bool = False
    ) -> ScalarHeadModel:
        """Read a folder written by :meth:`save_pretrained` (adapters come back merged)."""
        from safetensors.torch import load_file
        from transformers import AutoModelForCausalLM

        config = ModelConfig(name_or_path=str(path), dtype=dtype, trust_remote_code=trust_remote_code)
        lm = _load_pretrained(AutoModelForCausalLM, config)
        head_file = Path(path) / SCALAR_HEAD_FILE
        if not head_file.is_file():
            raise AlignlabError(f"{path} has no {SCALAR_HEAD_FILE}\n  hint: it is not a scalar-head "
                                "reward model; use reward_head: sequence_classification, or train one")
        state = load_file(head_file)
        hidden = lm.config.get_text_config().hidden_size
        if tuple(state.get("weight", torch.empty(0)).shape) != (1, hidden) or "bias" not in state:
            raise AlignlabError(f"{head_file} does not hold a (1, {hidden}) head with a bias for this "
                                "model\n  hint: the head and the LM in that folder do not belong together")
        head = nn.Linear(hidden, 1)
        head.load_state_dict(state)
        return cls(lm, head)


def reward_scores(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Rewards ``(N,)`` (float32) of right-padded sequences, for either kind of reward model.

    ``model`` may be wrapped in DistributedDataParallel; it is called through the wrapper.
    """
    if isinstance(unwrap(model), ScalarHeadModel):
        return model(input_ids, attention_mask)
    return model(input_ids=input_ids, attention_mask=attention_mask).logits[:, 0].float()  # (N,)


def save_final(model: nn.Module, tokenizer: Any, out_dir: str | Path, merge_lora: bool = False) -> Path:
    """Write the trained model (and tokenizer) to ``out_dir`` in Hugging Face format, atomically.

    - Plain model: ``save_pretrained`` (safetensors); load with
      ``AutoModelForCausalLM.from_pretrained(out_dir)``.
    - PEFT model, ``merge_lora=True``: the adapters merged into the weights, saved as a plain model
      (load as above). The merge is done on a CPU copy, so ``model`` keeps its adapters and no
      accelerator memory is needed for it; CPU memory for one more model is.
    - PEFT model, ``merge_lora=False``: only the adapters (``adapter_config.json`` names the base
      by absolute path when it was a local folder); load with ``PeftModel.from_pretrained(
      AutoModelForCausalLM.from_pretrained(base), out_dir)``, or with :func:`load_policy`, which
      merges them.
    - :class:`ScalarHeadModel`: its LM as above plus ``scalar_head.safetensors``; load with
      ``ScalarHeadModel.from_pretrained(out_dir)``.

    Files go to a temporary sibling folder, which then replaces ``out_dir`` by rename: a crash
    leaves the previous ``out_dir`` (or, between the two renames, a ``.<name>.old-*`` sibling).
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        model = unwrap(model)
        if isinstance(model, ScalarHeadModel):
            model.save_pretrained(temporary, merge_lora=merge_lora)
        else:
            _save_lm(model, temporary, merge_lora)
        if tokenizer is not None:
            tokenizer.save_pretrained(temporary)
        fsync_tree(temporary)
        replace_dir(temporary, out)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return out


class RewardScores(nn.Module):
    """A reward model as a module mapping a SequenceBatch to rewards (N,) (DDP-wrappable)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: SequenceBatch) -> torch.Tensor:
        return reward_scores(self.model, batch.input_ids, batch.attention_mask.long())


class TokenScores(nn.Module):
    """A scalar-head reward model as a module mapping a SequenceBatch to its score at every
    position (N, L) (DDP-wrappable): a process reward model's step logits are read off these."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not isinstance(unwrap(model), ScalarHeadModel):
            raise ConfigError("a process reward model scores every step, which needs a scalar head\n"
                              "  hint: model.reward_head=scalar_head")
        self.model = model

    def forward(self, batch: SequenceBatch) -> torch.Tensor:
        return self.model(batch.input_ids, batch.attention_mask.long(), every_token=True)


# ---- internals -------------------------------------------------------------------------------


def _load_pretrained(auto_cls: Any, config: ModelConfig, **extra: Any) -> Any:
    """``auto_cls.from_pretrained`` with alignlab's safety defaults; adapter folders merged."""
    source = _resolve_source(config.name_or_path)
    adapter_file = Path(source) / ADAPTER_CONFIG
    if adapter_file.is_file():
        return _load_adapter_folder(auto_cls, config, source, adapter_file, **extra)
    kwargs: dict[str, Any] = {
        _dtype_keyword(): DTYPES.get(config.dtype, config.dtype),
        "trust_remote_code": config.trust_remote_code,
        **extra,
    }
    if config.gguf_file:
        kwargs["gguf_file"] = config.gguf_file
    else:
        kwargs["use_safetensors"] = True  # never unpickle weights: a pickle can run code
    try:
        return auto_cls.from_pretrained(source, **kwargs)
    except ImportError as exc:  # e.g. the gguf package is missing
        raise AlignlabError(f"cannot load model {source!r}: {_first_line(exc)}\n"
                            "  hint: install the package the message names") from None
    except (OSError, ValueError, KeyError) as exc:
        raise AlignlabError(f"cannot load model {source!r}: {_first_line(exc)}\n"
                            f"  hint: {_load_hint(source, config)}") from None


def _load_adapter_folder(auto_cls: Any, config: ModelConfig, source: str, adapter_file: Path,
                         **extra: Any) -> Any:
    from peft import PeftModel

    base = json.loads(adapter_file.read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not base:
        raise AlignlabError(f"{adapter_file} names no base model (base_model_name_or_path)\n"
                            "  hint: load the base model and the adapters with peft yourself")
    base_config = ModelConfig(name_or_path=base, dtype=config.dtype,
                              trust_remote_code=config.trust_remote_code)
    model = _load_pretrained(auto_cls, base_config, **extra)
    try:
        return PeftModel.from_pretrained(model, source).merge_and_unload()
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise AlignlabError(f"cannot apply the adapters in {source!r} to {base!r}: "
                            f"{_first_line(exc)}\n  hint: the adapters were trained on another "
                            "base model, or the folder is incomplete") from None


def _resolve_source(name_or_path: str | None) -> str:
    """An absolute path for a local folder, the id itself for a hub id; a missing path is an error."""
    if not name_or_path:
        raise AlignlabError("model.name_or_path is not set\n  hint: give a local model folder, "
                            "e.g. model.name_or_path=./tiny (`alignlab init-tiny-model ./tiny`)")
    path = Path(name_or_path).expanduser()
    if path.exists():
        return str(path.resolve())
    looks_local = (name_or_path.startswith(("/", "./", "../", "~", ".\\")) or name_or_path.endswith("/")
                   or name_or_path.count("/") > 1 or "\\" in name_or_path)
    if looks_local:
        raise AlignlabError(f"model folder {name_or_path!r} does not exist (looked at {path.resolve()})"
                            "\n  hint: check the path, or create a test model with "
                            "`alignlab init-tiny-model DIR`")
    return name_or_path


def _load_hint(source: str, config: ModelConfig) -> str:
    if not Path(source).exists():
        return (f"{source!r} is not a local folder (no {Path(source).resolve()}), and hub downloads "
                "need network access: download the model elsewhere and give its folder "
                "(HF_HUB_OFFLINE=1 makes hub lookups fail at once instead of retrying)")
    if config.gguf_file:
        return f"check that {config.gguf_file!r} is a GGUF file inside {source}"
    return ("the folder needs config.json and *.safetensors weights (alignlab does not unpickle "
            ".bin weights: re-save them with save_pretrained); a custom architecture needs "
            "model.trust_remote_code=true, only for code you trust")


def _dtype_keyword() -> str:
    """``dtype`` since transformers 4.56, where ``torch_dtype`` became deprecated."""
    import transformers
    from packaging.version import Version

    return "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"


def _no_such_layers(model: nn.Module, targets: list[str]) -> str:
    return (f"LoRA target_modules {targets} match no layer of {type(model).__name__}\n"
            f"  hint: its linear layers are named {linear_layer_names(model)} "
            "(or use [all-linear])")


def _save_lm(model: nn.Module, out: Path, merge_lora: bool) -> None:
    from peft import PeftModel

    if isinstance(model, PeftModel) and merge_lora:
        model = _merged_copy(model)
    if isinstance(model, PeftModel):
        model.save_pretrained(out, safe_serialization=True)
    else:
        model.save_pretrained(out)  # safetensors is the only format of transformers 5


def _merged_copy(model: Any) -> nn.Module:
    """A plain model with ``model``'s adapters merged, built on the CPU; ``model`` is unchanged."""
    device = model_device(model)
    model.to("cpu")
    try:
        return copy.deepcopy(model).merge_and_unload()
    finally:
        model.to(device)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
