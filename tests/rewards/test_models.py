"""Model rewards: the reward model's score and the DPO implicit reward against independent paths.

Example: ``.venv/bin/pytest tests/rewards/test_models.py``
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from alignlab.config import ModelConfig
from alignlab.data.tokenize import RecordTokenizer
from alignlab.decode import score
from alignlab.errors import ConfigError
from alignlab.models import load_policy, load_reward_model, load_tokenizer, reward_scores
from alignlab.models.tiny import init_tiny_model
from alignlab.rewards import build_reward, unscorable
from alignlab.rewards.models import ImplicitReward

PROMPTS = ["What is 2 plus 2?", "Name a colour.", "What is 3 times 3?"]
COMPLETIONS = ["4", "Blue, or perhaps green.", "It is nine, since three threes make nine."]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return init_tiny_model(tmp_path_factory.mktemp("rm") / "tiny", hidden_size=32, intermediate=64, heads=4)


def test_reward_model_scores_match_the_model_on_each_sequence_alone(tiny: Path) -> None:
    """Batched, sorted by length and padded, the scores equal one-at-a-time calls (scalar head)."""
    torch.manual_seed(0)  # the fresh scalar head
    reward = build_reward(f"reward_model(path={str(tiny)!r}, head='scalar_head', batch_size=2, device='cpu')")
    got = reward(PROMPTS, COMPLETIONS)
    tokenizer, encoder = reward.tokenizer, RecordTokenizer(reward.tokenizer)
    for prompt, completion, value in zip(PROMPTS, COMPLETIONS, got, strict=True):
        e = encoder.encode(prompt, completion)
        ids = torch.tensor([[*e.prompt_ids, *e.completion_ids]])
        with torch.no_grad():
            alone = reward_scores(reward.model, ids, torch.ones_like(ids))
        assert value == pytest.approx(float(alone), abs=1e-5)
        assert tokenizer.decode(e.completion_ids, skip_special_tokens=True) == completion
    assert len(set(got)) == 3


def test_reward_model_gives_none_for_a_dropped_completion(tiny: Path) -> None:
    tokenizer = load_tokenizer(tiny)
    model = load_reward_model(ModelConfig(name_or_path=str(tiny), reward_head="scalar_head"), "cpu", tokenizer)
    from alignlab.rewards.models import RewardModelReward

    reward = RewardModelReward.from_model(model, tokenizer, max_length=12)
    scores = reward(["Hi."] * 2, ["ok", "a much longer answer that cannot fit in twelve tokens at all"])
    assert scores[0] is not None and scores[1] is None and unscorable(scores) == 1


def test_implicit_reward_is_beta_times_the_log_ratio(tiny: Path, tmp_path: Path) -> None:
    tokenizer = load_tokenizer(tiny)
    reference = load_policy(ModelConfig(name_or_path=str(tiny)), "cpu")
    other = init_tiny_model(tmp_path / "other", hidden_size=32, intermediate=64, heads=4, seed=1)
    policy = load_policy(ModelConfig(name_or_path=str(other)), "cpu")
    same = ImplicitReward.from_models(reference, reference, tokenizer, beta=0.5)
    assert same(PROMPTS, COMPLETIONS) == [0.0, 0.0, 0.0]

    encoder = RecordTokenizer(tokenizer)
    encoded = [encoder.encode(p, c) for p, c in zip(PROMPTS, COMPLETIONS, strict=True)]
    prompts, completions = [e.prompt_ids for e in encoded], [[e.completion_ids] for e in encoded]
    lp_policy = score(policy, prompts, completions, tokenizer.pad_token_id, batch_size=1, progress=False)
    lp_reference = score(reference, prompts, completions, tokenizer.pad_token_id, batch_size=1, progress=False)
    for normalize, pick in ((False, "sum"), (True, "mean")):
        reward = ImplicitReward.from_models(policy, reference, tokenizer, beta=0.5, normalize=normalize, batch_size=2)
        expected = 0.5 * (getattr(lp_policy, pick) - getattr(lp_reference, pick))
        torch.testing.assert_close(torch.tensor(reward(PROMPTS, COMPLETIONS), dtype=torch.float64), expected,
                                   atol=1e-5, rtol=0)


def test_implicit_reward_from_folders_by_spec(tiny: Path) -> None:
    reward = build_reward({"name": "dpo_implicit", "policy": str(tiny), "reference": str(tiny), "beta": 0.1,
                           "device": "cpu"})
    assert reward(PROMPTS[:1], COMPLETIONS[:1]) == [0.0]
    with pytest.raises(ConfigError, match="beta must be positive"):
        build_reward(f"dpo_implicit(policy={str(tiny)!r}, reference={str(tiny)!r}, beta=0)")
