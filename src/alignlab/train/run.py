"""`alignlab train`: a config in, a run directory out (config, metrics, checkpoints, final model).

Example: ``run_training(load_config("examples/dpo.yaml"))``

This module wires the pieces: data → tokens → model and reference → step → loop → saved model.
"""

from __future__ import annotations

import copy
import functools
import gc
import json
import os
import random
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from alignlab.config import RunConfig, check_run_config, dump_yaml
from alignlab.data.load import load_records, with_options
from alignlab.data.readers import in_memory
from alignlab.data.records import RECORD_KINDS
from alignlab.data.tokenize import RecordTokenizer, pad_id_of
from alignlab.errors import ConfigError, DataError
from alignlab.forward import CompletionLogps, autocast_for, eval_mode, model_device, pick_device
from alignlab.forward.checkpointing import enable_gradient_checkpointing
from alignlab.forward.rows import best_fit_decreasing
from alignlab.kinds import DataKind, get_kind
from alignlab.losses.contract import get_loss
from alignlab.models import (
    RewardScores,
    TokenScores,
    add_lora,
    load_policy,
    load_reward_model,
    load_tokenizer,
    save_final,
)
from alignlab.models.quantization import check_quantization
from alignlab.models.ref_cache import (
    CachedReference,
    RefCache,
    fingerprint,
    get_or_build,
    weights_fingerprint,
)
from alignlab.models.reference import AdapterReference, CopyReference, Reference
from alignlab.models.value import PolicyAndValue, TokenValueModel
from alignlab.registry import Entry
from alignlab.train.card import DataSource, fingerprint_source, write_model_card
from alignlab.train.deepspeed import deepspeed_plan
from alignlab.train.fsdp import gathered_model, shard
from alignlab.train.loop import Trainer, adamw
from alignlab.train.online import RolloutPhase, advantage_estimator, build_rewards
from alignlab.train.online_pairs import (
    OnlinePairsPhase,
    online_pairs_reference_mode,
    run_opa_from_config,
)
from alignlab.train.order import ExampleOrder, PackedOrder
from alignlab.train.steps import make_step
from alignlab.train.tracking import Trackers, check_trackers
from alignlab.train.zero import ZeroEngine
from alignlab.typed_yaml import to_dict

EVAL_KEY = "eval/"
"""Prefix of the eval set's sequences in the reference cache (train and eval indices overlap)."""


RECORD_TYPES = frozenset(RECORD_KINDS.values())
"""Record classes: training data given as these is used as it is."""


def resolve_reference_mode(config: RunConfig) -> str:
    """The reference mode "auto" stands for, and a check that the choice can work."""
    entry = get_loss(config.train.loss)
    mode = config.train.reference
    if entry.contract.data == "prompt":
        if config.rl.pairs is not None or config.rl.opa.reviser is not None:
            raise ConfigError(f"rl.pairs and rl.opa train a loss on paired data, not {entry.name!r}\n"
                              "  hint: train.loss=dpo (or ipo, simpo, ...), or remove rl.pairs / rl.opa")
        return _online_reference_mode(config, entry)
    if config.rl.pairs is not None or config.rl.opa.reviser is not None:
        if entry.contract.data != "paired":
            raise ConfigError(f"rl.pairs and rl.opa train a loss on paired data, but {entry.name!r} trains on "
                              f"{entry.contract.data} data\n  hint: train.loss=dpo (or ipo, simpo, ...)")
        if config.rl.opa.reviser is not None:
            return "copy"  # OPA-DPO's reference: the policy after its SFT step (checked there)
        return online_pairs_reference_mode(mode, config.model.lora.enabled, entry)
    if not entry.contract.needs_ref:
        if mode not in ("auto", "none"):
            raise ConfigError(f"train.reference={mode!r} but loss {entry.name!r} uses no reference: "
                              "remove the option (it would be silently ignored)")
        return "none"
    mismatched = entry.contract.mismatched_pairs  # pairs that change with the batch
    if mode == "auto":
        if not mismatched and int(os.environ.get("WORLD_SIZE", "1")) == 1:
            return "cache"
        return "adapters" if config.model.lora.enabled else "copy"
    if mode == "none":
        raise ConfigError(f"loss {entry.name!r} needs a reference model; train.reference cannot be none")
    if mode == "cache" and mismatched:
        raise ConfigError(f"train.reference=cache cannot serve loss {entry.name!r}: its KL estimate pairs "
                          "each prompt with another example's completion, a new pair every batch\n"
                          "  hint: use train.reference=copy (or adapters with LoRA)")
    if mode == "adapters" and not config.model.lora.enabled:
        raise ConfigError("train.reference=adapters needs model.lora.enabled=true (the reference is the "
                          "policy with its LoRA adapters switched off)")
    return mode


def _online_reference_mode(config: RunConfig, entry: Entry) -> str:
    """Online RL reads a reference only for a KL term (the loss's beta, or rl.kl_in_reward), and
    never from a cache: its completions are sampled anew at every step."""
    beta = config.train.loss_kwargs.get("beta", next((h.default for h in entry.contract.hyperparameters
                                                      if h.name == "beta"), 0.0))
    needed = float(beta) > 0 or config.rl.kl_in_reward > 0
    mode = config.train.reference
    if mode == "cache":
        raise ConfigError(f"train.reference=cache cannot serve loss {entry.name!r}: a cache holds the "
                          "reference log-probs of fixed data, and online RL samples new completions every step\n"
                          "  hint: use train.reference=copy (or adapters with LoRA)")
    if not needed:
        if mode not in ("auto", "none"):
            raise ConfigError(f"train.reference={mode!r} but loss {entry.name!r} has no KL term here "
                              "(beta=0 and rl.kl_in_reward=0), so no reference is read: remove the option")
        return "none"
    if mode == "none":
        raise ConfigError(f"loss {entry.name!r} with a KL term (beta={beta}, rl.kl_in_reward="
                          f"{config.rl.kl_in_reward}) needs a reference; train.reference cannot be none")
    if mode == "adapters" and not config.model.lora.enabled:
        raise ConfigError("train.reference=adapters needs model.lora.enabled=true")
    if mode == "auto":
        return "adapters" if config.model.lora.enabled else "copy"
    return mode


def packing_choice(config: RunConfig, online: bool = False) -> bool | None:
    """train.packing as CompletionLogps takes it: None packs where the model supports it.

    "auto" does not pack online RL's rollouts: a short prompt shared by G long completions saves
    few positions, and the packed attention then runs one small call per completion and layer;
    bench/bench_online.py measured the packed GRPO update 1.4–2× slower than the padded one."""
    if online and config.train.packing == "auto":
        return False
    return {"auto": None, "on": True, "off": False}[config.train.packing]


def reference_cache_dir(config: RunConfig) -> Path:
    """train.cache_dir, or the user's cache: $ALIGNLAB_CACHE_DIR, $XDG_CACHE_HOME/alignlab/reference."""
    if config.train.cache_dir is not None:
        return Path(config.train.cache_dir)
    if os.environ.get("ALIGNLAB_CACHE_DIR"):
        return Path(os.environ["ALIGNLAB_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "alignlab" / "reference"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def run_training(config: RunConfig, console: Console | None = None, *, train_data: Any = None,
                 eval_data: Any = None, model: Any = None, tokenizer: Any = None,
                 callbacks: Sequence[Any] = ()) -> Path:
    """Train as ``config`` says; resume from the run directory's last checkpoint if there is one.

    What is already in memory replaces what the config would load: ``train_data`` / ``eval_data``
    (a list of dicts in any supported format, a ``datasets.Dataset``, or records) for data.path /
    data.eval_path, ``model`` (a causal LM, or a reward model for reward-model losses) and
    ``tokenizer`` for model.name_or_path. ``callbacks``: objects with any of ``on_step(trainer,
    record)``, ``on_evaluate(trainer, record)``, ``on_save(trainer, checkpoint_path)``.
    """
    console = console or Console()
    given = Given(train_data, eval_data, model, tokenizer, tuple(callbacks))
    check_run_config(config, eval_given=eval_data is not None)
    report_to = check_trackers(config.train.report_to)  # a tracker not installed fails before any model loads
    mode = resolve_reference_mode(config)
    entry = get_loss(config.train.loss)
    if config.data.path is None and train_data is None:
        raise ConfigError("data.path is not set\n  hint: give a data file, e.g. data.path=pairs.jsonl "
                          "(or train_data=... in Python)")
    if config.model.name_or_path is None and model is None:
        raise ConfigError("model.name_or_path is not set\n  hint: e.g. model.name_or_path=./tiny "
                          "(make one with `alignlab init-tiny-model ./tiny`), or model=... in Python")
    if model is not None and tokenizer is None and not (config.model.tokenizer or config.model.name_or_path):
        raise ConfigError("a model object needs its tokenizer: pass tokenizer=..., or set model.tokenizer")
    owns_group = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized()
    rank, world = _distributed()
    try:
        run_dir = _train(config, console, mode, entry, rank, world, given, report_to)
        if owns_group:  # no rank leaves while another still saves: a gloo group torn down by
            torch.distributed.barrier()  # one exiting rank aborts its peers
        return run_dir
    except BaseException as error:
        if owns_group:  # the failed run's frames would keep its DDP model alive past the group
            traceback.clear_frames(error.__traceback__)
        raise
    finally:
        if owns_group and torch.distributed.is_initialized():
            # Free the run's DDP wrapper, and the collective work its reducer still holds, while the
            # interpreter is whole: left to teardown after the group is gone (a reference cycle keeps
            # it until then), gloo's threads may drop tensors needing a GIL being torn down and the
            # process aborts after a good run (exit -6, "terminate called without an active
            # exception"; the teardown pytorch PR #179291 describes).
            gc.collect()
            torch.distributed.destroy_process_group()


@dataclass(frozen=True)
class Given:
    """What the caller of :func:`run_training` brought in memory (None: load as the config says)."""

    train_data: Any = None
    eval_data: Any = None
    model: Any = None
    tokenizer: Any = None
    callbacks: tuple[Any, ...] = ()

    def source(self, data: Any, path: str | None, name: str) -> Any:
        """What to read: rows in memory (named for errors), else the config's path."""
        if data is None:
            return path
        if isinstance(data, Sequence) and data and all(type(r) in RECORD_TYPES for r in data):
            return list(data)  # already records
        return in_memory(data, name)


def _train(config: RunConfig, console: Console, mode: str, entry: Entry, rank: int, world: int,
           given: Given, report_to: tuple[str, ...] = ()) -> Path:
    run_dir = Path(config.train.output_dir)
    _write_config(run_dir, config, rank)
    seed_everything(config.train.seed)
    device = pick_device(config.train.device) if world == 1 else _rank_device(config.train.device, rank)

    check_quantization(config.model, device)  # bitsandbytes, LoRA, the device: before anything loads
    if config.train.fsdp_cpu_offload:
        if config.train.distributed != "fsdp":
            raise ConfigError("train.fsdp_cpu_offload offloads FSDP shards\n  hint: set train.distributed=fsdp")
        if device.type == "cpu":  # FSDP2's offload moves shards between an accelerator and the CPU
            raise ConfigError("train.fsdp_cpu_offload needs GPUs: on CPU the shards are in CPU memory already\n"
                              "  hint: remove train.fsdp_cpu_offload")
    zero_plan = deepspeed_plan(  # DeepSpeed ZeRO (train.distributed, or `accelerate launch`), or None
        config, world, device, reward_model=get_kind(entry.contract.data).reward_model,
        online=entry.contract.data == "prompt" or config.rl.pairs is not None or config.rl.opa.reviser is not None,
        model_given=given.model is not None)
    if config.model.quantization != "none" and mode == "copy":
        raise ConfigError("train.reference=copy would copy the quantised base\n  hint: train.reference=adapters "
                          "(the base with the adapters off is the reference) or auto")
    kind = get_kind(entry.contract.data)
    # Online pairs (and OPA-DPO) read prompts and train a paired loss on the policy's samples.
    sampled_pairs = config.rl.pairs is not None or config.rl.opa.reviser is not None
    data_kind = get_kind("prompt") if sampled_pairs else kind
    min_batch = kind.min_batch(entry.contract)
    if config.train.batch_size < min_batch:
        raise ConfigError(f"loss {entry.name!r} needs at least {min_batch} examples a batch (its KL "
                          f"estimate pairs each prompt with another example's completion): set "
                          f"train.batch_size >= {min_batch}")
    check_pack_length(config, entry)
    if given.model is None:
        check_reward_head(config, entry)
    train_source = given.source(given.train_data, config.data.path, "train_data")
    eval_source = given.source(given.eval_data, config.data.eval_path, "eval_data")
    if config.rl.opa.reviser is not None and eval_source:
        raise ConfigError("data.eval_path is not read by OPA-DPO yet\n  hint: remove data.eval_path; "
                          "`alignlab generate` scores a trained model on held-out prompts")
    rewards = None
    if data_kind.name == "prompt":  # a typo fails before the model loads
        if world > 1 and config.train.distributed == "fsdp":
            raise ConfigError("online RL samples from the policy, and sampling from FSDP-sharded weights is not "
                              "supported yet\n  hint: train.distributed=ddp")
        if world > 1 and config.rl.opa.reviser is not None:
            raise ConfigError("OPA-DPO runs in one process for now\n  hint: run it without torchrun")
        if kind.name == "prompt":
            advantage_estimator(config.rl, entry)
        if kind.name == "prompt" or config.rl.pairs is not None:
            rewards = build_rewards(config.rl)
    if given.model is not None and world > 1 and config.train.distributed == "fsdp":
        raise ConfigError("a model object cannot be trained with train.distributed=fsdp yet (the final "
                          "model is rebuilt from model.name_or_path)\n  hint: train.distributed=ddp")
    records = _records(config, train_source, entry, data_kind)  # data before any model: cheap checks first
    eval_records = _records(config, eval_source, entry, data_kind) if eval_source else []  # online: prompts
    tokenizer = given.tokenizer or load_tokenizer(config.model.tokenizer or config.model.name_or_path,
                                                  trust_remote_code=config.model.trust_remote_code)
    train_name = str(train_source) if given.train_data is None else "train_data (in memory)"
    eval_name = str(eval_source) if given.eval_data is None else "eval_data (in memory)"
    items = _tokenized(config, data_kind, train_name, records, tokenizer, console)
    eval_items = _tokenized(config, data_kind, eval_name, eval_records, tokenizer, console) if eval_records else []
    data_sources = [DataSource("train", train_name, fingerprint_source(train_source, records), len(records), len(items))]
    if eval_records:
        data_sources.append(DataSource("eval", eval_name, fingerprint_source(eval_source, eval_records),
                                       len(eval_records), len(eval_items)))
    pad_id = pad_id_of(tokenizer)
    order = _order(config, items, rank, world, min_batch)  # a too-long example fails before the model loads
    if mode == "cache" and any(not all(getattr(i, "supervised", None) or (True,)) for i in items):
        raise ConfigError("multi-turn SFT leaves user turns out of the loss, and the reference cache stores "
                          "whole completions\n  hint: train.reference=copy (or adapters with LoRA)")

    online = entry.contract.data == "prompt"
    if kind.reward_model:
        model = given.model.to(device) if given.model is not None else load_reward_model(config.model, device, tokenizer)
        policy: torch.nn.Module = TokenScores(model) if getattr(kind, "token_scores", False) else RewardScores(model)
    else:
        model = _policy(config, given.model, device)
        # Online RL: the objective's log-probs are those of the distribution the rollouts were drawn from.
        policy = CompletionLogps(model, config.train.chunk_size, packing_choice(config, online),
                                 temperature=config.rl.temperature if online else 1.0, entropy=online)
    model.train()
    if config.train.gradient_checkpointing:
        enable_gradient_checkpointing(getattr(model, "lm", model))  # a reward model's backbone is .lm
    if config.rl.opa.reviser is not None:
        return _opa(config, console, model, policy, tokenizer, items, pad_id)
    reference = _reference(mode, config, model, tokenizer, kind, items, eval_items, pad_id)
    forward = policy
    sharded = world > 1 and config.train.distributed == "fsdp"
    critic = None
    if online and "values" in entry.contract.inputs:  # PPO: a critic initialised from the policy, trained beside it
        critic = TokenValueModel(copy.deepcopy(model)).train()
        if config.train.gradient_checkpointing:
            enable_gradient_checkpointing(critic.lm)
        policy = forward = PolicyAndValue(policy, critic)
    if sharded:
        forward = shard(policy, model, cpu_offload=config.train.fsdp_cpu_offload)
    elif zero_plan is not None:
        forward = ZeroEngine(zero_plan, policy, model, adamw(config.train, [p for p in policy.parameters()
                                                                            if p.requires_grad]))
        if rank == 0:  # what DeepSpeed was given, for the record
            (run_dir / "deepspeed.json").write_text(json.dumps(zero_plan.config, indent=2) + "\n", encoding="utf-8")
    elif world > 1:
        forward = torch.nn.parallel.DistributedDataParallel(policy, device_ids=[device.index] if device.type == "cuda" else None)
    state = entry.contract.state() if entry.contract.state is not None else None
    kwargs = dict(config.train.loss_kwargs)
    rollout = None
    if config.rl.pairs is not None:
        step = rollout = OnlinePairsPhase(config.rl, entry, kwargs, items, model, forward, reference, tokenizer,
                                          pad_id, RecordTokenizer(tokenizer, config.tokenize).eos_id,
                                          seed=config.train.seed, rank=rank, world=world, rewards=rewards,
                                          state=state)
    elif online:
        step = rollout = RolloutPhase(config.rl, entry, kwargs, kind, items, model, forward, reference, tokenizer,
                                      pad_id, RecordTokenizer(tokenizer, config.tokenize).eos_id,
                                      seed=config.train.seed, rank=rank, world=world,
                                      precision=config.train.precision, rewards=rewards, critic=critic,
                                      completions_path=run_dir / "completions.jsonl")
    else:
        step = make_step(entry, kwargs, kind, items, forward, reference, pad_id, state,
                         row_of=getattr(order, "row_of", None))
    evaluate = None
    if eval_items and rollout is not None:  # online: held-out prompts sampled and scored like the rollouts
        evaluate = functools.partial(rollout.evaluate, eval_items)
    elif eval_items:
        eval_step = make_step(entry, kwargs, kind, eval_items, policy, reference, pad_id, state,
                              key_prefix=EVAL_KEY)
        evaluate = _evaluator(eval_step, len(eval_items), config.train.batch_size, policy, config.train.precision)
    if sharded and config.train.keep_best:
        raise ConfigError("train.keep_best with train.distributed=fsdp is not supported yet (the best model "
                          "would need its shards gathered at every improvement)\n  hint: train.distributed=ddp")

    def export(folder: Path) -> None:  # the best evaluation's model (train.keep_best), as the final one
        save_final(model, tokenizer, folder, merge_lora=config.model.lora.merge_on_save)

    trainer = Trainer(config.train, forward, step, order, run_dir, loss_state=state, rollout=rollout,
                      evaluate=evaluate, console=console, rank=rank, sharded=sharded, export=export,
                      callbacks=given.callbacks, trackers=Trackers(report_to, run_dir, to_dict(config)) if rank == 0 else None,
                      engine=forward if zero_plan is not None else None)
    last = trainer.fit()
    final = evaluate() if evaluate else {}
    if final and rank == 0:
        trainer.log({"split": "eval", "step": trainer.step, "final": True, **final})
    if trainer.trackers is not None:
        trainer.trackers.close()
    if sharded:  # gather the shards into a plain model on rank 0 (a collective: every rank calls)
        model = gathered_model(forward, lambda: load_policy(config.model, "cpu"), rank)
    elif zero_plan is not None:  # ZeRO's partitions consolidated likewise
        model = forward.consolidated(lambda: load_policy(config.model, "cpu"))
    if rank == 0:
        save_final(model, tokenizer, run_dir / "model", merge_lora=config.model.lora.merge_on_save)
        if critic is not None:
            critic.save_pretrained(run_dir / "value_model")
        summary = {"loss": config.train.loss, "reference": mode, "steps": trainer.step,
                   "examples": len(items), "last_train": last, "final_eval": final,
                   "skipped_nonfinite": trainer.counters["skipped_nonfinite"],
                   **({"skipped_overflow": trainer.counters["skipped_overflow"]} if trainer.scaler else {}),
                   "best": trainer.best.state_dict() if trainer.best.active else None}
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=float) + "\n", encoding="utf-8")
        write_model_card(run_dir / "model", config, summary, data_sources)
        console.print(f"done: {trainer.step} steps; model in {run_dir / 'model'}; metrics in {run_dir / 'metrics.jsonl'}")
    return run_dir


def check_reward_head(config: RunConfig, entry: Entry) -> None:
    """A process reward model (prm data) scores every step: only the scalar head gives a score
    per position."""
    if getattr(get_kind(entry.contract.data), "token_scores", False) and config.model.reward_head != "scalar_head":
        raise ConfigError(f"loss {entry.name!r} trains a process reward model, which scores every step: it needs "
                          "a scalar head\n  hint: model.reward_head=scalar_head")


def check_pack_length(config: RunConfig, entry: Entry) -> None:
    """train.pack_length packs SFT examples only: other kinds compare sequences within an example."""
    if config.train.pack_length is None:
        return
    sampled = config.rl.pairs is not None or config.rl.opa.reviser is not None
    data = "prompt" if sampled else entry.contract.data
    if data != "sft":
        raise ConfigError(f"train.pack_length packs SFT examples, but loss {entry.name!r} trains on {data} "
                          "data (its sequences are compared within an example, and train.packing already "
                          "runs each batch as one prefix-shared row)\n  hint: remove train.pack_length")


def _order(config: RunConfig, items: list[Any], rank: int, world: int, min_batch: int
           ) -> ExampleOrder | PackedOrder:
    """Which examples each step reads: single examples, or rows of them (train.pack_length)."""
    capacity = config.train.pack_length
    if capacity is None:
        return ExampleOrder(len(items), config.train.batch_size, config.train.seed, rank, world,
                            min_batch=min_batch)
    lengths = [len(i.prompt_ids) + len(i.completion_ids) for i in items]
    too_long = [k for k, n in enumerate(lengths) if n > capacity]
    if too_long:
        raise ConfigError(f"train.pack_length={capacity}: {len(too_long)} examples are longer (example "
                          f"{too_long[0]}: {lengths[too_long[0]]} tokens, the longest {max(lengths)})\n"
                          f"  hint: raise train.pack_length to at least {max(lengths)}, or set "
                          f"tokenize.max_length={capacity} to truncate them")
    return PackedOrder(best_fit_decreasing(lengths, capacity), config.train.batch_size, config.train.seed,
                       rank, world)


def _policy(config: RunConfig, given: Any, device: torch.device) -> Any:
    """The causal LM to train: loaded as model.* says, or the caller's own (LoRA added if asked)."""
    if given is None:
        return load_policy(config.model, device)
    model = given.to(device)
    if config.model.lora.enabled and not hasattr(model, "peft_config"):
        model = add_lora(model, config.model.lora, task_type="CAUSAL_LM")
    return model


def _opa(config: RunConfig, console: Console, model: Any, policy: torch.nn.Module, tokenizer: Any,
         items: list[Any], pad_id: int) -> Path:
    """OPA-DPO (alignlab.train.online_pairs.run_opa_dpo): one process, its two stages in
    train.output_dir/opa and /dpo, the final model where every run puts it."""
    run_dir = Path(config.train.output_dir)
    data, aligned, last, _ = run_opa_from_config(config, model, policy, tokenizer,
                                                 RecordTokenizer(tokenizer, config.tokenize), items, pad_id, console)
    save_final(model, tokenizer, run_dir / "model", merge_lora=config.model.lora.merge_on_save)
    summary = {"loss": config.train.loss, "reference": "opa", "examples": len(items), "opa": data.stats,
               "last_opa": aligned, "last_train": last}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=float) + "\n", encoding="utf-8")
    console.print(f"done: OPA-DPO; model in {run_dir / 'model'}")
    return run_dir


def _records(config: RunConfig, path: Any, entry: Entry, data_kind: DataKind) -> list[Any]:
    """Validated records of the kind the loss trains on (pairs split for KTO when asked); ``path``
    is a file, rows in memory, or records already."""
    if isinstance(path, list):
        return path
    if data_kind.name == "prompt":  # prompts of any prompt-bearing format, other fields as columns
        return data_kind.read(path)
    kind = data_kind.records
    try:
        result = load_records(path, with_options(config.data, kind=config.data.kind or kind))
    except DataError as error:
        if error.reason != "kind conversion":
            raise
        raise ConfigError(f"loss {entry.name!r} trains on {kind} data, but {path} cannot give it: "
                          f"{error.message}\n  hint: choose a loss for this data (`alignlab losses list`)"
                          ) from None
    wrong = {type(r).__name__ for r in result.records} - {RECORD_KINDS[kind].__name__}
    if wrong:
        raise ConfigError(f"loss {entry.name!r} needs {kind} records but {path} holds {sorted(wrong)}\n"
                          "  hint: set data.kind (paired→unpaired splits pairs into thumbs up/down)")
    return result.records


def _tokenized(config: RunConfig, kind: DataKind, path: str, records: list[Any], tokenizer: Any,
               console: Console) -> list[Any]:
    items, stats = kind.tokenize(records, RecordTokenizer(tokenizer, config.tokenize))
    dropped = {k: v for k, v in stats.items() if k.startswith("dropped") and v}
    console.print(f"{path}: {len(items)} examples tokenized" + (f"; dropped {dropped}" if dropped else ""))
    if not items:
        raise ConfigError(f"{path}: no examples left after tokenization\n  hint: raise tokenize.max_length")
    return items


def _reference(mode: str, config: RunConfig, model: Any, tokenizer: Any, kind: DataKind,
               items: list[Any], eval_items: list[Any], pad_id: int) -> Reference | None:
    """The reference of the train and the eval steps, or None. Built before any training step, so
    every mode (and the cache fingerprint) describes the untrained reference."""
    chunk, precision, packing = config.train.chunk_size, config.train.precision, packing_choice(config)
    # Online RL compares log-probs of the distribution it samples from: the reference's too.
    temperature = config.rl.temperature if kind.name == "prompt" else 1.0
    if mode == "none":
        return None
    if mode == "adapters":
        return AdapterReference(model, chunk, precision=precision, packing=packing, temperature=temperature)
    if mode == "copy":
        return CopyReference(model, chunk, precision=precision, packing=packing, temperature=temperature)

    def source() -> Any:
        # The policy before its first step is the reference: the cache is built from it (in eval
        # mode, no gradients) with no second copy in memory; with LoRA, its adapters off.
        if config.model.lora.enabled:
            return AdapterReference(model, chunk, precision=precision, packing=packing)
        return model

    # Eval rows are named "eval/3:chosen" (their steps use the same prefix): the indices overlap.
    sequences = [*kind.cache_sequences(items), *kind.cache_sequences(eval_items, EVAL_KEY)]
    return CachedReference(_cache(config, source, model, tokenizer, sequences, pad_id))


def _cache(config, source, model, tokenizer, sequences, pad_id):
    """Load or build the persistent reference cache; in DDP rank 0 builds, the others wait.

    The weights fingerprint is the untrained policy's (its adapters left out with LoRA): that is
    the reference. The reference model itself is only made on a miss."""
    weights = weights_fingerprint(model, without_adapters=config.model.lora.enabled)
    key = fingerprint(weights, tokenizer, sequences, {"precision": config.train.precision})
    distributed = torch.distributed.is_initialized()
    if distributed and torch.distributed.get_rank() != 0:
        torch.distributed.barrier()
    cache, hit = get_or_build(reference_cache_dir(config), key, lambda: RefCache.build(
        source(), sequences, pad_id, fingerprint=key, chunk_size=config.train.chunk_size,
        precision=config.train.precision, packing=packing_choice(config)))
    if distributed and torch.distributed.get_rank() == 0:
        torch.distributed.barrier()
    print(f"reference cache {'hit' if hit else 'built'}: {key[:12]} ({len(sequences)} sequences)")
    return cache


def _evaluator(step, size: int, batch_size: int, policy: torch.nn.Module, precision: str):
    """Mean loss and metrics over the eval set: no gradient, eval mode, the true reference, the
    training steps' autocast (a bf16 reference cache against a float32 policy would show a
    policy that has not moved as one that has)."""
    def evaluate() -> dict[str, float]:
        totals: dict[str, float] = {}
        with torch.no_grad(), eval_mode(policy), autocast_for(precision, model_device(policy)):
            for start in range(0, size, batch_size):
                result = step(list(range(start, min(size, start + batch_size))))
                totals["loss"] = totals.get("loss", 0.0) + float(result.loss_sum)
                for name, value in result.metrics.items():
                    totals[name] = totals.get(name, 0.0) + value
        return {name: value / size for name, value in totals.items()}
    return evaluate


def _distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    rank = torch.distributed.get_rank() if world > 1 else 0
    return rank, world


def _rank_device(name: str, rank: int) -> torch.device:
    if name in ("auto", "cuda") and torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", rank))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def _write_config(run_dir: Path, config: RunConfig, rank: int) -> None:
    """The resolved config; resuming with a different one would mix two runs, so it is refused."""
    if rank != 0:
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "config.yaml"
    text = dump_yaml(config)
    if path.exists() and (run_dir / "checkpoints" / "latest").exists() and path.read_text(encoding="utf-8") != text:
        raise ConfigError(f"{run_dir} holds a run with another config; resuming would mix the two\n"
                          "  hint: choose another train.output_dir, or delete the old run")
    path.write_text(text, encoding="utf-8")
