"""`alignlab train` end to end on a tiny model: kill and resume, reference cache, DDP, conflicts.

Example: ``.venv/bin/pytest tests/train/test_resume_ddp.py -m "not slow"``

Runs that must survive SIGKILL, or use several processes, run as subprocesses
(``tests/train/_runner.py``, one thread each, so that every run does the same float operations
in the same order and bit-identity is a fair demand). The rest call ``run_training`` directly.
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

ROOT = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).with_name("_runner.py")
PAIRS = ROOT / "examples" / "data" / "pairs.jsonl"
TIMEOUT = 180

BASE_CONFIG = """\
data:
  path: pairs.jsonl
tokenize:
  max_length: 256
model:
  name_or_path: tiny
train:
  loss: dpo
  loss_kwargs: {beta: 0.1}
  reference: copy
  lr: 5.0e-4
  batch_size: 4
  max_steps: 6
  save_every: 2
  precision: fp32
  seed: 0
  device: cpu
  output_dir: run
"""


# ---- shared material --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a tiny model (hidden 32), the example pairs and ``run.yaml`` (DPO, 6 steps,
    a checkpoint every 2); runs write under it, so relative paths in the config resolve."""
    root = tmp_path_factory.mktemp("train_e2e")
    init_tiny_model(root / "tiny", hidden_size=32, intermediate=64, heads=4)
    shutil.copy(PAIRS, root / "pairs.jsonl")
    (root / "run.yaml").write_text(BASE_CONFIG, encoding="utf-8")
    return root


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", COLUMNS="250", PYTHONHASHSEED="0")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH")) if p)
    return env


def train(cwd: Path, *overrides: str, kill: tuple[str, int] | None = None) -> subprocess.CompletedProcess:
    """``alignlab train run.yaml OVERRIDES`` in a subprocess, optionally killed at ``kill``."""
    flags = [f"--{kill[0]}", str(kill[1])] if kill else []
    return subprocess.run([sys.executable, str(RUNNER), *flags, "--", "run.yaml", *overrides],
                          cwd=cwd, env=child_env(), capture_output=True, text=True, timeout=TIMEOUT)


def check_ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "model" / "model.safetensors")


def assert_identical(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert got.keys() == want.keys()
    different = [name for name in want if not torch.equal(got[name], want[name])]
    assert not different, f"not bit-identical: {different}"


def assert_close(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], atol: float) -> None:
    assert got.keys() == want.keys()
    worst = max(float((got[n] - want[n]).abs().max()) for n in want)
    assert worst <= atol, f"largest difference {worst:.3g} > {atol}"


def pointer(run_dir: Path) -> str:
    return (run_dir / "checkpoints" / "latest").read_text(encoding="utf-8").strip()


@pytest.fixture(scope="module")
def uninterrupted(workspace: Path) -> dict[str, torch.Tensor]:
    """Final weights of the 6-step run, never interrupted."""
    check_ok(train(workspace, "train.output_dir=uninterrupted"))
    weights = final_weights(workspace / "uninterrupted")
    assert not torch.equal(weights["lm_head.weight"],
                           load_file(workspace / "tiny" / "model.safetensors")["lm_head.weight"])
    return weights


# ---- 1. kill and resume -----------------------------------------------------------------------


def resume(workspace: Path, name: str) -> str:
    out = check_ok(train(workspace, f"train.output_dir={name}"))
    assert "resumed from step" in out
    return out


def test_sigkill_mid_run_then_resume_is_bit_identical(workspace, uninterrupted):
    """Killed as step 4 starts (step 3 done, not saved): the resume restarts at the step-2
    checkpoint, redoes step 3, and ends with exactly the weights of the uninterrupted run."""
    killed = train(workspace, "train.output_dir=kill_step", kill=("kill-before-step", 4))
    assert killed.returncode == -9, killed.stderr
    run = workspace / "kill_step"
    assert pointer(run) == "step-00000002"
    assert not (run / "model").exists()
    assert "resumed from step 2" in resume(workspace, "kill_step")
    assert_identical(final_weights(run), uninterrupted)


def test_sigkill_during_checkpoint_write_then_resume_is_bit_identical(workspace, uninterrupted):
    """Killed inside the step-4 checkpoint write, its temporary folder complete but not renamed:
    ``latest`` still names step 2, the half-done write is discarded on resume, and the result is
    bit-identical."""
    killed = train(workspace, "train.output_dir=kill_write", kill=("kill-in-rename", 4))
    assert killed.returncode == -9, killed.stderr
    checkpoints = workspace / "kill_write" / "checkpoints"
    stale = list(checkpoints.glob(".tmp-step-00000004-*"))
    assert len(stale) == 1 and (stale[0] / "weights.safetensors").is_file()
    assert (stale[0] / "manifest.json").is_file()
    assert not (checkpoints / "step-00000004").exists()
    assert pointer(checkpoints.parent) == "step-00000002"

    assert "resumed from step 2" in resume(workspace, "kill_write")
    assert not list(checkpoints.glob(".tmp-*")), "the interrupted write was left behind"
    assert pointer(checkpoints.parent) == "step-00000006"
    assert_identical(final_weights(checkpoints.parent), uninterrupted)


def test_sigkill_between_rename_and_pointer_then_resume_is_bit_identical(workspace, uninterrupted):
    """Killed after ``step-4`` is renamed into place but before ``latest`` names it: the resume
    starts from step 2 (what ``latest`` says), rewrites step 4 over the orphan, and matches."""
    killed = train(workspace, "train.output_dir=kill_pointer", kill=("kill-before-pointer", 4))
    assert killed.returncode == -9, killed.stderr
    run = workspace / "kill_pointer"
    assert (run / "checkpoints" / "step-00000004" / "manifest.json").is_file()
    assert pointer(run) == "step-00000002"

    assert "resumed from step 2" in resume(workspace, "kill_pointer")
    assert pointer(run) == "step-00000006"
    assert_identical(final_weights(run), uninterrupted)


# ---- 2. the persistent reference cache --------------------------------------------------------


class Calls:
    """Counts calls of RefCache.build and of each reference mode's ``logps``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from alignlab.models.ref_cache import CachedReference, RefCache
        from alignlab.models.reference import CopyReference

        self.counts = {"build": 0, "cached": 0, "copy": 0}
        build = RefCache.build

        def counted_build(*args, **kwargs):
            self.counts["build"] += 1
            return build(*args, **kwargs)

        monkeypatch.setattr(RefCache, "build", staticmethod(counted_build))
        for name, cls in (("cached", CachedReference), ("copy", CopyReference)):
            monkeypatch.setattr(cls, "logps", self._counted(name, cls.logps))

    def _counted(self, name, method):
        def logps(instance, batch):
            self.counts[name] += 1
            return method(instance, batch)
        return logps

    def take(self) -> dict[str, int]:
        counts, self.counts = self.counts, dict.fromkeys(self.counts, 0)
        return counts


def run_in_process(workspace: Path, *overrides: str) -> Path:
    config = load_config(workspace / "run.yaml", [
        f"data.path={workspace / 'pairs.jsonl'}", f"model.name_or_path={workspace / 'tiny'}",
        "train.max_steps=2", "train.save_every=null", f"train.cache_dir={workspace / 'cache'}",
        *overrides])
    from alignlab.train.run import run_training

    return run_training(config, Console(quiet=True))


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_reference_cache_hit_miss_and_faithfulness(workspace, monkeypatch, capsys, one_thread):
    """Build once; a second run with the same model, tokenizer and data reads the cache and runs no
    reference forward; one changed row or an extra tokenizer token is a miss. Training against
    the cache gives the weights of training against a frozen copy."""
    calls = Calls(monkeypatch)
    out = workspace / "cache_runs"

    built = run_in_process(workspace, "train.reference=cache", f"train.output_dir={out / 'a'}")
    counts = calls.take()
    assert counts["build"] == 1 and counts["cached"] > 0
    assert "reference cache built" in capsys.readouterr().out
    assert len(list((workspace / "cache").glob("*.safetensors"))) == 1

    hit = run_in_process(workspace, "train.reference=cache", f"train.output_dir={out / 'b'}")
    counts = calls.take()
    assert counts == {"build": 0, "cached": counts["cached"], "copy": 0} and counts["cached"] > 0
    assert "reference cache hit" in capsys.readouterr().out
    assert_identical(final_weights(hit), final_weights(built))

    # Faithful: the same run with a frozen copy as the reference.
    copy = run_in_process(workspace, "train.reference=copy", f"train.output_dir={out / 'copy'}")
    assert calls.take()["copy"] > 0
    assert_close(final_weights(built), final_weights(copy), atol=1e-6)

    # One changed data row: a miss.
    rows = (workspace / "pairs.jsonl").read_text(encoding="utf-8").splitlines()
    first = json.loads(rows[0])
    first["rejected"] = first["rejected"].replace("I think", "I guess")
    (workspace / "pairs_changed.jsonl").write_text(
        "\n".join([json.dumps(first), *rows[1:]]) + "\n", encoding="utf-8")
    run_in_process(workspace, "train.reference=cache", f"train.output_dir={out / 'data'}",
                   f"data.path={workspace / 'pairs_changed.jsonl'}")
    assert calls.take()["build"] == 1
    assert "reference cache built" in capsys.readouterr().out

    # Another tokenizer (one extra special token, same weights): a miss.
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(workspace / "tiny")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|extra|>"]})
    tokenizer.save_pretrained(workspace / "tokenizer_extra")
    run_in_process(workspace, "train.reference=cache", f"train.output_dir={out / 'tok'}",
                   f"model.tokenizer={workspace / 'tokenizer_extra'}")
    assert calls.take()["build"] == 1
    assert "reference cache built" in capsys.readouterr().out
    assert len(list((workspace / "cache").glob("*.safetensors"))) == 3


# ---- 3. DDP (gloo, CPU) -----------------------------------------------------------------------


def torchrun(cwd: Path, *overrides: str) -> subprocess.CompletedProcess:
    """``alignlab train run.yaml OVERRIDES`` on 2 CPU ranks (gloo) under torchrun."""
    env = child_env()
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "alignlab.cli", "train", "run.yaml", *overrides],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def ddp_and_single(workspace: Path) -> tuple[Path, Path]:
    """3 steps (constant lr, so each moves the weights) on 2 ranks × batch 2 and on 1 process ×
    batch 4: the same global batches."""
    steps = ("train.max_steps=3", "train.save_every=null", "train.schedule=constant")
    check_ok(train(workspace, "train.output_dir=single", "train.batch_size=4", *steps))
    check_ok(torchrun(workspace, "train.output_dir=ddp", "train.batch_size=2", *steps))
    return workspace / "ddp", workspace / "single"


def test_ddp_two_ranks_match_one_process(ddp_and_single):
    """Each rank reads half of every global batch, DDP averages gradients and the loop's
    world-size scaling turns that into the global mean, so the weights agree to float rounding
    (the summation order differs; measured 5e-7 here)."""
    ddp, single = ddp_and_single
    summary = json.loads((ddp / "summary.json").read_text(encoding="utf-8"))
    assert summary["steps"] == 3
    assert_close(final_weights(ddp), final_weights(single), atol=1e-6)


def test_ddp_logs_the_global_batch_metrics(ddp_and_single):
    ddp, single = ddp_and_single

    def train_records(run: Path) -> list[dict]:
        lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
        return [r for r in map(json.loads, lines) if r["split"] == "train"]

    got, want = train_records(ddp), train_records(single)
    assert [r["step"] for r in got] == [r["step"] for r in want] == [1, 2, 3]
    for g, w in zip(got, want, strict=True):
        assert g["tokens"] == w["tokens"]
        assert g["loss"] == pytest.approx(w["loss"], abs=1e-6)
        assert g["rewards/margins"] == pytest.approx(w["rewards/margins"], abs=1e-6)


@pytest.mark.slow
def test_ddp_last_global_batch_smaller_than_world(workspace):
    """33 pairs, 2 ranks × batch 2: the last global batch holds 1 example."""
    rows = (workspace / "pairs.jsonl").read_text(encoding="utf-8").splitlines()
    (workspace / "pairs33.jsonl").write_text("\n".join([*rows, rows[0]]) + "\n", encoding="utf-8")
    result = torchrun(workspace, "data.path=pairs33.jsonl", "train.output_dir=ddp33",
                      "train.batch_size=2", "train.max_steps=null", "train.epochs=1",
                      "train.save_every=null")
    check_ok(result)
    # 8 global batches of 4, and the lone 33rd example merged into the 8th (no rank left empty)
    assert json.loads((workspace / "ddp33" / "summary.json").read_text())["steps"] == 8


# ---- 4. conflicts rejected before anything is loaded ------------------------------------------


@pytest.fixture
def nothing_loads(monkeypatch):
    """Loading a model (or a tokenizer) fails the test: a conflict must be caught first."""
    import alignlab.models as models
    import alignlab.train.run as run  # imported before the patch, so that its own names stay real

    def refuse(*args, **kwargs):
        raise AssertionError("a model or tokenizer was loaded before the conflict was reported")

    for name in ("load_policy", "load_reward_model"):
        monkeypatch.setattr(models, name, refuse)
        if hasattr(run, name):  # run.py imported the names: patch them where they are called
            monkeypatch.setattr(run, name, refuse)
    return lambda: (monkeypatch.setattr(models, "load_tokenizer", refuse), monkeypatch.setattr(run, "load_tokenizer", refuse))


def start(workspace: Path, *overrides: str) -> None:
    config = load_config(workspace / "run.yaml", [
        f"data.path={workspace / 'pairs.jsonl'}", f"model.name_or_path={workspace / 'tiny'}",
        f"train.output_dir={workspace / 'conflict'}", *overrides])
    from alignlab.train.run import run_training

    run_training(config, Console(quiet=True))


@pytest.mark.parametrize(("overrides", "message"), [
    (["train.reference=adapters"], r"adapters.*lora\.enabled"),
    (["train.loss=simpo", "train.loss_kwargs={}", "train.reference=copy"], r"simpo.*no reference"),
    (["train.reference=none"], r"dpo.*needs a reference"),
], ids=["adapters-without-lora", "copy-with-reference-free-loss", "none-with-dpo"])
def test_reference_conflicts_rejected_before_loading(workspace, nothing_loads, overrides, message):
    nothing_loads()  # not even the tokenizer
    with pytest.raises(ConfigError, match=message):
        start(workspace, *overrides)


def test_kto_with_batch_size_one_rejected_before_loading(workspace, nothing_loads):
    with pytest.raises(ConfigError, match="batch_size"):
        start(workspace, "train.loss=kto", "train.loss_kwargs={}", "train.batch_size=1")


def test_ranked_loss_on_pair_data_rejected_before_loading(workspace, nothing_loads):
    with pytest.raises(ConfigError, match="aft"):
        start(workspace, "train.loss=aft", "train.loss_kwargs={}", "train.reference=auto")


def test_kto_epoch_whose_last_batch_has_one_example(workspace, one_thread):
    config = load_config(workspace / "run.yaml", [
        f"data.path={workspace / 'pairs.jsonl'}", f"model.name_or_path={workspace / 'tiny'}",
        f"train.output_dir={workspace / 'kto3'}", "train.loss=kto", "train.loss_kwargs={}",
        "train.batch_size=3", "train.max_steps=null", "train.epochs=1", "train.save_every=null"])
    from alignlab.train.run import run_training

    run_training(config, Console(quiet=True))
    # 64 examples in batches of 3 leave a last batch of 1, too few for KTO's mismatched pair:
    # it is merged into the batch before (21 steps, the last of 4 examples), nothing dropped.
    assert json.loads((workspace / "kto3" / "summary.json").read_text())["steps"] == 21


# ---- 5. FSDP2 (train.distributed=fsdp) on 2 CPU ranks ----------------------------------------


def torchrun_runner(cwd: Path, *overrides: str, kill: tuple[str, int] | None = None) -> subprocess.CompletedProcess:
    """The kill-capable runner under torchrun: each rank runs it (rank 0 and 1 both die)."""
    env = child_env()
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    flags = [f"--{kill[0]}", str(kill[1])] if kill else []
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(RUNNER), *flags, "--", "run.yaml", *overrides],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT)


FSDP = ("train.distributed=fsdp", "train.batch_size=2", "train.schedule=constant")


def test_fsdp_two_ranks_match_one_process_and_resume_exactly(workspace, ddp_and_single):
    """Sharded parameters, gradients and optimizer state give the single-process weights up to
    float rounding (Adam divides near-zero gradient noise by its own size: 1e-5 here); a run
    killed before step 3 and resumed from the gathered step-2 checkpoint ends bit-identical to
    an uninterrupted sharded run."""
    _, single = ddp_and_single
    steps = ("train.max_steps=3", "train.save_every=2")
    check_ok(torchrun_runner(workspace, "train.output_dir=fsdp", *FSDP, *steps))
    assert_close(final_weights(workspace / "fsdp"), final_weights(single), atol=1e-5)

    killed = torchrun_runner(workspace, "train.output_dir=fsdp_killed", *FSDP, *steps,
                             kill=("kill-before-step", 3))
    assert killed.returncode != 0
    resumed = check_ok(torchrun_runner(workspace, "train.output_dir=fsdp_killed", *FSDP, *steps))
    assert "resumed from step 2" in resumed
    assert_identical(final_weights(workspace / "fsdp_killed"), final_weights(workspace / "fsdp"))
