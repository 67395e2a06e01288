"""DeepSpeed ZeRO (train.distributed=deepspeed): its settings and refusals, and 2-rank CPU runs.

Example: ``.venv/bin/pytest tests/train/test_deepspeed.py``

The settings tests need no DeepSpeed and always run. The runs (DeepSpeed's CPU accelerator,
gloo) need it and are skipped without it: they train the same DPO steps under DDP, ZeRO-2 and
ZeRO-3 (grad_accum 2, so accumulation and the loop's own loss normalisation are part of it)
and compare weights and logged losses, kill and resume a ZeRO-2 run, launch one through
`accelerate launch` with the example config file, and load a final model with from_pretrained.
One thread a process, as in test_resume_ddp.py, so every run does the same float operations.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file

from alignlab.config import load_config
from alignlab.errors import ConfigError
from alignlab.models.tiny import init_tiny_model
from alignlab.train import deepspeed as ds

ROOT = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).with_name("_runner.py")
PAIRS = ROOT / "examples" / "data" / "pairs.jsonl"
ACCELERATE = ROOT / "examples" / "accelerate"
TIMEOUT = 240

BASE_CONFIG = """\
data:
  path: pairs.jsonl
  eval_path: pairs.jsonl
tokenize:
  max_length: 256
model:
  name_or_path: tiny
train:
  loss: dpo
  loss_kwargs: {beta: 0.1}
  reference: copy
  lr: 5.0e-4
  batch_size: 2
  grad_accum: 2
  max_steps: 3
  schedule: constant
  precision: fp32
  seed: 0
  device: cpu
  output_dir: run
"""

DIRECT_HEAD = """\
import sys

import alignlab.logprobs as logprobs

logprobs.hooked = lambda module: False  # every head's weight read directly, as a plain Linear's is
from alignlab.cli import main

sys.exit(main(sys.argv[1:]))
"""
"""A launcher script: the output layer bypassed, its weight read outside its module's forward."""

NAN_ON_SECOND_MICRO_BATCH = """\
import sys

from alignlab.train import loop

original = loop.Trainer.__init__


def init(self, *args, **kwargs):
    original(self, *args, **kwargs)
    healthy, calls = self.step_fn, [0]

    def step_fn(indices):
        result = healthy(indices)
        calls[0] += 1
        if self.rank == 1 and self.step + 1 == 2 and calls[0] % 2 == 0:
            result.loss_sum = result.loss_sum * float("nan")
        return result

    self.step_fn = step_fn


loop.Trainer.__init__ = init
from alignlab.cli import main

sys.exit(main(sys.argv[1:]))
"""
"""A launcher script: rank 1's loss is NaN on the second micro-batch of step 2 only, after the
first micro-batch's gradients were accumulated."""


# ---- settings: no DeepSpeed needed ------------------------------------------------------------


def config_of(*overrides: str):
    return load_config(None, ["data.path=pairs.jsonl", "model.name_or_path=tiny", "train.batch_size=2",
                              "train.grad_accum=2", *overrides])


@pytest.fixture
def installed(monkeypatch):
    """DeepSpeed counted as installed, so that a plan is built without importing it."""
    monkeypatch.setattr(ds, "require_deepspeed", lambda: None)


def plan(*overrides: str, env: dict[str, str] | None = None, json_config: dict | None = None,
         tmp: Path | None = None, world: int = 2, **flags):
    if json_config is not None:
        path = tmp / "ds.json"
        path.write_text(json.dumps(json_config), encoding="utf-8")
        overrides = (*overrides, f"train.deepspeed={path}")
    return ds.deepspeed_plan(config_of(*overrides), world, torch.device("cpu"), env=env or {}, **flags)


def launcher(stage: int, **more: str) -> dict[str, str]:
    return {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": str(stage),
            "ACCELERATE_MIXED_PRECISION": "no", **more}


def test_the_built_config_carries_alignlabs_settings_and_the_json_tuning(installed, tmp_path):
    made = plan("train.distributed=deepspeed", "train.max_grad_norm=0.5", tmp=tmp_path, json_config={
        "zero_optimization": {"stage": 3, "reduce_bucket_size": 1000}, "gradient_clipping": "auto"})
    assert (made.stage, made.offload) == (3, "none")
    assert made.config["zero_optimization"] == {"stage": 3, "reduce_bucket_size": 1000}
    assert made.config["train_micro_batch_size_per_gpu"] == 2 and made.config["gradient_accumulation_steps"] == 2
    assert made.config["train_batch_size"] == 8 and made.config["gradient_clipping"] == 0.5
    assert made.config["bf16"] == {"enabled": False} and made.config["fp16"] == {"enabled": False}


def test_the_launcher_turns_the_default_ddp_into_deepspeed(installed):
    assert plan(env=launcher(3)).stage == 3
    assert plan() is None  # no launcher, no train.distributed=deepspeed: not DeepSpeed
    assert plan("train.distributed=deepspeed").stage == 2  # the default stage


@pytest.mark.parametrize(("overrides", "env", "json_config", "message"), [
    (["train.distributed=fsdp"], launcher(2), None, r"train.distributed=fsdp, but .*accelerate launch"),
    (["train.zero_stage=3"], launcher(2), None,
     r"'zero_optimization.stage': train.zero_stage gives 3, the launcher \(ACCELERATE_DEEPSPEED_ZERO_STAGE\) gives 2"),
    (["train.distributed=deepspeed"], None, {"gradient_accumulation_steps": 4},
     r"'gradient_accumulation_steps': train.grad_accum gives 2, .*ds.json gives 4"),
    (["train.distributed=deepspeed"], None, {"gradient_clipping": 0.5},
     r"'gradient_clipping': train.max_grad_norm \(null is 0\) gives 1.0, .*ds.json gives 0.5"),
    (["train.distributed=deepspeed"], None, {"bf16": {"enabled": True}},
     r"'bf16.enabled': train.precision gives False, .*ds.json gives True"),
    (["train.distributed=deepspeed"], None, {"train_micro_batch_size_per_gpu": 4},
     r"'train_micro_batch_size_per_gpu': train.batch_size gives 2"),
    (["train.distributed=deepspeed", "train.zero_stage=2"], None, {"zero_optimization": {"stage": 3}},
     r"'zero_optimization.stage': train.zero_stage gives 2, .*ds.json gives 3"),
    ([], launcher(2, ACCELERATE_GRADIENT_ACCUMULATION_STEPS="8"), None,
     r"'gradient_accumulation_steps': train.grad_accum gives 2, the launcher"),
    ([], launcher(2, ACCELERATE_MIXED_PRECISION="bf16"), None, r"'bf16.enabled': train.precision gives False"),
    (["train.distributed=deepspeed"], None, {"optimizer": {"type": "Adam"}}, r"'optimizer'.*its own AdamW"),
    (["train.distributed=deepspeed"], None, {"zero_optimization": {"reduce_bucket_size": "auto"}},
     r"'zero_optimization.reduce_bucket_size' is \"auto\""),
    (["train.distributed=deepspeed"], None, {"bf16": {"enabled": "auto", "check_grad_overflow": False}},
     r"'bf16.check_grad_overflow'"),
    ([], launcher(1), None, r"ZeRO stage 1: alignlab runs ZeRO-2 or ZeRO-3"),
    ([], launcher(3, ACCELERATE_DEEPSPEED_ZERO3_INIT="true"), None, r"zero3_init_flag: false"),
    (["train.zero_stage=2", "train.zero_offload=all"], launcher(2), None, r"only ZeRO-3 offloads parameters"),
    (["train.distributed=deepspeed", "train.zero_offload=optimizer"], None, None, r"on CPU it is in CPU memory"),
    (["train.zero_stage=3"], None, None, r"train.zero_stage configures DeepSpeed, but train.distributed=ddp"),
], ids=["fsdp-vs-launcher", "stage-vs-launcher", "accum-vs-json", "clip-vs-json", "bf16-vs-json", "micro-vs-json",
        "stage-vs-json", "accum-vs-launcher", "precision-vs-launcher", "json-optimizer", "json-auto", "json-overflow",
        "stage-1", "zero3-init", "param-offload-stage-2", "offload-on-cpu", "stage-without-deepspeed"])
def test_contradictions_name_the_setting_and_both_values(tmp_path, overrides, env, json_config, message):
    with pytest.raises(ConfigError, match=message) as error:
        plan(*overrides, env=env, json_config=json_config, tmp=tmp_path)
    assert "\n  hint: " in str(error.value)


@pytest.mark.parametrize(("overrides", "flags", "message"), [
    ([], {"world": 1}, "this run has one"),
    ([], {"online": True}, "sampling from ZeRO-partitioned weights"),
    ([], {"reward_model": True}, "reward-model training"),
    (["model.quantization=4bit", "model.lora.enabled=true"], {}, "quantised base"),
    (["model.lora.enabled=true"], {}, "LoRA"),
    (["train.keep_best=true"], {}, "keep_best"),
    ([], {"model_given": True}, "a model object"),
], ids=["one-process", "online", "reward-model", "quantization", "lora", "keep-best", "model-object"])
def test_unsupported_runs_are_refused(overrides, flags, message):
    with pytest.raises(ConfigError, match=message):
        plan("train.distributed=deepspeed", *overrides, **flags)


def test_without_deepspeed_installed_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "deepspeed", None)  # import deepspeed -> ImportError
    with pytest.raises(ConfigError, match=r"pip install 'alignlab\[deepspeed\]'"):
        plan("train.distributed=deepspeed")


def test_doctor_checks_deepspeed(monkeypatch):
    from alignlab.train.doctor import _deepspeed

    monkeypatch.setitem(sys.modules, "deepspeed", None)
    with pytest.raises(ConfigError, match=r"alignlab\[deepspeed\]"):
        _deepspeed(config_of("train.distributed=deepspeed"), _dpo())
    monkeypatch.setattr(ds, "require_deepspeed", lambda: None)
    assert _deepspeed(config_of("train.distributed=deepspeed", "train.zero_stage=3"), _dpo()) == "ZeRO-3"


def _dpo():
    from alignlab.losses.contract import get_loss

    return get_loss("dpo")


# ---- refused before any model loads -----------------------------------------------------------


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model (hidden 32), the example pairs, run.yaml and two launcher scripts."""
    root = tmp_path_factory.mktemp("deepspeed")
    init_tiny_model(root / "tiny", hidden_size=32, intermediate=64, heads=4)
    shutil.copy(PAIRS, root / "pairs.jsonl")
    (root / "run.yaml").write_text(BASE_CONFIG, encoding="utf-8")
    (root / "direct_head.py").write_text(DIRECT_HEAD, encoding="utf-8")
    (root / "nan_second_micro_batch.py").write_text(NAN_ON_SECOND_MICRO_BATCH, encoding="utf-8")
    return root


@pytest.mark.parametrize(("overrides", "message"), [
    ([], "this run has one"),
    (["train.keep_best=true", "train.eval_every=1"], "keep_best"),
    (["rl.pairs=best_worst", "data.eval_path=null", 'rl.rewards=["length_target"]'], "sampling from ZeRO"),
], ids=["one-process", "keep-best", "online-pairs"])
def test_refused_before_any_model_loads(workspace, monkeypatch, overrides, message):
    import alignlab.models as models
    import alignlab.train.run as run

    def refuse(*args, **kwargs):
        raise AssertionError("a model or tokenizer was loaded before the refusal")

    for name in ("load_policy", "load_reward_model", "load_tokenizer"):
        monkeypatch.setattr(models, name, refuse)
        monkeypatch.setattr(run, name, refuse, raising=False)
    if overrides:  # as if under a launcher with 2 ranks (no process group is made)
        monkeypatch.setattr(run, "_distributed", lambda: (0, 2))
    config = load_config(workspace / "run.yaml", [
        f"data.path={workspace / 'pairs.jsonl'}", f"data.eval_path={workspace / 'pairs.jsonl'}",
        f"model.name_or_path={workspace / 'tiny'}", f"train.output_dir={workspace / 'refused'}",
        "train.distributed=deepspeed", *overrides])
    with pytest.raises(ConfigError, match=message):
        run.run_training(config, Console(quiet=True))


# ---- 2 CPU ranks -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def deepspeed_installed():
    pytest.importorskip("deepspeed")


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCELERATE_")
           and k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", COLUMNS="250", PYTHONHASHSEED="0")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH")) if p)
    return env


def torchrun(cwd: Path, script: list[str], *overrides: str) -> subprocess.CompletedProcess:
    """``SCRIPT train run.yaml OVERRIDES`` on 2 CPU ranks under torchrun."""
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           *script, "train", "run.yaml", *overrides],
                          cwd=cwd, env=child_env(), capture_output=True, text=True, timeout=TIMEOUT)


def accelerate(cwd: Path, config_file: Path, *overrides: str) -> subprocess.CompletedProcess:
    """``accelerate launch --config_file CONFIG_FILE -m alignlab train run.yaml OVERRIDES``."""
    return subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file),
                           "--num_processes", "2", "--main_process_port", "0", "-m", "alignlab", "train", "run.yaml",
                           *overrides], cwd=cwd, env=child_env(), capture_output=True, text=True, timeout=TIMEOUT)


def runner(cwd: Path, *overrides: str, kill: tuple[str, int] | None = None) -> subprocess.CompletedProcess:
    """tests/train/_runner.py (kill points) on 2 ranks: each rank runs it, and both die."""
    flags = [f"--{kill[0]}", str(kill[1])] if kill else []
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(RUNNER), *flags, "--", "run.yaml", *overrides],
                          cwd=cwd, env=child_env(), capture_output=True, text=True, timeout=TIMEOUT)


def check_ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return result.stdout


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "model" / "model.safetensors")


def largest_difference(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> float:
    assert got.keys() == want.keys()
    return max(float((got[n] - want[n]).abs().max()) for n in want)


def records(run: Path, split: str) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == split]


ZERO = "train.distributed=deepspeed"


@pytest.fixture(scope="module")
def runs(workspace: Path, deepspeed_installed) -> dict[str, Path]:
    """The same 3 DPO steps (2 ranks × batch 2 × accumulation 2, final evaluation) under DDP,
    ZeRO-2 (torchrun), ZeRO-3 (accelerate launch with the example file; the config does not
    name DeepSpeed) and ZeRO-3 with the output layer's weight read directly."""
    check_ok(torchrun(workspace, ["-m", "alignlab"], "train.output_dir=ddp"))
    check_ok(torchrun(workspace, ["-m", "alignlab"], "train.output_dir=zero2", ZERO, "train.zero_stage=2"))
    check_ok(accelerate(workspace, ACCELERATE / "deepspeed_zero3.yaml", "train.output_dir=zero3"))
    check_ok(torchrun(workspace, ["direct_head.py"], "train.output_dir=zero3_direct", ZERO, "train.zero_stage=3"))
    return {name: workspace / name for name in ("ddp", "zero2", "zero3", "zero3_direct")}


@pytest.mark.parametrize("name", ["zero2", "zero3", "zero3_direct"])
def test_zero_matches_ddp(runs, name):
    """Weights to float rounding (measured: 3e-8 for ZeRO-2, 4e-7 for ZeRO-3), and every logged
    loss, grad norm and the final evaluation equal: the loop's normalisation holds under the
    engine's reduction, and ZeRO-3 gathers the head and embeddings the forward reads (with
    ``zero3_direct`` even when the head's weight is read outside its module)."""
    assert largest_difference(weights(runs[name]), weights(runs["ddp"])) < 1e-5
    got, want = records(runs[name], "train"), records(runs["ddp"], "train")
    assert [r["step"] for r in got] == [r["step"] for r in want] == [1, 2, 3]
    for g, w in zip(got, want, strict=True):
        assert g["tokens"] == w["tokens"]
        assert g["loss"] == pytest.approx(w["loss"], abs=1e-6)
        assert g["grad_norm"] == pytest.approx(w["grad_norm"], abs=1e-5)
    (final,), (final_ddp,) = records(runs[name], "eval"), records(runs["ddp"], "eval")
    assert final["loss"] == pytest.approx(final_ddp["loss"], abs=1e-6)


def test_the_launcher_chose_zero3(runs):
    used = json.loads((runs["zero3"] / "deepspeed.json").read_text(encoding="utf-8"))
    assert used["zero_optimization"]["stage"] == 3 and used["train_batch_size"] == 8
    assert json.loads((runs["zero2"] / "deepspeed.json").read_text(encoding="utf-8"))["zero_optimization"]["stage"] == 2


def test_the_final_model_is_a_plain_hugging_face_model(runs):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(runs["zero3"] / "model")
    saved = weights(runs["zero3"])
    state = model.state_dict()
    assert all(torch.equal(state[name], tensor) for name, tensor in saved.items())
    initial = load_file(runs["zero3"].parent / "tiny" / "model.safetensors")
    assert not torch.equal(saved["lm_head.weight"], initial["lm_head.weight"])


def test_zero2_sigkill_then_resume_is_bit_identical(workspace, runs):
    """Killed as step 3 starts, after the step-2 checkpoint (gathered full weights and AdamW
    state): the resume ends with exactly the weights of the uninterrupted ZeRO-2 run."""
    steps = ("train.output_dir=zero2_killed", ZERO, "train.zero_stage=2", "train.save_every=2")
    killed = runner(workspace, *steps, kill=("kill-before-step", 3))
    assert killed.returncode != 0
    assert (workspace / "zero2_killed" / "checkpoints" / "latest").read_text().strip() == "step-00000002"
    assert "resumed from step 2" in check_ok(runner(workspace, *steps))
    assert largest_difference(weights(workspace / "zero2_killed"), weights(runs["zero2"])) == 0.0


@pytest.mark.slow
def test_zero3_sigkill_then_resume_is_bit_identical(workspace, runs):
    steps = ("train.output_dir=zero3_killed", ZERO, "train.zero_stage=3", "train.save_every=2")
    assert runner(workspace, *steps, kill=("kill-before-step", 3)).returncode != 0
    assert "resumed from step 2" in check_ok(runner(workspace, *steps))
    assert largest_difference(weights(workspace / "zero3_killed"), weights(runs["zero3"])) == 0.0


@pytest.mark.slow
def test_a_nonfinite_loss_after_accumulated_gradients_is_skipped_like_ddp(workspace, deepspeed_installed):
    """Rank 1's second micro-batch of step 2 is NaN, after the first one's gradients were
    reduced into ZeRO's partitions: with train.on_nonfinite=skip the step is dropped on both
    ranks, and step 3 trains from the step-1 weights exactly as DDP does."""
    script = ["nan_second_micro_batch.py"]
    check_ok(torchrun(workspace, script, "train.output_dir=nan_ddp", "train.on_nonfinite=skip"))
    check_ok(torchrun(workspace, script, "train.output_dir=nan_zero2", "train.on_nonfinite=skip", ZERO))
    assert largest_difference(weights(workspace / "nan_zero2"), weights(workspace / "nan_ddp")) < 1e-5
    got, want = records(workspace / "nan_zero2", "train"), records(workspace / "nan_ddp", "train")
    assert got[1]["skipped_nonfinite"] == want[1]["skipped_nonfinite"] == 1
    assert got[2]["loss"] == pytest.approx(want[2]["loss"], abs=1e-6)
