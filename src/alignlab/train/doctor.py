"""`alignlab doctor CONFIG`: every check a run makes before loading a model, without training.

Example: ``report = diagnose(load_config("examples/dpo.yaml")); report.ok``

Each check either passes with what it found (the reference mode auto picks, the records a data
file holds, the rewards an online run builds) or fails with the error the run would stop on,
named and with its hint. Nothing heavier than the model's config file is read: the model's
weights never load, so a wrong combination costs a second, not a model load.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from alignlab.config import RunConfig, check_run_config
from alignlab.errors import AlignlabError


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Diagnosis:
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def run(self, name: str, check: Callable[[], str]) -> bool:
        try:
            detail = check()
        except (AlignlabError, ValueError, OSError) as error:
            self.checks.append(Check(name, False, str(error)))
            return False
        self.checks.append(Check(name, True, detail))
        return True


def diagnose(config: RunConfig) -> Diagnosis:
    """Run the pre-load checks of ``alignlab train`` on ``config``; later checks that depend on
    a failed one are skipped."""
    from alignlab.losses.contract import get_loss
    from alignlab.train.run import resolve_reference_mode
    from alignlab.train.tracking import check_trackers

    report = Diagnosis()
    if not report.run("config", lambda: _config(config)):
        return report
    entry = get_loss(config.train.loss)
    report.run("reference", lambda: f"train.reference={config.train.reference} → {resolve_reference_mode(config)}")
    report.run("trackers", lambda: ", ".join(check_trackers(config.train.report_to)) or "metrics.jsonl only")
    report.run("batch", lambda: _batch(config, entry))
    report.run("data", lambda: _data(config, entry))
    if entry.contract.data == "prompt" or config.rl.pairs is not None:
        report.run("rewards", lambda: _rewards(config, entry))
    report.run("model", lambda: _model(config))
    from alignlab.train.deepspeed import wants_deepspeed

    if wants_deepspeed(config.train):
        report.run("deepspeed", lambda: _deepspeed(config, entry))
    return report


def _config(config: RunConfig) -> str:
    check_run_config(config)
    return f"loss {config.train.loss} with {dict(config.train.loss_kwargs) or 'its defaults'}"


def _batch(config: RunConfig, entry: Any) -> str:
    from alignlab.kinds import get_kind
    from alignlab.train.run import check_pack_length, check_reward_head

    check_pack_length(config, entry)
    check_reward_head(config, entry)
    needed = get_kind(entry.contract.data).min_batch(entry.contract)
    if config.train.batch_size < needed:
        raise AlignlabError(f"loss {entry.name!r} needs at least {needed} examples a batch: set "
                            f"train.batch_size >= {needed}")
    unit = "examples" if config.train.pack_length is None else f"rows of <= {config.train.pack_length} tokens"
    return (f"{config.train.batch_size} {unit} per process × {config.train.grad_accum} accumulation steps"
            + (f" (at least {needed})" if needed > 1 else ""))


def _data(config: RunConfig, entry: Any) -> str:
    from alignlab.kinds import get_kind
    from alignlab.train.run import _records

    if config.data.path is None:
        raise AlignlabError("data.path is not set\n  hint: give a data file, e.g. data.path=pairs.jsonl")
    kind = get_kind("prompt") if config.rl.pairs is not None or config.rl.opa.reviser else get_kind(entry.contract.data)
    counts = [f"{len(_records(config, config.data.path, entry, kind))} records in {config.data.path}"]
    if config.data.eval_path:
        counts.append(f"{len(_records(config, config.data.eval_path, entry, kind))} in {config.data.eval_path}")
    return "; ".join(counts) + f" ({kind.name} data)"


def _rewards(config: RunConfig, entry: Any) -> str:
    from alignlab.train.online import advantage_estimator, build_rewards

    built = build_rewards(config.rl)
    advantage = advantage_estimator(config.rl, entry).name if entry.contract.data == "prompt" else "pairs"
    return f"{', '.join(name for name, _ in built)}; advantage {advantage}"


def _model(config: RunConfig) -> str:
    """The model's config (not its weights): it exists, and supports what the run asks of it."""
    if config.model.name_or_path is None:
        raise AlignlabError("model.name_or_path is not set\n  hint: e.g. model.name_or_path=./tiny")
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    model_config = AutoConfig.from_pretrained(config.model.name_or_path,
                                              trust_remote_code=config.model.trust_remote_code)
    detail = f"{model_config.model_type}"
    if config.train.gradient_checkpointing:
        model_class = MODEL_FOR_CAUSAL_LM_MAPPING.get(type(model_config), None)
        if model_class is None or not getattr(model_class, "supports_gradient_checkpointing", False):
            raise AlignlabError(f"train.gradient_checkpointing: {model_config.model_type} models do not support it\n"
                                "  hint: set train.gradient_checkpointing=false")
        detail += ", gradient checkpointing supported"
    if config.model.quantization != "none":
        from alignlab.forward import pick_device
        from alignlab.models.quantization import check_quantization

        check_quantization(config.model, pick_device(config.train.device))
        detail += f", {config.model.quantization} base (bitsandbytes)"
    if config.model.lora.enabled:
        detail += f", LoRA r={config.model.lora.r} on {list(config.model.lora.target_modules)}"
    return detail


def _deepspeed(config: RunConfig, entry: Any) -> str:
    """DeepSpeed installed, the ZeRO setup consistent (its JSON, the launcher's settings, the
    train settings), nothing refused; the process count is the launcher's, unknown here."""
    from alignlab.kinds import get_kind
    from alignlab.train.deepspeed import deepspeed_plan

    online = entry.contract.data == "prompt" or config.rl.pairs is not None or config.rl.opa.reviser is not None
    plan = deepspeed_plan(config, None, online=online, reward_model=get_kind(entry.contract.data).reward_model)
    return plan.describe() if plan is not None else "not used"


def render(report: Diagnosis, console: Any) -> None:
    from rich.table import Table

    table = Table("check", "", "detail", title="alignlab doctor", title_justify="left")
    for check in report.checks:
        table.add_row(check.name, "[green]ok[/]" if check.ok else "[red]FAIL[/]", check.detail)
    console.print(table)
    console.print("[green]ready to train[/]" if report.ok else "[red]fix the failed checks before training[/]")
