"""`alignlab doctor CONFIG`: the pre-load checks of a run, each named, and no model weights loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from alignlab.cli import main
from alignlab.config import load_config
from alignlab.models.tiny import init_tiny_model
from alignlab.train.doctor import diagnose

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return init_tiny_model(tmp_path_factory.mktemp("doctor") / "tiny", hidden_size=32, layers=1, heads=4, intermediate=64)


@pytest.fixture(autouse=True)
def no_weights(monkeypatch):
    import alignlab.models as models
    import alignlab.train.run as run

    def refuse(*args, **kwargs):
        raise AssertionError("the doctor loaded a model")

    for name in ("load_policy", "load_reward_model"):
        monkeypatch.setattr(models, name, refuse)
        monkeypatch.setattr(run, name, refuse)


def checks(tiny, example: str, *overrides: str) -> dict[str, tuple[bool, str]]:
    config = load_config(ROOT / "examples" / f"{example}.yaml", [f"model.name_or_path={tiny}",
                                                                  f"data.path={ROOT / load_config(ROOT / 'examples' / f'{example}.yaml').data.path}",
                                                                  "data.eval_path=null", *overrides])
    return {c.name: (c.ok, c.detail) for c in diagnose(config).checks}


def test_a_good_config_passes_every_check(tiny):
    found = checks(tiny, "grpo")
    assert all(ok for ok, _ in found.values()), found
    assert found["reference"][1].endswith("none") and "32 records" in found["data"][1]
    assert found["rewards"][1] == "numeric_answer, length_target; advantage grpo"


@pytest.mark.parametrize(("example", "overrides", "check", "message"), [
    ("grpo", ["train.reference=cache"], "reference", "samples new completions"),
    ("grpo", ['rl.rewards=["nope"]', "rl.reward_weights=null"], "rewards", "unknown reward 'nope'"),
    ("dpo", ["train.report_to=[comet]"], "trackers", "unknown tracker 'comet'"),
    ("dpo", ["train.loss=kto", "train.loss_kwargs={}", "train.batch_size=1"], "batch", "batch_size >= 2"),
], ids=["cache-online", "unknown-reward", "tracker", "kto-batch"])
def test_bad_combinations_fail_their_check(tiny, example, overrides, check, message):
    ok, detail = checks(tiny, example, *overrides)[check]
    assert not ok and message in detail


def test_gradient_checkpointing_on_a_model_that_cannot(tiny, monkeypatch):
    from transformers import LlamaForCausalLM

    monkeypatch.setattr(LlamaForCausalLM, "supports_gradient_checkpointing", False)
    ok, detail = checks(tiny, "dpo", "train.gradient_checkpointing=true")["model"]
    assert not ok and "do not support it" in detail


def test_the_command_exits_1_on_a_failure(tiny, capsys):
    config = ROOT / "examples" / "grpo.yaml"
    assert main(["doctor", str(config), f"model.name_or_path={tiny}", f"data.path={ROOT / 'examples/data/prompts.jsonl'}"]) == 0
    assert main(["doctor", str(config), f"model.name_or_path={tiny}", f"data.path={ROOT / 'examples/data/prompts.jsonl'}",
                 "train.reference=cache"]) == 1
    assert "fix the failed checks" in capsys.readouterr().out
