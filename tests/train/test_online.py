"""Online RL on the loop, end to end on a tiny model: metrics, learning, accumulation and DDP
invariance, exact resume (μ = 1 and μ = 2), unscorable completions, errors before any model loads.

Example: ``.venv/bin/pytest tests/train/test_online.py``
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file

from alignlab.config import load_config
from alignlab.errors import AlignlabError, ConfigError
from alignlab.models.tiny import init_tiny_model
from alignlab.train.run import run_training

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ROOT / "examples" / "data" / "prompts.jsonl"
sys.path.insert(0, str(Path(__file__).parent))
from test_resume_ddp import RUNNER, TIMEOUT, assert_identical, check_ok, child_env  # noqa: E402

RUN_YAML = """\
data:
  path: prompts.jsonl
model:
  name_or_path: tiny
rl:
  num_generations: 4
  max_new_tokens: 8
  rewards: ["length_target(target=3, scale=0.5)"]
train:
  loss: grpo
  lr: 1.0e-3
  batch_size: 4
  max_steps: 6
  save_every: 3
  schedule: constant
  max_grad_norm: null
  precision: fp32
  seed: 0
  device: cpu
  output_dir: run
"""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("online")
    init_tiny_model(root / "tiny", hidden_size=32, layers=2, heads=4, intermediate=64)
    shutil.copy(PROMPTS, root / "prompts.jsonl")
    (root / "run.yaml").write_text(RUN_YAML, encoding="utf-8")
    (root / "online_rewards_fixture.py").write_text(REWARD_MODULE, encoding="utf-8")
    return root


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def in_process(workspace: Path, name: str, *overrides: str) -> Path:
    config = load_config(workspace / "run.yaml", [
        f"data.path={workspace / 'prompts.jsonl'}", f"model.name_or_path={workspace / 'tiny'}",
        f"train.output_dir={workspace / name}", "train.save_every=null", *overrides])
    return run_training(config, Console(quiet=True))


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "model" / "model.safetensors")


# ---- metrics and learning ---------------------------------------------------------------------


def test_grpo_logs_trl_metrics_and_raises_the_reward(workspace, monkeypatch, one_thread):
    """TRL's GRPO metric names in every train record; 40 steps on a reward that counts the
    letter e raise the mean reward of the last five steps well above the first five's (about 1:
    the tiny model's tokens are nearly uniform). A seeded run: deterministic."""
    monkeypatch.syspath_prepend(str(workspace))
    run = in_process(workspace, "learn", "train.max_steps=40", "train.log_every=1", "train.lr=1e-2",
                     'rl.rewards=["online_rewards_fixture:e_count"]')
    lines = [r for r in records(run) if r["split"] == "train"]
    assert len(lines) == 40
    names = {"reward", "reward_std", "frac_reward_zero_std", "rewards/e_count/mean",
             "rewards/e_count/std", "completions/mean_length", "completions/min_length",
             "completions/max_length", "completions/clipped_ratio", "completions/mean_terminated_length",
             "clip_ratio/low", "clip_ratio/high", "clip_ratio/region", "entropy", "rewards/unscorable"}
    assert names <= set(lines[0])
    assert "kl" not in lines[0]  # β = 0: no reference, so no KL is measured (not a fake 0)
    assert all(r["ratio"] == pytest.approx(1.0) for r in lines)  # μ = 1: the sampling policy is the policy
    first = sum(r["reward"] for r in lines[:5]) / 5
    last = sum(r["reward"] for r in lines[-5:]) / 5
    assert first < 2 and last > first + 3, (first, last)


def test_ppo_trains_its_critic_and_raises_the_reward(workspace, monkeypatch, one_thread):
    """PPO on the same reward: the critic's value loss falls as it learns the returns, the
    reward rises, and the critic is saved beside the policy."""
    monkeypatch.syspath_prepend(str(workspace))
    run = in_process(workspace, "ppo", "train.loss=ppo", "train.max_steps=40", "train.log_every=1", "train.lr=1e-2",
                     "rl.num_iterations=2", 'rl.rewards=["online_rewards_fixture:e_count"]')
    lines = [r for r in records(run) if r["split"] == "train"]
    assert {"value_loss", "value_clip_ratio", "values"} <= set(lines[0])
    rewards = [r["reward"] for r in lines if "reward" in r]
    assert len(rewards) == 20  # one set of rollouts per 2 steps
    assert sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3 + 2, rewards
    assert (run / "value_model" / "value_head.safetensors").is_file()


def test_mask_truncated_leaves_clipped_completions_out_of_the_loss(workspace, one_thread):
    """The tiny model almost never says EOS within 8 tokens: with rl.mask_truncated every
    completion is clipped, nothing trains (loss 0, gradient 0) and the weights stay put."""
    run = in_process(workspace, "masked", "train.max_steps=2", "train.log_every=1", "rl.mask_truncated=true")
    lines = [r for r in records(run) if r["split"] == "train"]
    assert all(r["completions/clipped_ratio"] == 1.0 for r in lines)
    assert all(r["loss"] == 0.0 and r["grad_norm"] == 0.0 for r in lines)
    start = load_file(workspace / "tiny" / "model.safetensors")
    assert_identical(weights(run), start)


def test_kl_term_reads_a_reference_and_is_logged(workspace, one_thread):
    """beta > 0 loads a frozen copy; the KL starts at 0 (policy = reference) and grows."""
    run = in_process(workspace, "kl", "train.max_steps=4", "train.log_every=1", "train.loss_kwargs={beta: 0.1}")
    lines = [r for r in records(run) if r["split"] == "train"]
    assert lines[0]["kl"] == pytest.approx(0.0, abs=1e-7)
    assert lines[-1]["kl"] > 1e-6


# ---- invariances --------------------------------------------------------------------------------


@pytest.mark.parametrize("aggregation", ["dapo", "grpo", "dr_grpo"])
def test_accumulation_split_does_not_change_the_gradient(workspace, monkeypatch, one_thread, aggregation):
    """4 prompts × 1 micro-batch against 1 prompt × 4 (same prompts, same samples: each prompt's
    stream is its place in the step): each optimizer step applies the same gradient (1e-6). For
    dapo the denominator is the step's active tokens, not each micro-batch's."""
    original = torch.optim.AdamW.step
    grads: dict[str, list[list[torch.Tensor]]] = {}
    for name, batch, accum in (("one", 4, 1), ("four", 1, 4)):
        steps: list[list[torch.Tensor]] = []

        def capture(self, *args, _steps=steps, **kwargs):
            _steps.append([p.grad.clone() for g in self.param_groups for p in g["params"]])
            return original(self, *args, **kwargs)

        monkeypatch.setattr(torch.optim.AdamW, "step", capture)
        in_process(workspace, f"split-{aggregation}-{name}", f"train.batch_size={batch}",
                   f"train.grad_accum={accum}", "train.max_steps=3",
                   f"train.loss_kwargs={{aggregation: {aggregation}}}")
        grads[name] = steps
    assert len(grads["one"]) == 3
    for step_one, step_four in zip(grads["one"], grads["four"], strict=True):
        assert any(float(g.abs().max()) > 0 for g in step_one)
        for g1, g4 in zip(step_one, step_four, strict=True):
            torch.testing.assert_close(g1, g4, atol=1e-6, rtol=0)


def torchrun(cwd: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = child_env()
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "alignlab.cli", "train", "run.yaml", *overrides],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT)


def train(cwd: Path, *overrides: str, kill: tuple[str, int] | None = None) -> subprocess.CompletedProcess:
    flags = [f"--{kill[0]}", str(kill[1])] if kill else []
    return subprocess.run([sys.executable, str(RUNNER), *flags, "--", "run.yaml", *overrides],
                          cwd=cwd, env=child_env(), capture_output=True, text=True, timeout=TIMEOUT)


def test_ddp_two_ranks_match_one_process(workspace):
    """2 ranks × 2 prompts against 1 process × 4, with batch-wide statistics on both sides (the
    dapo token count and GRPO's batch std, which need every rank's rollouts): the same samples,
    the same metrics and the same weights to float rounding."""
    common = ("train.max_steps=3", "train.save_every=null", "rl.scale_rewards=batch",
              "train.loss_kwargs={aggregation: dapo}", "rl.log_completions=1")
    check_ok(train(workspace, "train.output_dir=single", "train.batch_size=4", *common))
    check_ok(torchrun(workspace, "train.output_dir=ddp", "train.batch_size=2", *common))
    logged = [(workspace / run / "completions.jsonl").read_text(encoding="utf-8").splitlines() for run in ("ddp", "single")]
    assert len(logged[0]) == 3 * 4 * 4 and logged[0] == logged[1]  # every rank's rollouts, in the same order
    got, want = records(workspace / "ddp"), records(workspace / "single")
    for g, w in zip(got, want, strict=True):
        assert g["tokens"] == w["tokens"]
        for name in ("loss", "reward", "reward_std", "completions/mean_length", "frac_reward_zero_std"):
            assert g[name] == pytest.approx(w[name], abs=1e-6), name
    a, b = weights(workspace / "ddp"), weights(workspace / "single")
    worst = max(float((a[n] - b[n]).abs().max()) for n in a)
    assert worst <= 1e-5, worst


def test_online_dpo_ddp_two_ranks_match_one_process(workspace):
    """Online DPO (rl.pairs) on 2 ranks × 2 prompts against 1 process × 4: the same pairs and
    losses at every step, the same weights to float rounding."""
    common = ("train.loss=dpo", "train.loss_kwargs={beta: 0.1}", "train.reference=copy", "rl.pairs=best_worst",
              "train.max_steps=3", "train.save_every=null")
    check_ok(train(workspace, "train.output_dir=pairs_single", "train.batch_size=4", *common))
    check_ok(torchrun(workspace, "train.output_dir=pairs_ddp", "train.batch_size=2", *common))
    got, want = records(workspace / "pairs_ddp"), records(workspace / "pairs_single")
    for g, w in zip(got, want, strict=True):
        for name in ("loss", "reward", "pairs", "tokens"):
            assert g[name] == pytest.approx(w[name], abs=1e-6), name
    a, b = weights(workspace / "pairs_ddp"), weights(workspace / "pairs_single")
    assert max(float((a[n] - b[n]).abs().max()) for n in a) <= 1e-5


# ---- exact resume -----------------------------------------------------------------------------


@pytest.mark.parametrize(("loss", "iterations"), [("grpo", 1), ("grpo", 2), ("ppo", 2)])
def test_killed_run_resumes_bit_identically(workspace, loss, iterations):
    """Killed as step 5 starts (checkpoint at step 3): the resume draws the same completions
    (seeds by step and place) and, with μ = 2, reuses the checkpointed rollouts of steps 3–4
    (generated at step 3, with PPO's old values and returns) for step 4; the final weights (PPO's
    critic included) equal the uninterrupted run's."""
    settings = (f"rl.num_iterations={iterations}", f"train.loss={loss}")
    name = f"{loss}{iterations}"
    check_ok(train(workspace, f"train.output_dir=whole{name}", *settings))
    killed = train(workspace, f"train.output_dir=killed{name}", *settings, kill=("kill-before-step", 5))
    assert killed.returncode == -9, killed.stderr
    out = check_ok(train(workspace, f"train.output_dir=killed{name}", *settings))
    assert "resumed from step 3" in out
    assert_identical(weights(workspace / f"killed{name}"), weights(workspace / f"whole{name}"))
    if loss == "ppo":
        critic = load_file(workspace / f"killed{name}" / "value_model" / "model.safetensors")
        assert_identical(critic, load_file(workspace / f"whole{name}" / "value_model" / "model.safetensors"))
    if iterations == 2:
        state = json.loads((workspace / f"killed{name}" / "checkpoints" / "step-00000006" / "state.json").read_text())
        assert state["rollout"]["generated_at"] == 4 and len(state["rollout"]["rollouts"]) == 1
        lines = [r for r in records(workspace / f"whole{name}") if r["split"] == "train"]
        assert "reward" in lines[0] and "reward" not in lines[1]  # step 2 reuses step 1's rollouts


def test_a_nonfinite_online_step_is_skipped_and_counted(workspace):
    """The loop's non-finite guard on an online run: step 2's loss made NaN (the runner's probe)
    is skipped under train.on_nonfinite=skip, counted, and the run goes on to its last step."""
    result = subprocess.run([sys.executable, str(RUNNER), "--nan-at-step", "2", "--", "run.yaml",
                             "train.output_dir=nonfinite", "train.on_nonfinite=skip", "train.save_every=null",
                             "train.max_steps=4"], cwd=workspace, env=child_env(), capture_output=True, text=True,
                            timeout=TIMEOUT)
    check_ok(result)
    summary = json.loads((workspace / "nonfinite" / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["skipped_nonfinite"] == 1
    lines = [r for r in records(workspace / "nonfinite") if r["split"] == "train"]
    assert math.isnan(lines[1]["loss"]) and all(math.isfinite(r["loss"]) for r in lines[2:])


# ---- unscorable completions ---------------------------------------------------------------------

REWARD_MODULE = '''
def e_count(prompt, completion, **columns):
    return float(completion.count("e"))


def broken(prompt, completion, **columns):
    return float("nan")


def odd_none(prompt, completion, **columns):
    """None for a completion with an odd number of characters; its length otherwise."""
    return None if len(completion) % 2 else float(len(completion))
'''


def test_unscorable_completions_are_counted_and_left_out(workspace, monkeypatch, one_thread):
    monkeypatch.syspath_prepend(str(workspace))
    run = in_process(workspace, "odd", "train.max_steps=2", "train.log_every=1", 'rl.rewards=["online_rewards_fixture:odd_none"]')
    line = records(run)[0]
    assert 0 < line["rewards/unscorable"] < 1
    assert math.isfinite(line["loss"]) and math.isfinite(line["reward"])
    # the mean reward is over the scorable completions only: an even length, never a None read as 0
    assert line["reward"] >= 0 and line["rewards/odd_none/mean"] == pytest.approx(line["reward"])


def test_a_nan_reward_is_an_error_not_an_unscorable_completion(workspace, monkeypatch, one_thread):
    monkeypatch.syspath_prepend(str(workspace))
    with pytest.raises(AlignlabError, match=r"(?s)reward .broken. returned nan .*return None"):
        in_process(workspace, "nan", "train.max_steps=1", 'rl.rewards=["online_rewards_fixture:broken"]')


# ---- errors before any model loads --------------------------------------------------------------


@pytest.fixture
def nothing_loads(monkeypatch):
    import alignlab.train.run as run

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the error was reported")

    for name in ("load_policy", "load_reward_model", "load_tokenizer"):
        monkeypatch.setattr(run, name, refuse)


@pytest.mark.parametrize(("overrides", "error", "message"), [
    (['rl.rewards=["no_such_reward"]'], ConfigError, r"rl\.rewards\[0\].*no_such_reward"),
    (["rl.rewards=[]"], ConfigError, "at least one reward"),
    (["train.reference=cache"], ConfigError, "cache.*samples new completions"),
    (["train.loss_kwargs={beta: 0.1}", "train.reference=none"], ConfigError, "needs a reference"),
    (["train.loss=rloo", "rl.scale_rewards=batch"], ConfigError, "no scale option"),
    (["rl.advantage=gae"], ConfigError, "value model"),
    (["rl.temperature=0"], ConfigError, "temperature"),
    (["rl.advantage=grpoo"], ConfigError, r"rl\.advantage: unknown .*grpo"),
    (["rl.pairs=best_worst", "train.loss=dpo", "rl.log_completions=1"], ConfigError, "log_completions.*online pairs"),
], ids=["unknown-reward", "no-reward", "cache", "kl-without-reference", "scale-without-option", "gae",
        "greedy", "unknown-advantage", "log-completions-with-pairs"])
def test_bad_settings_fail_before_the_model_loads(workspace, nothing_loads, overrides, error, message):
    with pytest.raises(error, match=message):
        in_process(workspace, "bad", *overrides)


def test_a_prompt_file_with_a_bad_row_names_file_and_line(workspace, nothing_loads):
    bad = workspace / "bad_prompts.jsonl"
    lines = PROMPTS.read_text(encoding="utf-8").splitlines()
    for row, message in (({"answer": "4"}, "no prompt among the fields"), ({"prompt": 3}, "field 'prompt'")):
        bad.write_text("\n".join([*lines[:2], json.dumps(row), *lines[3:]]) + "\n", encoding="utf-8")
        with pytest.raises(AlignlabError, match=rf"bad_prompts\.jsonl:3.*{message}"):
            in_process(workspace, "badfile", f"data.path={bad}")
