"""The prompt-only kind: prompts with their columns in, rollouts collated with their advantages
and old log-probs at exactly the completion positions.

Example: ``.venv/bin/pytest tests/kinds/test_prompt.py``
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from alignlab.errors import DataError
from alignlab.kinds import get_kind
from alignlab.kinds.prompt import PromptRecord, Rollout
from alignlab.losses.contract import LossContract

CONTRACT = LossContract(needs_ref=False, logps="token", data="prompt", paper="p", equation="e", verified=True,
                        inputs=(), hyperparameters=(), advantage="grpo")


def test_read_keeps_each_prompt_with_its_columns(tmp_path: Path) -> None:
    path = tmp_path / "prompts.jsonl"
    rows = [{"prompt": "What is 2 plus 2?", "answer": "4", "id": 7},
            {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    records = get_kind("prompt").read(path)
    assert records[0] == PromptRecord("What is 2 plus 2?", {"answer": "4", "id": 7})
    assert records[1].columns == {}  # absent fields are not invented as None
    assert [dict(m) for m in records[1].prompt] == [{"role": "user", "content": "Hi"}]  # the reply is not prompt


def test_a_row_without_a_prompt_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "ok"}\n{"answer": "4"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"prompts.jsonl:2"):
        get_kind("prompt").read(path)


def test_collate_places_advantages_and_old_logps_at_the_completion_tokens() -> None:
    rollouts = [Rollout(0, (5, 6, 7), (8, 9), 0.5, 1.0, False, (-0.1, -0.2)),
                Rollout(0, (5, 6, 7), (10,), -0.5, 0.0, True, (-0.3,)),
                Rollout(3, (4,), (11, 12, 13), (1.0, 2.0, 3.0), 2.0, False, (-1.0, -2.0, -3.0))]
    batch = get_kind("prompt").collate(rollouts, [0, 1, 2], 0, CONTRACT)
    sequences = batch.sequences
    assert sequences.input_ids.tolist() == [[5, 6, 7, 8, 9], [5, 6, 7, 10, 0], [4, 11, 12, 13, 0]]
    assert sequences.groups.tolist() == [0, 0, 1]  # the first two share their prompt: encoded once
    mask = sequences.completion_mask
    assert mask.int().tolist() == [[0, 0, 0, 1, 1], [0, 0, 0, 1, 0], [0, 1, 1, 1, 0]]
    old = batch.fields["old_tokens"]
    assert old[mask].tolist() == pytest.approx([-0.1, -0.2, -0.3, -1.0, -2.0, -3.0])
    assert old[~mask].abs().sum() == 0
    advantages = batch.fields["advantages"]  # one row holds per-token advantages: all become (B, L)
    assert advantages[mask].tolist() == [0.5, 0.5, -0.5, 1.0, 2.0, 3.0]
    sequence_level = get_kind("prompt").collate(rollouts[:2], [0, 1], 0, CONTRACT)
    assert sequence_level.fields["advantages"].tolist() == [0.5, -0.5]


def test_inputs_fall_back_to_the_policy_itself_as_the_sampling_policy() -> None:
    from alignlab.logprobs import reduce_token_logps

    rollouts = [Rollout(0, (5, 6), (8, 9), 1.0, 1.0, False)]
    kind = get_kind("prompt")
    batch = kind.collate(rollouts, [0], 0, CONTRACT)
    tokens = torch.zeros(1, 4, requires_grad=True)
    policy = reduce_token_logps(tokens * 1.0, batch.sequences.completion_mask, torch.ones(1, 4))
    inputs = kind.inputs(CONTRACT, batch, policy, None)
    assert "old_tokens" not in batch.fields and not inputs["old_tokens"].requires_grad
    assert torch.equal(inputs["old_tokens"], policy.tokens.detach()) and "ref_tokens" not in inputs
    assert kind.diagnostics(inputs)["entropy"].tolist() == [1.0]
