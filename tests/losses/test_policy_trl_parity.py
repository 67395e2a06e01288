"""Parity with TRL: GRPOTrainer's loss and TRL's advantage formulas against alignlab's functions.

Tested against TRL 1.16.0 (transformers 5.24.0, torch 2.13.0). Runs under ``make test-all``
when TRL is installed (``pip install --no-deps trl``); skipped otherwise.

The loss: one fixed batch (left-padded prompts, right-padded completions of ragged lengths,
advantages, old and reference per-token log-probs that differ from the policy so that clipping
and the KL act) goes through ``GRPOTrainer._compute_loss`` of a tiny random Llama, in eval mode
so that TRL divides by neither the accumulation steps nor a world size. alignlab's side runs the
same model on the same ids, takes log_softmax(logits / temperature) with plain torch, and calls
``policy_token_losses`` then ``aggregate``. Values and parameter gradients must agree.

The advantages: TRL computes GRPO's and RLOO's advantages inline in
``_generate_and_score_completions`` (no function to call), so the formulas are transcribed from
that source into the test, with TRL's own ``nanstd``, and compared with ``grpo`` and ``rloo``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from alignlab.losses.advantages import grpo, rloo
from alignlab.losses.policy import aggregate, policy_token_losses

trl = pytest.importorskip("trl")
pytestmark = pytest.mark.slow

TEMPERATURE = 0.7
MAX_COMPLETION = 6
EPSILON_LOW, EPSILON_HIGH = 0.2, 0.28
COMPLETION_LENGTHS = [6, 3, 5, 1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    from transformers import AutoTokenizer

    from alignlab.models.tiny import init_tiny_model

    path = init_tiny_model(tmp_path_factory.mktemp("trl_parity") / "model")
    return path, AutoTokenizer.from_pretrained(path)


def make_trainer(tiny: tuple[Path, Any], tmp_path: Path, **options: Any) -> Any:
    from datasets import Dataset

    path, tokenizer = tiny
    args = trl.GRPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", bf16=False,
                          gradient_checkpointing=False, per_device_train_batch_size=4, num_generations=2,
                          max_completion_length=MAX_COMPLETION, temperature=TEMPERATURE,
                          epsilon=EPSILON_LOW, epsilon_high=EPSILON_HIGH, **options)
    trainer = trl.GRPOTrainer(model=str(path), reward_funcs=lambda completions, **_: [0.0] * len(completions),
                              args=args, train_dataset=Dataset.from_dict({"prompt": ["Hello"] * 4}),
                              processing_class=tokenizer)
    trainer.model.eval()
    return trainer


def fixed_batch(model: Any, pad_id: int) -> dict[str, torch.Tensor]:
    """Two prompts (left-padded, as TRL pads them) × two completions each."""
    gen = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    prompt_lengths = [5, 5, 3, 3]
    prompt_ids = torch.full((4, 5), pad_id)
    prompt_mask = torch.zeros(4, 5, dtype=torch.long)
    first, second = torch.randint(4, vocab, (5,), generator=gen), torch.randint(4, vocab, (3,), generator=gen)
    for row, n in enumerate(prompt_lengths):
        prompt_ids[row, 5 - n:] = first if n == 5 else second
        prompt_mask[row, 5 - n:] = 1
    completion_mask = (torch.arange(MAX_COMPLETION)[None] < torch.tensor(COMPLETION_LENGTHS)[:, None]).long()
    completion_ids = torch.where(completion_mask.bool(), torch.randint(4, vocab, (4, MAX_COMPLETION), generator=gen), pad_id)
    logp = plain_logps(model, prompt_ids, prompt_mask, completion_ids, completion_mask).detach()
    # Old and reference policies near the current one: ratios spread over about e^{±1}, so both
    # clip bounds and δ are crossed by some tokens (checked in the test).
    old = logp + 0.5 * torch.randn(logp.shape, generator=gen)
    ref = logp + 0.4 * torch.randn(logp.shape, generator=gen)
    return {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "completion_ids": completion_ids,
            "completion_mask": completion_mask, "advantages": torch.tensor([0.9, -0.9, -1.3, 0.4]),
            "old_per_token_logps": old, "ref_per_token_logps": ref,
            "num_items_in_batch": completion_mask.sum()}


def plain_logps(model: Any, prompt_ids, prompt_mask, completion_ids, completion_mask) -> torch.Tensor:
    """log_softmax(logits / T) of each completion token, from the position before it."""
    input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
    attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits  # (B, P + T, V)
    logits = logits[:, prompt_ids.shape[1] - 1:-1] / TEMPERATURE  # (B, T, V)
    return logits.log_softmax(-1).gather(-1, completion_ids[..., None]).squeeze(-1)


CASES = [
    *[dict(loss_type=loss, beta=beta) for loss in ("grpo", "dr_grpo", "dapo", "bnpo") for beta in (0.0, 0.04)],
    dict(loss_type="grpo", beta=0.04, importance_sampling_level="sequence"),
    dict(loss_type="dapo", beta=0.0, delta=1.4),
    dict(loss_type="grpo", beta=0.04, use_bias_correction_kl=True),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_loss_and_gradients_match_grpo_trainer(case, tiny, tmp_path):
    options = {"use_bias_correction_kl": False, **case}
    trainer = make_trainer(tiny, tmp_path, **options)
    model = trainer.model
    inputs = fixed_batch(model, tiny[1].pad_token_id)

    model.zero_grad()
    theirs = trainer._compute_loss(model, inputs)
    theirs.backward()
    their_grads = [p.grad.clone() for p in model.parameters()]

    model.zero_grad()
    mask = inputs["completion_mask"].bool()
    logp = plain_logps(model, inputs["prompt_ids"], inputs["prompt_mask"], inputs["completion_ids"],
                       inputs["completion_mask"])
    per_token, metrics = policy_token_losses(
        logp, inputs["old_per_token_logps"], inputs["advantages"], mask,
        epsilon_low=EPSILON_LOW, epsilon_high=EPSILON_HIGH, delta=case.get("delta"),
        importance=case.get("importance_sampling_level", "token"), ref_logp=inputs["ref_per_token_logps"],
        beta=case["beta"], kl_weighted_by_ratio=options["use_bias_correction_kl"])
    ours = aggregate(per_token, mask, case["loss_type"], MAX_COMPLETION)
    ours.backward()
    if case.get("importance_sampling_level", "token") == "token":  # the batch exercises every branch
        ratio = (logp.detach() - inputs["old_per_token_logps"]).exp()[mask]
        assert metrics["clip_ratio/low"] > 0 and metrics["clip_ratio/high"] > 0
        assert bool((ratio > 1.4).any()) and metrics["kl"] > 0

    assert ours.item() == pytest.approx(theirs.item(), abs=1e-6)
    for (name, p), g in zip(model.named_parameters(), their_grads, strict=True):
        assert torch.allclose(p.grad, g, atol=1e-6), name


def trl_grpo_advantages(rewards: torch.Tensor, g: int, scale: str) -> torch.Tensor:
    """GRPOTrainer._generate_and_score_completions, "sum_then_normalize", transcribed."""
    nanstd = trl.trainer.utils.nanstd
    mean = torch.nanmean(rewards.view(-1, g), dim=1).repeat_interleave(g, dim=0)
    std = nanstd(rewards.view(-1, g), dim=1).repeat_interleave(g, dim=0) if scale == "group" \
        else nanstd(rewards).expand_as(rewards)
    return (rewards - mean) / (std + 1e-4)


def trl_rloo_advantages(rewards: torch.Tensor, g: int, normalize: bool) -> torch.Tensor:
    """RLOOTrainer._generate_and_score_completions, transcribed."""
    grouped = rewards.view(-1, g)
    counts = (~torch.isnan(grouped)).sum(dim=1, keepdim=True)
    baselines = ((torch.nansum(grouped, dim=1, keepdim=True) - grouped) / (counts - 1)).view(-1)
    advantages = rewards - baselines
    if normalize:
        advantages = (advantages - torch.nanmean(advantages)) / (trl.trainer.utils.nanstd(advantages) + 1e-4)
    return advantages


@pytest.mark.parametrize("g", [2, 4])
def test_advantages_match_trl_formulas(g):
    rewards = torch.randn(3 * g, generator=torch.Generator().manual_seed(g), dtype=torch.float64)
    for scale in ("group", "batch"):
        expected = trl_grpo_advantages(rewards, g, scale)
        assert torch.allclose(grpo(rewards.view(-1, g), scale=scale).reshape(-1), expected, atol=1e-12)
    for normalize in (False, True):
        expected = trl_rloo_advantages(rewards, g, normalize)
        assert torch.allclose(rloo(rewards.view(-1, g), normalize=normalize).reshape(-1), expected, atol=1e-12)
