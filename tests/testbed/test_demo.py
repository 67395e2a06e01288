"""A small testbed demo run (well under a minute): deterministic, aligned policies beat the base
by the true reward, and best-of-N behaves as theory says."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from alignlab.testbed.demo import run_testbed_demo

SMALL = {"steps": 60, "objectives": ("dpo",), "sft_steps": 300, "pairs": 384, "heldout_pairs": 32,
         "eval_prompts": 64, "samples": 4, "best_of": (1, 2, 4, 8), "max_new_tokens": 16}


def run(out) -> dict:
    console = Console(file=io.StringIO(), width=200)
    settings = dict(SMALL)
    steps, objectives = settings.pop("steps"), settings.pop("objectives")
    assert run_testbed_demo(console, out=out, steps=steps, objectives=objectives, **settings) == 0
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def twice(tmp_path_factory):
    first = run(tmp_path_factory.mktemp("demo") / "a")
    second = run(tmp_path_factory.mktemp("demo") / "b")
    return first, second


def test_deterministic_with_a_seed(twice):
    first, second = twice
    for result in (first, second):
        result.pop("timing_seconds")
    assert first == second


def test_dpo_beats_the_base_by_true_reward(twice):
    policies = twice[0]["policies"]
    assert policies["dpo"]["reward_mean"] > policies["base"]["reward_mean"]
    assert policies["dpo"]["kl"] > 0 and policies["base"]["kl"] == 0


def test_best_of_n_rises_with_n_within_its_kl_bound(twice):
    rows = twice[0]["best_of_n"]
    rewards = [r["reward_mean"] for r in rows]
    assert rewards == sorted(rewards) and rewards[-1] > rewards[0]
    for row in rows:
        assert row["kl_estimate"] <= row["kl_bound"] + 1e-9


def test_inference_time_stage_judges_proxy_picks_by_the_true_reward(twice):
    """The oracle pick is an upper bound for every selector; a one-reward LSC picks as the raw
    reward does (monotone per prompt); paired differences are against the raw sum."""
    stage = twice[0]["inference_time"]
    rows = {r["selector"]: r for r in stage["rows"]}
    assert set(rows) == {"true reward (oracle)", "helpfulness proxy alone", "LSC of the helpfulness proxy",
                         "raw sum of both proxies", "AND of LSC-transformed proxies"}
    oracle = rows["true reward (oracle)"]["true_reward_mean"]
    assert all(r["true_reward_mean"] <= oracle + 1e-12 for r in rows.values())
    assert oracle > stage["first_sample_true_reward"]
    assert stage["lsc_alone_picks_as_raw"]
    assert rows["LSC of the helpfulness proxy"]["true_reward_mean"] == rows["helpfulness proxy alone"]["true_reward_mean"]
    raw = rows["raw sum of both proxies"]
    assert raw["vs_raw_sum_mean"] == 0 and raw["vs_raw_sum_stderr"] == 0
    for r in rows.values():
        assert r["vs_raw_sum_mean"] == pytest.approx(r["true_reward_mean"] - raw["true_reward_mean"], abs=1e-12)
    assert 0 <= stage["harmful_share"] <= 1 and stage["n"] == max(SMALL["best_of"])


def test_alignlab_eval_on_the_testbed_pairs(twice, tmp_path_factory, monkeypatch):
    """`alignlab eval` of the DPO policy against its base on held-out testbed pairs, whose rater
    shares are known: idealized accuracy from them (no assumed α), JSON and HTML written."""
    from alignlab.cli import main

    monkeypatch.setenv("COLUMNS", "200")
    run_dir = tmp_path_factory.getbasetemp()
    found = sorted(run_dir.glob("demo*/a/runs/dpo/model"))
    assert found, "the demo run of the fixture is missing"
    root = found[0].parents[2]
    out = tmp_path_factory.mktemp("eval")
    assert main(["eval", "--model", str(root / "runs" / "dpo" / "model"), "--ref", str(root / "runs" / "base" / "model"),
                 "--data", str(root / "data" / "heldout.jsonl"), "--out", str(out)]) == 0
    results = json.loads((out / "eval.json").read_text())
    assert not any("assumes" in note for note in results["notes"])
    assert results["summary"]["ranking_accuracy"]["value"] == pytest.approx(
        twice[0]["policies"]["dpo"]["ranking_accuracy"])


def test_decoding_stage_compares_deal_with_best_of_n_at_matched_tokens(twice):
    """DeAL's rows pair each prompt with best-of-N at no smaller a token budget; the best-of-N
    curve rises with N and its token count with it."""
    stage = twice[0]["decoding"]["deal"]
    curve = stage["best_of_n"]
    assert [b["n"] for b in curve] == [1, 2, 4, 8, 16, 32, 64]
    assert [b["true_reward_mean"] for b in curve] == sorted(b["true_reward_mean"] for b in curve)
    tokens = [b["tokens_per_prompt"] for b in curve]
    assert tokens == sorted(tokens) and tokens[0] >= 1
    cheapest = stage["deal"][0]
    assert (cheapest["beam_width"], cheapest["candidates"], cheapest["lookahead"]) == (1, 2, 0)
    # beam 1, top-2, no lookahead: two candidate tokens per step, each scored once
    assert cheapest["reward_calls_per_prompt"] == cheapest["tokens_per_prompt"]
    for run in stage["deal"]:
        assert run["difference_mean"] == pytest.approx(run["true_reward_mean"] - run["best_of_n_matched_mean"])
        assert run["best_of_n_matched_mean"] >= curve[0]["true_reward_mean"] - 1e-12  # at least one sample
        assert 0 <= run["budget_capped_prompts"] <= stage["prompts"]


def test_decoding_stage_sweeps_steering_and_measures_token_shift(twice):
    decoding = twice[0]["decoding"]
    steering = decoding["steering"]
    alphas = [p["alpha"] for p in steering["points"]]
    assert alphas == sorted(alphas) and 0.0 in alphas
    for point in steering["points"]:
        assert 0 <= point["harmless"] <= 1 and 0 <= point["correct"] <= 1
    # the fits are least squares of these very points: the alignment line through their means
    harmless = [p["harmless"] for p in steering["points"]]
    fit = steering["fit"]
    assert fit["alignment_intercept"] + fit["alignment_slope"] * sum(alphas) / len(alphas) == pytest.approx(
        sum(harmless) / len(harmless))
    shift = decoding["token_shift"]
    assert shift["aligned"] == "dpo" and shift["positions"] > 0
    assert sum(shift["shares"].values()) == pytest.approx(1.0)
    assert shift["mean_kl_per_token"] > 0  # DPO moved the distribution
    for row in shift["first_positions"]:
        assert sum(row.values()) == pytest.approx(1.0)
