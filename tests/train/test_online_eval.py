"""Online RL's evaluation on held-out prompts (data.eval_path with a prompt-only loss), and the
rollouts written to completions.jsonl (rl.log_completions).

The final evaluation is recomputed independently: the saved model reloaded, the eval prompts
sampled with the evaluation's seed, scored by the reward, and (with a reference) the KL estimate
taken from a plain forward pass of the policy and the initial model, not alignlab's log-prob path.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from rich.console import Console

from alignlab.config import load_config
from alignlab.errors import ConfigError
from alignlab.models.tiny import init_tiny_model
from alignlab.train.run import run_training

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "data"
G, MAX_NEW, TEMPERATURE, SEED = 4, 8, 0.9, 3
REWARD = "length_target(target=3, scale=0.5)"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("online_eval")
    init_tiny_model(root / "tiny", hidden_size=32, layers=2, heads=4, intermediate=64)
    shutil.copy(EXAMPLES / "prompts.jsonl", root / "prompts.jsonl")
    shutil.copy(EXAMPLES / "prompts_eval.jsonl", root / "prompts_eval.jsonl")
    return root


def run(workspace: Path, name: str, *overrides: str) -> Path:
    config = load_config(None, [
        f"data.path={workspace / 'prompts.jsonl'}", f"data.eval_path={workspace / 'prompts_eval.jsonl'}",
        f"model.name_or_path={workspace / 'tiny'}", f"train.output_dir={workspace / name}",
        f"rl.num_generations={G}", f"rl.max_new_tokens={MAX_NEW}", f"rl.temperature={TEMPERATURE}",
        f"rl.rewards=[\"{REWARD}\"]", "train.loss=grpo", "train.lr=3e-3", "train.batch_size=4",
        "train.max_steps=4", "train.eval_every=2", f"train.seed={SEED}", "train.device=cpu", *overrides])
    return run_training(config, Console(quiet=True))


def evaluations(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == "eval"]


def resample(workspace: Path, run_dir: Path) -> tuple[list[list[int]], list[list[list[int]]], list[str], object]:
    """The eval prompts sampled from the saved model as the evaluation samples them."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignlab.data.tokenize import RecordTokenizer, pad_id_of
    from alignlab.decode.sampling import SamplingOptions, sample
    from alignlab.train.online import EVAL_SEED, SEED_STRIDE

    tokenizer = AutoTokenizer.from_pretrained(run_dir / "model")
    model = AutoModelForCausalLM.from_pretrained(run_dir / "model").eval()
    config = load_config(run_dir / "config.yaml")
    prompts = [json.loads(line)["prompt"] for line in (workspace / "prompts_eval.jsonl").read_text().splitlines()]
    encoder = RecordTokenizer(tokenizer, config.tokenize)
    prompt_ids = [list(encoder.encode_prompt(p)) for p in prompts]
    options = SamplingOptions(max_new_tokens=MAX_NEW, temperature=TEMPERATURE, top_p=1.0, top_k=0,
                              seed=SEED * SEED_STRIDE + EVAL_SEED, batch_size=config.rl.batch_size)
    completions = sample(model, prompt_ids, G, options, eos_id=encoder.eos_id, pad_id=pad_id_of(tokenizer),
                         progress=False)
    return prompt_ids, completions, prompts, (model, tokenizer, encoder.eos_id)


def test_final_evaluation_equals_an_independent_resampling(workspace):
    run_dir = run(workspace, "plain")
    evals = evaluations(run_dir)
    assert [r["step"] for r in evals] == [2, 4, 4] and evals[-1].get("final")
    names = {"reward", "reward_std", "frac_reward_zero_std", "rewards/unscorable", "completions/mean_length",
             "completions/clipped_ratio", "rewards/length_target/mean", "rewards/length_target/std"}
    assert names <= set(evals[-1]) and "kl" not in evals[-1]  # GRPO's beta 0: no reference to compare with
    def numbers(record: dict) -> dict:
        return {k: v for k, v in record.items() if k != "final"}

    assert numbers(evals[1]) == numbers(evals[-1])  # the same policy and random streams: the same numbers
    assert numbers(evals[0]) != numbers(evals[1])  # the policy moved between steps 2 and 4

    from alignlab.rewards import build_reward

    _, completions, prompts, (_, tokenizer, eos_id) = resample(workspace, run_dir)
    texts = [tokenizer.decode(c, skip_special_tokens=True).strip() for group in completions for c in group]
    reward = build_reward(REWARD)
    scores = [float(s) for s in reward([p for p in prompts for _ in range(G)], texts, {})]
    assert evals[-1]["reward"] == pytest.approx(sum(scores) / len(scores), abs=1e-12)
    lengths = [len(c) for group in completions for c in group]
    assert evals[-1]["completions/mean_length"] == pytest.approx(sum(lengths) / len(lengths))
    clipped = [not (c and c[-1] == eos_id) for group in completions for c in group]
    assert evals[-1]["completions/clipped_ratio"] == pytest.approx(sum(clipped) / len(clipped))


def plain_logp_sums(model, prompt_ids, completion_ids, temperature: float = TEMPERATURE) -> float:
    """Σ_t log p(y_t | x, y_<t) at ``temperature`` (the sampling one), from the model's own forward."""
    ids = torch.tensor([list(prompt_ids) + list(completion_ids)])
    with torch.no_grad():
        logits = model(ids).logits[0].float() / temperature
    logp = torch.log_softmax(logits, -1)
    start = len(prompt_ids)
    return float(sum(logp[start - 1 + t, tok] for t, tok in enumerate(completion_ids)))


def test_kl_to_the_reference_on_the_eval_samples(workspace):
    from transformers import AutoModelForCausalLM

    run_dir = run(workspace, "kl", "train.loss_kwargs={beta: 0.05}", "train.reference=copy")
    final = evaluations(run_dir)[-1]
    prompt_ids, completions, _, (policy, _, _) = resample(workspace, run_dir)
    reference = AutoModelForCausalLM.from_pretrained(workspace / "tiny").eval()
    kls = [plain_logp_sums(policy, p, c) - plain_logp_sums(reference, p, c)
           for p, group in zip(prompt_ids, completions, strict=True) for c in group]
    assert final["kl"] == pytest.approx(sum(kls) / len(kls), abs=1e-4)
    assert math.isfinite(final["kl"]) and final["kl"] != 0.0


def test_keep_best_by_the_eval_reward(workspace):
    run_dir = run(workspace, "best", "train.keep_best=true", "train.best_metric=reward", "train.best_mode=max")
    best = json.loads((run_dir / "best" / "best.json").read_text(encoding="utf-8"))
    evals = [r for r in evaluations(run_dir) if not r.get("final")]
    top = max(evals, key=lambda r: r["reward"])
    assert best["metric"] == "reward" and best["value"] == top["reward"]


def test_online_dpo_evaluates_on_held_out_prompts_too(workspace):
    """rl.pairs (online DPO) samples, scores and reports the held-out prompts as GRPO does; its
    reference (a frozen copy) gives the KL, at temperature 1 where DPO reads log-probs."""
    from transformers import AutoModelForCausalLM

    from alignlab.rewards import build_reward

    run_dir = run(workspace, "pairs", "rl.pairs=best_worst", "train.loss=dpo", "train.reference=copy")
    final = evaluations(run_dir)[-1]
    prompt_ids, completions, prompts, (policy, tokenizer, _) = resample(workspace, run_dir)
    texts = [tokenizer.decode(c, skip_special_tokens=True).strip() for group in completions for c in group]
    scores = [float(x) for x in build_reward(REWARD)([p for p in prompts for _ in range(G)], texts, {})]
    assert final["reward"] == pytest.approx(sum(scores) / len(scores), abs=1e-12)
    reference = AutoModelForCausalLM.from_pretrained(workspace / "tiny").eval()
    kls = [plain_logp_sums(policy, p, c, 1.0) - plain_logp_sums(reference, p, c, 1.0)
           for p, group in zip(prompt_ids, completions, strict=True) for c in group]
    assert final["kl"] == pytest.approx(sum(kls) / len(kls), abs=1e-4)


def test_opa_dpo_still_refuses_an_eval_file(workspace):
    with pytest.raises(ConfigError, match="not read by OPA-DPO"):
        run(workspace, "opa", "rl.opa.reviser=online_eval_reviser:revise", "train.loss=dpo")


def test_logged_completions_are_the_rollouts_the_metrics_describe(workspace):
    from alignlab.rewards import build_reward

    run_dir = run(workspace, "logged", "rl.log_completions=2", "data.eval_path=null", "train.eval_every=null")
    lines = [json.loads(line) for line in (run_dir / "completions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted({r["step"] for r in lines}) == [1, 3]  # rounds 1 and 3 of 4
    train = {r["step"]: r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
             if r["split"] == "train"}
    reward = build_reward(REWARD)
    for step in (1, 3):
        rows = [r for r in lines if r["step"] == step]
        assert len(rows) == 4 * G  # batch_size prompts × G
        recomputed = [float(s) for s in reward([r["prompt"] for r in rows], [r["completion"] for r in rows], {})]
        assert [r["reward"] for r in rows] == pytest.approx(recomputed, abs=1e-12)
        assert [r["rewards"]["length_target"] for r in rows] == pytest.approx(recomputed, abs=1e-12)
        assert sum(recomputed) / len(recomputed) == pytest.approx(train[step]["reward"], abs=1e-12)
        for start in range(0, len(rows), G):  # GRPO: (r − mean) / (std + 1e-4) within each prompt's group
            group = rows[start:start + G]
            assert len({r["prompt"] for r in group}) == 1
            values = torch.tensor([r["reward"] for r in group], dtype=torch.float64)
            expected = (values - values.mean()) / (values.std() + 1e-4)
            assert [r["advantage"] for r in group] == pytest.approx(expected.tolist(), abs=1e-9)
        assert sum(r["clipped"] for r in rows) / len(rows) == pytest.approx(train[step]["completions/clipped_ratio"])
