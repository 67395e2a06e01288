"""PPO's critic: values line up with the per-token log-probs, and the joint module returns both."""

from __future__ import annotations

import copy

import torch

from alignlab.forward import CompletionLogps, collate_sequences, split_model
from alignlab.models.tiny import init_tiny_model
from alignlab.models.value import VALUE_HEAD_FILE, PolicyAndValue, TokenValueModel


def tiny_model(tmp_path):
    from transformers import AutoModelForCausalLM

    path = init_tiny_model(tmp_path / "tiny", hidden_size=32, layers=2, heads=4, intermediate=64)
    return AutoModelForCausalLM.from_pretrained(path)


def test_value_of_a_token_is_the_head_on_the_position_before_it(tmp_path):
    """V at completion token t = head(hidden state at t − 1), the state that predicts the token,
    so values sit where LogProbs.tokens puts the token's log-prob; 0 off the completion mask."""
    torch.manual_seed(0)
    model = tiny_model(tmp_path)
    critic = TokenValueModel(copy.deepcopy(model)).eval()
    batch = collate_sequences([([1, 5, 7], [9, 11]), ([1, 4], [8, 3, 2])], pad_id=0)
    with torch.no_grad():
        values = critic(batch)
    backbone, _ = split_model(critic.lm)
    with torch.no_grad():
        hidden = backbone(input_ids=batch.input_ids, attention_mask=batch.attention_mask.long()).last_hidden_state
        per_position = critic.head(hidden.float()).squeeze(-1)
    mask = batch.completion_mask.bool()
    for row in range(2):
        for t in range(mask.shape[1]):
            expected = float(per_position[row, t - 1]) if mask[row, t] else 0.0
            assert abs(float(values[row, t]) - expected) < 1e-6, (row, t)


def test_policy_and_value_returns_both_and_trains_both(tmp_path):
    torch.manual_seed(0)
    model = tiny_model(tmp_path)
    joint = PolicyAndValue(CompletionLogps(model), TokenValueModel(copy.deepcopy(model)))
    batch = collate_sequences([([1, 5, 7], [9, 11])], pad_id=0)
    out = joint(batch)
    plain = CompletionLogps(model)(batch)
    torch.testing.assert_close(out.tokens, plain.tokens)
    assert out.values is not None and out.values.shape == out.tokens.shape
    (out.tokens.sum() + out.values.sum()).backward()
    assert joint.critic.head.weight.grad is not None
    assert any(p.grad is not None for p in joint.policy.parameters())
    # the critic is its own copy: no parameter is shared with the policy
    assert not {id(p) for p in joint.critic.parameters()} & {id(p) for p in joint.policy.parameters()}
    joint.critic.save_pretrained(tmp_path / "value")
    assert (tmp_path / "value" / VALUE_HEAD_FILE).is_file() and (tmp_path / "value" / "config.json").is_file()
