"""The testbed's online-RL stage: a few steps from an untrained model (invariants, not outcomes),
the matched-KL comparison, the report section and its verdict, stage selection and reuse."""

from __future__ import annotations

import io
import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from rich.console import Console

from alignlab.testbed.experiment import SIZES, ExperimentSettings
from alignlab.testbed.report import report_sections, write_report
from alignlab.testbed.report_rl import rl_sections, stage_verdict
from alignlab.testbed.rl import RLSettings, _matched_kl, interpolate, reusable_results, run_rl_stage
from alignlab.testbed.tokenizer import build_tokenizer

SETTINGS = ExperimentSettings(eval_prompts=8, samples=2, max_new_tokens=6, seed=0)
RL = RLSettings(steps=2, prompts_per_step=2, num_generations=2, checkpoint_every=1)


def _untrained(folder: Path) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         max_position_embeddings=64, **SIZES["tiny"])
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    out = tmp_path_factory.mktemp("rl")
    base = _untrained(out / "init")
    return run_rl_stage(SETTINGS, RL, out, Console(file=io.StringIO()), base=base), out


def test_stage_invariants(stage):
    result, out = stage
    rows = {r["policy"]: r for r in result["policies"]}
    assert set(rows) == {"base", "grpo (true reward)", "rloo (true reward)", "grpo · raw proxy", "grpo · raw sum",
                         "grpo · LSC-AND"}
    assert rows["base"]["kl_mean"] == 0 and rows["base"]["gain_mean"] == 0
    for name, run in result["runs"].items():
        assert (out / "runs").is_dir() and len(run["training"]) == RL.steps
        if run["part"] == "hacking":  # the base, every checkpoint, the final model
            assert [c["step"] for c in run["checkpoints"]] == [0, 1, 2]
            assert run["checkpoints"][0]["true_mean"] == rows["base"]["true_mean"]
            assert {k: v for k, v in run["checkpoints"][-1].items() if k != "step"} == run["final"]
        else:
            assert run["checkpoints"] == [] and run["rewards"] == ["testbed_true"]
        assert rows[name]["gain_mean"] == pytest.approx(rows[name]["true_mean"] - rows["base"]["true_mean"])
    matched = result["matched_kl"]
    assert matched["reference"] == "raw sum"
    assert matched["budgets"][-1]["kl"] == pytest.approx(matched["max_common_kl"])
    last = matched["budgets"][-1]["runs"]
    assert set(last) == {"raw proxy", "raw sum", "LSC-AND"} and "vs_reference_mean" not in last["raw sum"]
    for name in ("raw proxy", "LSC-AND"):  # a paired difference of means is the difference of the means
        assert last[name]["vs_reference_mean"] == pytest.approx(last[name]["true_mean"] - last["raw sum"]["true_mean"])
    assert 0 <= result["eval_overlap"] <= 1


def test_report_section_renders_with_its_verdict(stage):
    result, _ = stage
    html = "\n".join(rl_sections(result, [{"n": 1, "reward_mean": 0.0, "reward_stderr": 0.1, "kl_bound": 0.0}]))
    assert "Online RL from the base" in html and "Reward hacking by RL" in html and "data:image/png" in html
    assert "LSC-AND run&#x27;s true reward is" in html or "LSC-AND run's true reward is" in html
    assert "Standard errors are over the evaluation prompts" in html
    full = report_sections({"policies": {"base": {"reward_mean": 0.0}}, "rl": result})
    assert any("Reward hacking by RL" in s for s in full)


def test_interpolation_and_matched_kl():
    values = [torch.tensor([0.0, 2.0]), torch.tensor([1.0, 4.0]), torch.tensor([3.0, 0.0])]
    assert interpolate([0.0, 1.0, 3.0], values, 0.5).tolist() == [0.5, 3.0]
    assert interpolate([0.0, 1.0, 3.0], values, 2.0).tolist() == [2.0, 2.0]
    assert interpolate([0.0, 1.0], values[:2], 5.0) is None  # the curve never reaches it
    run = {"checkpoints": [{"kl_mean": 0.0}, {"kl_mean": 2.0}], "_per_prompt": [{"true": values[0]}, {"true": values[1]}]}
    far = {"checkpoints": [{"kl_mean": 0.0}, {"kl_mean": 8.0}], "_per_prompt": [{"true": values[0]}, {"true": values[2]}]}
    matched = _matched_kl({"raw sum": run, "LSC-AND": far})
    assert matched["max_common_kl"] == 2.0 and [b["kl"] for b in matched["budgets"]] == [1.0, 2.0]
    at_two = matched["budgets"][-1]["runs"]
    assert at_two["raw sum"]["true_mean"] == pytest.approx(2.5)
    assert at_two["LSC-AND"]["vs_reference_mean"] == pytest.approx((0.75 + 1.5) / 2 - 2.5)


def test_verdict_says_which_way_it_came_out():
    def matched(mean, se):
        return {"reference": "raw sum", "budgets": [{"kl": 1.0, "runs": {"LSC-AND": {
            "true_mean": 0.0, "true_stderr": 0.1, "vs_reference_mean": mean, "vs_reference_stderr": se}}}]}
    assert "hacked less" in " ".join(stage_verdict(matched(0.5, 0.1), {}, 0.0))
    assert "against Wang" in " ".join(stage_verdict(matched(-0.5, 0.1), {}, 0.0))
    assert "not distinguishable" in " ".join(stage_verdict(matched(0.1, 0.1), {}, 0.0))
    hacked = {"grpo · raw proxy": {"checkpoints": [{"proxy_mean": 1.0, "true_mean": 0.0, "true_stderr": 0.1},
                                                   {"proxy_mean": 3.0, "true_mean": -2.0, "true_stderr": 0.1}]}}
    assert "hacked it" in stage_verdict({}, hacked, 0.0)[0]


def test_reuse_only_with_the_same_settings_and_a_base_model(tmp_path):
    settings = ExperimentSettings()
    assert reusable_results(tmp_path, settings) is None  # nothing there
    (tmp_path / "results.json").write_text(json.dumps({"settings": asdict(settings), "policies": {"base": {}}}))
    assert reusable_results(tmp_path, settings) is None  # no base model
    (tmp_path / "runs" / "base" / "model").mkdir(parents=True)
    assert reusable_results(tmp_path, settings)["policies"] == {"base": {}}
    assert reusable_results(tmp_path, ExperimentSettings(seed=1)) is None
    (tmp_path / "results.json").write_text("{not json")
    assert reusable_results(tmp_path, settings) is None


def test_unknown_stage_is_refused(capsys):
    from alignlab.cli import main

    assert main(["demo", "--stages", "rl,nope", "--out", "unused"]) == 2
    with pytest.raises(ValueError, match="unknown stages"):
        from alignlab.testbed.demo import run_testbed_demo

        run_testbed_demo(Console(file=io.StringIO()), stages=())


def test_report_of_an_rl_only_run(stage, tmp_path):
    result, _ = stage
    results = {"settings": asdict(SETTINGS), "policies": {"base": {"reward_mean": 0.1, "reward_stderr": 0.05,
                                                                    "kl": 0.0, "kl_stderr": 0.0}},
               "best_of_n": [], "rl": result, "timing_seconds": {"base": 1.0, "rl": 2.0}}
    (tmp_path / "results.json").write_text(json.dumps(results))
    page = write_report(tmp_path).read_text(encoding="utf-8")
    assert "Reward hacking by RL" in page and "Online RL: policies judged by the true reward" in page


@pytest.mark.slow
def test_rl_demo_end_to_end(tmp_path):
    """`alignlab demo --stages rl` at small settings: trains a base, then the stage, then the report."""
    from alignlab.testbed.demo import run_testbed_demo

    console = Console(file=io.StringIO(), width=200)
    assert run_testbed_demo(console, out=tmp_path, stages=("rl",), sft_steps=200, eval_prompts=32, samples=2,
                            best_of=(1, 2, 4), max_new_tokens=12, rl=RLSettings(steps=8, checkpoint_every=4)) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["rl"]["runs"] and "base" in results["policies"]
    assert "Reward hacking by RL" in (tmp_path / "report.html").read_text(encoding="utf-8")


def test_checkpoint_snapshots_are_the_trained_weights(tmp_path):
    """The weights copied at a checkpoint, put into the base model, are the model the run saves."""
    from alignlab.testbed.experiment import _load
    from alignlab.testbed.rl import TRUE, Run, _train, _with_weights

    base = _untrained(tmp_path / "init")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": [{"role": "user", "content": "what is two plus two ?"}]}\n' * 4)
    snapshots, curve = _train(Run("t", "grpo", (TRUE,), (1.0,), "true"), RL, SETTINGS, base, prompts, tmp_path, 1)
    assert sorted(snapshots) == [1, 2] and [c["step"] for c in curve] == [1, 2]
    saved, rebuilt, untouched = _load(tmp_path / "runs" / "rl-t" / "model"), _with_weights(base, snapshots[2]), _load(base)
    for name, value in saved.state_dict().items():
        assert torch.equal(value, rebuilt.state_dict()[name]), name
    assert any(not torch.equal(v, untouched.state_dict()[k]) for k, v in saved.state_dict().items())
