"""`train.distributed=deepspeed`: which ZeRO setup a run asks for, and the DeepSpeed config of it.

Example: ``plan = deepspeed_plan(config, world, device)``; ``plan.config`` goes to
``deepspeed.initialize`` (:mod:`alignlab.train.zero` drives the engine).

Three places may say something about DeepSpeed: alignlab's own train settings, the launcher
(`accelerate launch` with a DeepSpeed config exports ``ACCELERATE_DEEPSPEED_*``), and a DeepSpeed
JSON (train.deepspeed, or the file the accelerate config names). alignlab builds the DeepSpeed
config from its own settings; the JSON tunes what alignlab does not own (bucket sizes, overlap,
stage-3 thresholds). Wherever two of them give a value for the same setting they must agree: a
contradiction is an error naming the setting and both values, never resolved silently either
way. Every check here runs before any model loads.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from alignlab.config import RunConfig, TrainConfig
from alignlab.errors import ConfigError

INSTALL_HINT = "pip install 'alignlab[deepspeed]'"
LAUNCHER = "ACCELERATE_USE_DEEPSPEED"
"""Set to "true" by `accelerate launch` when its config file chooses DeepSpeed."""
STAGE, OFFLOAD_OPTIMIZER, OFFLOAD_PARAM = ("zero_optimization.stage", "zero_optimization.offload_optimizer.device",
                                           "zero_optimization.offload_param.device")

OWNED = {
    "train_micro_batch_size_per_gpu": "train.batch_size",
    "gradient_accumulation_steps": "train.grad_accum",
    "train_batch_size": "train.batch_size × train.grad_accum × processes",
    "gradient_clipping": "train.max_grad_norm (null is 0)",
    "bf16.enabled": "train.precision",
    "bf16.check_grad_overflow": "alignlab's non-finite guard (train.on_nonfinite)",
    "fp16.enabled": "train.precision (fp16 is refused with DeepSpeed)",
    "zero_optimization.compute_grad_norm": "alignlab's grad_norm log and non-finite guard",
    STAGE: "train.zero_stage",
    OFFLOAD_OPTIMIZER: "train.zero_offload",
    OFFLOAD_PARAM: "train.zero_offload",
}
"""DeepSpeed settings that follow from alignlab's own, and the alignlab setting each comes from."""
CHECKED_ONLY = frozenset({"bf16.check_grad_overflow", "zero_optimization.compute_grad_norm"})
"""Owned settings whose DeepSpeed default is alignlab's value: a JSON may not turn them off, and
alignlab does not write them (older DeepSpeed versions reject the keys)."""

LAUNCHER_KEYS = {
    STAGE: ("ACCELERATE_DEEPSPEED_ZERO_STAGE", int),
    OFFLOAD_OPTIMIZER: ("ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE", str),
    OFFLOAD_PARAM: ("ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE", str),
    "gradient_accumulation_steps": ("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", int),
    "gradient_clipping": ("ACCELERATE_GRADIENT_CLIPPING", float),
}
"""The environment variables `accelerate launch` exports for its DeepSpeed settings."""

REFUSED_SECTIONS = {
    "optimizer": "alignlab trains with its own AdamW (train.lr, train.weight_decay)",
    "scheduler": "alignlab runs its own schedule (train.schedule, train.warmup_ratio)",
}


@dataclass(frozen=True)
class DeepSpeedPlan:
    """A run's resolved ZeRO setup."""

    stage: int
    """2: optimizer state and gradients partitioned over the ranks; 3: the parameters too."""
    offload: str
    """none, optimizer (its state in CPU memory) or all (with ZeRO-3 the parameters too)."""
    config: dict[str, Any]
    """The DeepSpeed config handed to ``deepspeed.initialize``."""

    def describe(self) -> str:
        return f"ZeRO-{self.stage}" + ("" if self.offload == "none" else f", {self.offload} offloaded to CPU")


def launched_with_deepspeed(env: Mapping[str, str] | None = None) -> bool:
    """Whether `accelerate launch` started this process with a DeepSpeed config."""
    return (os.environ if env is None else env).get(LAUNCHER, "").lower() == "true"


def wants_deepspeed(train: TrainConfig, env: Mapping[str, str] | None = None) -> bool:
    """train.distributed=deepspeed, or a DeepSpeed launcher (the default ddp gives way to it)."""
    return train.distributed == "deepspeed" or launched_with_deepspeed(env)


def require_deepspeed() -> None:
    """DeepSpeed importable, or the error that says how to install it."""
    try:
        import deepspeed  # noqa: F401
    except ImportError as error:
        raise ConfigError(f"train.distributed=deepspeed needs DeepSpeed, which is not installed ({error})\n"
                          f"  hint: {INSTALL_HINT}") from None


def deepspeed_plan(config: RunConfig, world: int | None, device: torch.device | None = None, *,
                   online: bool = False, reward_model: bool = False, model_given: bool = False,
                   env: Mapping[str, str] | None = None) -> DeepSpeedPlan | None:
    """The ZeRO setup of this run, or None when it does not use DeepSpeed; a ConfigError for a
    combination that cannot work. ``world`` None (``alignlab doctor``, one process) skips what
    depends on the number of processes."""
    env = os.environ if env is None else env
    train = config.train
    if not wants_deepspeed(train, env):
        given = [k for k in ("deepspeed", "zero_stage", "zero_offload") if getattr(train, k) is not None]
        if given:
            raise ConfigError(f"train.{given[0]} configures DeepSpeed, but train.distributed={train.distributed}\n"
                              "  hint: set train.distributed=deepspeed, or remove it")
        return None
    if train.distributed == "fsdp":
        raise ConfigError("train.distributed=fsdp, but this process was started by `accelerate launch` with a "
                          f"DeepSpeed config ({LAUNCHER}=true)\n  hint: set train.distributed=deepspeed, or "
                          "launch with torchrun (or an accelerate config without DeepSpeed)")
    _refuse_unsupported(config, world, online=online, reward_model=reward_model, model_given=model_given)
    user, source = _user_config(train, env)
    claims = [(OWNED, _ours(train, world)), (LAUNCHER_KEYS, _launcher_claims(env)), (source, _owned_in(user))]
    merged = _agree(claims)
    stage, offload = _stage_and_offload(merged)
    if offload != "none" and device is not None and device.type == "cpu":
        raise ConfigError("ZeRO offload moves state between an accelerator and the CPU; on CPU it is in CPU "
                          "memory already\n  hint: remove train.zero_offload (or the launcher's offload devices)")
    require_deepspeed()  # last: every check above needs no DeepSpeed
    return DeepSpeedPlan(stage, offload, _build(user, merged, stage, offload))


def _refuse_unsupported(config: RunConfig, world: int | None, *, online: bool, reward_model: bool,
                        model_given: bool) -> None:
    train, model = config.train, config.model
    ddp = "\n  hint: train.distributed=ddp"
    if world is not None and world < 2:
        raise ConfigError("train.distributed=deepspeed partitions state over several processes, and this run "
                          "has one\n  hint: accelerate launch --config_file examples/accelerate/deepspeed_zero2.yaml "
                          "-m alignlab train CONFIG (or torchrun --nproc_per_node N ...); in one process leave "
                          "train.distributed unset")
    if online:
        raise ConfigError("online RL (and online pairs, OPA-DPO) samples from the policy, and sampling from "
                          f"ZeRO-partitioned weights is not supported yet{ddp}")
    if reward_model:
        raise ConfigError(f"reward-model training with train.distributed=deepspeed is not supported yet{ddp}")
    if train.precision == "fp16":
        raise ConfigError("train.precision=fp16 with DeepSpeed is not supported yet (DeepSpeed would scale the "
                          "loss itself)\n  hint: train.precision=bf16, or train.distributed=ddp")
    if model.quantization != "none":
        raise ConfigError("a quantised base (model.quantization) cannot be partitioned by DeepSpeed ZeRO\n"
                          "  hint: model.quantization=none, or train.distributed=ddp")
    if model.lora.enabled:
        raise ConfigError(f"LoRA with train.distributed=deepspeed is not supported yet{ddp} (LoRA's few "
                          "trainable weights need no partitioning)")
    if train.keep_best:
        raise ConfigError("train.keep_best with train.distributed=deepspeed is not supported yet (the best model "
                          f"would need its partitions gathered at every improvement){ddp}")
    if model_given:
        raise ConfigError("a model object cannot be trained with train.distributed=deepspeed (the final model "
                          f"is rebuilt from model.name_or_path){ddp}")


def _user_config(train: TrainConfig, env: Mapping[str, str]) -> tuple[dict[str, Any], str]:
    """The user's DeepSpeed JSON ({} without one) and its name for errors."""
    mine, launcher = train.deepspeed, env.get("ACCELERATE_DEEPSPEED_CONFIG_FILE")
    if mine and launcher and Path(mine).resolve() != Path(launcher).resolve():
        raise ConfigError(f"two DeepSpeed configs: train.deepspeed={mine} and the launcher's {launcher} "
                          "(ACCELERATE_DEEPSPEED_CONFIG_FILE)\n  hint: keep one of them")
    path = mine or launcher
    if not path:
        return {}, "the DeepSpeed config"
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(f"DeepSpeed config {path}: {error}\n  hint: give a readable JSON file") from None
    if not isinstance(data, dict):
        raise ConfigError(f"DeepSpeed config {path}: expected a JSON object, got {type(data).__name__}")
    for section, why in REFUSED_SECTIONS.items():
        if section in data:
            raise ConfigError(f"DeepSpeed config {path} sets {section!r}, but {why}\n  hint: remove "
                              f"{section!r} from it")
    auto = [key for key, value in _flat(data).items() if value == "auto" and key not in OWNED]
    if auto:
        raise ConfigError(f"DeepSpeed config {path}: {auto[0]!r} is \"auto\", and alignlab fills in only the "
                          f"settings it owns ({', '.join(sorted(OWNED))})\n  hint: give {auto[0]!r} a value, "
                          "or remove it for DeepSpeed's default")
    return data, str(path)


def _ours(train: TrainConfig, world: int | None) -> dict[str, Any]:
    values: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": train.batch_size,
        "gradient_accumulation_steps": train.grad_accum,
        "gradient_clipping": float(train.max_grad_norm or 0.0),
        "bf16.enabled": train.precision == "bf16",
        "bf16.check_grad_overflow": True,
        "fp16.enabled": False,
        "zero_optimization.compute_grad_norm": True,
    }
    if world is not None:
        values["train_batch_size"] = train.batch_size * train.grad_accum * world
    if train.zero_stage is not None:
        values[STAGE] = train.zero_stage
    if train.zero_offload is not None:
        values[OFFLOAD_OPTIMIZER] = "none" if train.zero_offload == "none" else "cpu"
        values[OFFLOAD_PARAM] = "cpu" if train.zero_offload == "all" else "none"
    return values


def _launcher_claims(env: Mapping[str, str]) -> dict[str, Any]:
    if not launched_with_deepspeed(env):
        return {}
    if env.get("ACCELERATE_DEEPSPEED_ZERO3_INIT", "").lower() == "true":
        raise ConfigError("the accelerate config sets zero3_init_flag: true, but alignlab loads the model whole "
                          "on every rank and ZeRO-3 partitions it then (no deepspeed.zero.Init)\n"
                          "  hint: set zero3_init_flag: false in the accelerate config")
    values: dict[str, Any] = {}
    for key, (name, kind) in LAUNCHER_KEYS.items():
        if env.get(name) not in (None, ""):
            try:
                values[key] = kind(env[name].lower() if kind is str else env[name])
            except ValueError:
                raise ConfigError(f"{name}={env[name]!r} is not a {kind.__name__}") from None
    precision = env.get("ACCELERATE_MIXED_PRECISION", "no").lower()
    # "no" is accelerate's default, indistinguishable from unset: only bf16 and fp16 say something.
    if precision in ("bf16", "fp16"):
        values["bf16.enabled"], values["fp16.enabled"] = precision == "bf16", precision == "fp16"
    elif precision not in ("no", ""):
        raise ConfigError(f"the launcher's mixed_precision={precision!r} is not supported with DeepSpeed here\n"
                          "  hint: leave mixed_precision unset (or 'no') and set train.precision")
    return values


def _owned_in(user: dict[str, Any]) -> dict[str, Any]:
    flat = _flat(user)
    return {key: flat[key] for key in OWNED if key in flat and flat[key] != "auto"}


def _agree(claims: list[tuple[Any, dict[str, Any]]]) -> dict[str, Any]:
    """One value per setting from every source that gives one, or the error naming both."""
    merged: dict[str, Any] = {}
    for key in OWNED:
        given = [(_who(names, key), values[key]) for names, values in claims if key in values]
        for (first, a), (second, b) in zip(given, given[1:], strict=False):
            if not (a == b and isinstance(a, bool) == isinstance(b, bool)):
                raise ConfigError(f"DeepSpeed setting {key!r}: {first} gives {a!r}, {second} gives {b!r}\n"
                                  f"  hint: make them agree, or leave {key!r} to one of them")
        if given:
            merged[key] = given[0][1]
    return merged


def _who(names: Any, key: str) -> str:
    if isinstance(names, str):
        return names
    if names is LAUNCHER_KEYS:
        return f"the launcher ({LAUNCHER_KEYS[key][0] if key in LAUNCHER_KEYS else 'ACCELERATE_MIXED_PRECISION'})"
    return names[key]


def _stage_and_offload(merged: dict[str, Any]) -> tuple[int, str]:
    stage = merged.get(STAGE, 2)
    if stage not in (2, 3):
        raise ConfigError(f"ZeRO stage {stage!r}: alignlab runs ZeRO-2 or ZeRO-3\n  hint: train.zero_stage=2 "
                          "(or 3), and the same in the launcher's and the DeepSpeed config")
    devices = merged.get(OFFLOAD_OPTIMIZER, "none"), merged.get(OFFLOAD_PARAM, "none")
    if "nvme" in devices or any(d not in ("none", "cpu") for d in devices):
        raise ConfigError(f"ZeRO offload devices {devices}: alignlab offloads to the CPU only\n"
                          "  hint: train.zero_offload=optimizer (or all, or none)")
    offload = {("none", "none"): "none", ("cpu", "none"): "optimizer", ("cpu", "cpu"): "all"}.get(devices)
    if offload is None:
        raise ConfigError("ZeRO offloads the parameters here but not the optimizer state\n"
                          "  hint: train.zero_offload=all (both) or optimizer")
    if offload == "all" and stage != 3:
        raise ConfigError("ZeRO-2 keeps every parameter on every rank: only ZeRO-3 offloads parameters\n"
                          "  hint: train.zero_stage=3, or train.zero_offload=optimizer")
    return stage, offload


def _build(user: dict[str, Any], merged: dict[str, Any], stage: int, offload: str) -> dict[str, Any]:
    """The user's JSON with every owned setting filled in."""
    config = copy.deepcopy(user)
    for key, value in merged.items():
        if key not in CHECKED_ONLY:
            _set(config, key, value)
    _set(config, STAGE, stage)
    if offload != "none":
        # The client AdamW steps on the CPU partitions (DeepSpeed's own CPU Adam would need its
        # compiled op, and would not be the optimizer of the other backends).
        config["zero_force_ds_cpu_optimizer"] = False
    config.setdefault("steps_per_print", 2 ** 31 - 1)  # alignlab logs the steps itself
    return config


def _flat(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _set(config: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for name in parents:
        config = config.setdefault(name, {})
    config[last] = value
