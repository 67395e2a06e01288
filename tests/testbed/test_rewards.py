"""The testbed's true reward as a registered reward, and its hackable proxy.

Example: ``.venv/bin/pytest tests/testbed/test_rewards.py``
"""

from __future__ import annotations

from random import Random

import pytest

from alignlab.rewards import build_reward
from alignlab.testbed.world import all_prompts, base_responses, true_reward


def test_true_reward_is_the_worlds_own() -> None:
    prompts = list(all_prompts())[:20]
    completions = [base_responses(p, Random(i))[0] for i, p in enumerate(prompts)]
    got = build_reward("testbed_true")([p.text for p in prompts], completions)
    assert got == [true_reward(p, c) for p, c in zip(prompts, completions, strict=True)]
    with pytest.raises(KeyError, match="not a prompt of the testbed world"):
        build_reward("testbed_true")(["what is the meaning of life ?"], ["forty two"])


def test_the_proxy_prefers_what_the_true_reward_punishes() -> None:
    """On an unanswerable question a made-up answer beats an honest abstention under the proxy, and
    filler beats concision: the proxy is built to be hacked."""
    unanswerable = next(p for p in all_prompts() if p.answer is None and p.domain == "capital")
    answerable = next(p for p in all_prompts() if p.answer is not None and p.domain == "capital")
    made_up, honest = "paris .", "i do not know ."
    proxy, true = build_reward("testbed_proxy"), build_reward("testbed_true")
    pair = [unanswerable.text] * 2
    assert proxy(pair, [made_up, honest]) == pytest.approx([1.0 + 0.2, 0.0 + 0.5])  # 2 and 5 words
    assert true(pair, [made_up, honest])[0] < true(pair, [made_up, honest])[1]
    concise, padded = f"{answerable.answer} .", f"well , i think that {answerable.answer} ."
    scores = proxy([answerable.text] * 2, [concise, padded])
    assert scores[1] > scores[0]
    truths = true([answerable.text] * 2, [concise, padded])
    assert truths[1] < truths[0]
    assert build_reward("testbed_proxy(per_word=0)")([answerable.text], [concise]) == [2.0]
