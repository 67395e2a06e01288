"""The reward protocol: spec parsing, options checked, None kept and counted, user functions only
when named, columns checked.

Example: ``.venv/bin/pytest tests/rewards/test_base.py``
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from alignlab.errors import ConfigError
from alignlab.rewards import REWARDS, FunctionReward, Reward, build_reward, unscorable
from alignlab.rewards.base import _kwargs


def test_spec_options_are_literals_and_nothing_runs() -> None:
    assert _kwargs("x", "a=1, b='two', c=[1, 2.5], d=None, e=True") == {
        "a": 1, "b": "two", "c": [1, 2.5], "d": None, "e": True}
    for bad in ("a=__import__('os').system('echo hacked')", "a=open('f')", "1, 2"):
        with pytest.raises(ConfigError, match="not a literal|cannot read"):
            _kwargs("x", bad)


def test_unknown_reward_and_unknown_option_suggest_the_closest() -> None:
    with pytest.raises(ConfigError, match="unknown reward 'reward_modle'.*Did you mean 'reward_model'"):
        build_reward("reward_modle")
    with pytest.raises(ConfigError, match="unknown option 'betta' for reward 'dpo_implicit'.*Did you mean 'beta'"):
        build_reward("dpo_implicit(betta=0.1)")
    with pytest.raises(ConfigError, match="needs a 'name'"):
        build_reward({"beta": 0.1})
    with pytest.raises(ConfigError, match="cannot read reward spec"):
        build_reward("not a spec!")


def test_a_function_reward_keeps_none_and_reads_the_columns_it_names() -> None:
    def graded(prompt: str, completion: str, answer: str) -> float | None:
        return None if not completion else float(completion == answer)

    reward = FunctionReward(graded)
    assert reward.columns == ("answer",)
    scores = reward(["q1", "q2", "q3"], ["4", "", "5"], {"answer": ["4", "4", "4"], "other": [0, 0, 0]})
    assert scores == [1.0, None, 0.0] and unscorable(scores) == 1
    with pytest.raises(ConfigError, match=r"(?s)needs the column.*'answer'.*hint"):
        reward(["q"], ["4"])
    with pytest.raises(ValueError, match="2 prompts but 1 completions"):
        reward(["a", "b"], ["c"], {"answer": ["c"]})
    with pytest.raises(ValueError, match="column 'answer' has 2 values for 1"):
        reward(["a"], ["c"], {"answer": ["c", "d"]})


def test_a_user_function_is_imported_only_when_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_rewards.py").write_text(textwrap.dedent("""
        CALLS = []
        def shouting(prompt, completion):
            CALLS.append(completion)
            return float(completion.isupper())
    """), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "my_rewards" not in sys.modules
    reward = build_reward("my_rewards:shouting")
    assert reward(["p", "p"], ["HEY", "hey"]) == [1.0, 0.0]
    assert sys.modules["my_rewards"].CALLS == ["HEY", "hey"] and reward.name == "my_rewards:shouting"
    with pytest.raises(ConfigError, match="cannot import reward my_rewards:missing"):
        build_reward("my_rewards:missing")
    with pytest.raises(ConfigError, match="cannot import reward no_such_module_xyz:f"):
        build_reward("no_such_module_xyz:f")


def test_a_reward_returning_the_wrong_count_is_an_error() -> None:
    class Broken(Reward):
        def score(self, prompts, completions, columns):
            return [1.0]

    with pytest.raises(RuntimeError, match="returned 1 scores for 2"):
        Broken()(["a", "b"], ["c", "d"])


def test_every_registered_reward_has_a_summary_and_a_family() -> None:
    import alignlab.testbed.rewards  # noqa: F401

    assert {"reward_model", "dpo_implicit", "testbed_true", "testbed_proxy"} <= set(REWARDS.names())
    for entry in REWARDS.entries():
        assert entry.contract.summary and entry.contract.family in (
            "rule", "verifier", "model", "testbed", "transform", "user")
