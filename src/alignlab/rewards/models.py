"""Rewards computed by models: a trained reward model's score, a process reward model's, and the
DPO implicit reward.

Example: ``reward = build_reward("reward_model(path='runs/rm/model', head='scalar_head')")``

Both tokenize (prompt, completion) exactly as training does (:class:`RecordTokenizer`: the
prompt alone, the chat template for chats, EOS once at the end of the completion), run batched
without gradients, and give None for a completion dropped by ``max_length`` (counted, never 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch

from alignlab.config import ModelConfig
from alignlab.data.records import StepwiseExample, Text
from alignlab.data.tokenize import Encoded, RecordTokenizer, TokenizeOptions, pad_id_of
from alignlab.forward import collate_sequences, eval_mode, frozen_logps, model_device, pick_device
from alignlab.models import (
    TokenScores,
    load_policy,
    load_reward_model,
    load_tokenizer,
    reward_scores,
)
from alignlab.rewards.base import Columns, Reward, Scores, register_reward
from alignlab.rewards.steps import (
    AGGREGATES,
    STEP_SEPARATOR,
    Aggregate,
    aggregate_steps,
    split_steps,
)


def encode_all(tokenizer: Any, prompts: Sequence[Text], completions: Sequence[str],
               max_length: int | None) -> list[Encoded | None]:
    """Token ids of every (prompt, completion) as training sees them; None where dropped."""
    encoder = RecordTokenizer(tokenizer, TokenizeOptions(max_length=max_length, completion_overflow="drop"))
    return [encoder.encode(p, c) for p, c in zip(prompts, completions, strict=True)]


def batched(encoded: list[Encoded | None], batch_size: int) -> list[list[int]]:
    """Indices of the encodable items in batches, longest first (little padding)."""
    order = sorted((i for i, e in enumerate(encoded) if e is not None),
                   key=lambda i: -(len(encoded[i].prompt_ids) + len(encoded[i].completion_ids)))  # type: ignore[union-attr]
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


@register_reward("reward_model", family="model",
                 summary="a reward model's score: sequence classification (1 label) or an LM with a scalar head",
                 source="Ouyang et al. 2022, Training language models to follow instructions with human "
                        "feedback, arXiv 2203.02155 (Bradley-Terry reward models)")
class RewardModelReward(Reward):
    """The score of a reward model (e.g. one trained with `alignlab train` and loss bradley_terry)."""

    def __init__(self, path: str, head: Literal["sequence_classification", "scalar_head"] = "sequence_classification",
                 batch_size: int = 16, max_length: int | None = 1024, device: str = "auto",
                 trust_remote_code: bool = False) -> None:
        _check(1.0, batch_size)
        config = ModelConfig(name_or_path=path, reward_head=head, trust_remote_code=trust_remote_code)
        tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code)
        model = load_reward_model(config, pick_device(device), tokenizer)
        self.setup(model, tokenizer, batch_size, max_length)

    @classmethod
    def from_model(cls, model: torch.nn.Module, tokenizer: Any, batch_size: int = 16,
                   max_length: int | None = 1024) -> RewardModelReward:
        """A reward from a reward model already in memory."""
        reward = cls.__new__(cls)
        reward.setup(model, tokenizer, batch_size, max_length)
        reward.name = "reward_model"
        return reward

    def setup(self, model: torch.nn.Module, tokenizer: Any, batch_size: int, max_length: int | None) -> None:
        _check(1.0, batch_size)
        self.model, self.tokenizer, self.batch_size, self.max_length = model, tokenizer, batch_size, max_length

    def score(self, prompts: Sequence[Text], completions: Sequence[str], columns: Columns) -> Scores:
        encoded = encode_all(self.tokenizer, prompts, completions, self.max_length)
        scores: Scores = [None] * len(encoded)
        device, pad = model_device(self.model), pad_id_of(self.tokenizer)
        with torch.no_grad(), eval_mode(self.model):
            for rows in batched(encoded, self.batch_size):
                batch = collate_sequences([(encoded[i].prompt_ids, encoded[i].completion_ids) for i in rows],  # type: ignore[union-attr]
                                          pad).to(device)
                values = reward_scores(self.model, batch.input_ids, batch.attention_mask.long())  # (N,)
                for i, value in zip(rows, values.tolist(), strict=True):
                    scores[i] = value
        return scores


@register_reward("dpo_implicit", family="model",
                 summary="β·(log π(y|x) − log π_ref(y|x)), summed or per-token mean, from a policy and its reference",
                 source="Rafailov et al. 2023, Direct Preference Optimization, arXiv 2305.18290, Eq. 5")
class ImplicitReward(Reward):
    """The reward a DPO-trained policy implies: r(x, y) = β·log(π(y|x) / π_ref(y|x)), up to a
    per-prompt constant (so it ranks completions of one prompt, not prompts). ``normalize=True``
    uses per-token mean log-probs (the length-normalised form of SimPO/LN-DPO)."""

    def __init__(self, policy: str, reference: str, beta: float = 0.1, normalize: bool = False,
                 batch_size: int = 16, max_length: int | None = 1024, device: str = "auto",
                 chunk_size: int = 1024) -> None:
        _check(beta, batch_size)  # before two models are loaded
        target = pick_device(device)
        tokenizer = load_tokenizer(policy)
        self.setup(load_policy(ModelConfig(name_or_path=policy), target),
                   load_policy(ModelConfig(name_or_path=reference), target), tokenizer, beta, normalize,
                   batch_size, max_length, chunk_size)

    @classmethod
    def from_models(cls, policy: torch.nn.Module, reference: torch.nn.Module, tokenizer: Any, beta: float = 0.1,
                    normalize: bool = False, batch_size: int = 16, max_length: int | None = 1024,
                    chunk_size: int = 1024) -> ImplicitReward:
        """The implicit reward of models already in memory."""
        reward = cls.__new__(cls)
        reward.setup(policy, reference, tokenizer, beta, normalize, batch_size, max_length, chunk_size)
        reward.name = "dpo_implicit"
        return reward

    def setup(self, policy: Any, reference: Any, tokenizer: Any, beta: float, normalize: bool,
              batch_size: int, max_length: int | None, chunk_size: int) -> None:
        _check(beta, batch_size)
        self.policy, self.reference, self.tokenizer = policy, reference, tokenizer
        self.beta, self.normalize, self.batch_size = beta, normalize, batch_size
        self.max_length, self.chunk_size = max_length, chunk_size

    def score(self, prompts: Sequence[Text], completions: Sequence[str], columns: Columns) -> Scores:
        encoded = encode_all(self.tokenizer, prompts, completions, self.max_length)
        scores: Scores = [None] * len(encoded)
        pad = pad_id_of(self.tokenizer)
        for rows in batched(encoded, self.batch_size):
            batch = collate_sequences([(encoded[i].prompt_ids, encoded[i].completion_ids) for i in rows], pad)  # type: ignore[union-attr]
            policy = frozen_logps(self.policy, batch, self.chunk_size)
            reference = frozen_logps(self.reference, batch, self.chunk_size)
            pick = (lambda lp: lp.mean) if self.normalize else (lambda lp: lp.sum)
            values = self.beta * (pick(policy).double().cpu() - pick(reference).double().cpu())  # (N,)
            for i, value in zip(rows, values.tolist(), strict=True):
                scores[i] = value
        return scores


@register_reward("prm", family="model",
                 summary="a process reward model's solution score: each step's probability of being correct "
                         "(a scalar head at the step's end), aggregated by min, prod or last",
                 source="Lightman et al. 2023, Let's Verify Step by Step, arXiv 2305.20050; Sun et al. 2024, "
                        "Easy-to-Hard Generalization, arXiv 2403.09472 (min aggregation)")
class ProcessRewardModel(Reward):
    """The score of a process reward model trained with ``alignlab train`` and loss prm_bce: the
    completion is split into steps at ``separator`` (:func:`~alignlab.rewards.steps.split_steps`),
    tokenized as training tokenized stepwise data (each step and the separator on their own), and
    each step's probability σ(z) is read at its last token; the solution's score is their
    ``aggregate`` (min: Sun et al.'s default; prod: Lightman et al.'s). A completion with no step, or
    longer than ``max_length``, gets None (unscorable, counted), never 0."""

    def __init__(self, path: str, aggregate: Aggregate = "min", separator: str = STEP_SEPARATOR,
                 batch_size: int = 16, max_length: int | None = 1024, device: str = "auto",
                 trust_remote_code: bool = False) -> None:
        _check(1.0, batch_size)
        config = ModelConfig(name_or_path=path, reward_head="scalar_head", trust_remote_code=trust_remote_code)
        tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code)
        self.setup(load_reward_model(config, pick_device(device), tokenizer), tokenizer, aggregate, separator,
                   batch_size, max_length)

    @classmethod
    def from_model(cls, model: torch.nn.Module, tokenizer: Any, aggregate: Aggregate = "min",
                   separator: str = STEP_SEPARATOR, batch_size: int = 16,
                   max_length: int | None = 1024) -> ProcessRewardModel:
        """A process reward from a scalar-head model already in memory."""
        reward = cls.__new__(cls)
        reward.setup(model, tokenizer, aggregate, separator, batch_size, max_length)
        reward.name = "prm"
        return reward

    def setup(self, model: torch.nn.Module, tokenizer: Any, aggregate: str, separator: str, batch_size: int,
              max_length: int | None) -> None:
        _check(1.0, batch_size)
        if aggregate not in AGGREGATES:
            raise ValueError(f"prm: unknown aggregate {aggregate!r}; use {', '.join(AGGREGATES)}")
        self.scores_of = TokenScores(model)  # refuses a model without a scalar head
        self.model, self.tokenizer, self.aggregate, self.separator = model, tokenizer, aggregate, separator
        self.batch_size = batch_size
        self.encoder = RecordTokenizer(tokenizer, TokenizeOptions(max_length=max_length, completion_overflow="drop",
                                                                  step_separator=separator))

    def step_probabilities(self, prompts: Sequence[Text], completions: Sequence[str]) -> list[list[float] | None]:
        """Each completion's steps' probabilities of being correct; None where it cannot be scored."""
        items: list[Any] = []
        for prompt, completion in zip(prompts, completions, strict=True):
            steps = split_steps(completion, self.separator)
            items.append(self.encoder(StepwiseExample(prompt, steps, [0.0] * len(steps))) if steps else None)
        out: list[list[float] | None] = [None] * len(items)
        order = sorted((i for i, item in enumerate(items) if item is not None),
                       key=lambda i: -(len(items[i].prompt_ids) + len(items[i].completion_ids)))
        device, pad = model_device(self.model), pad_id_of(self.tokenizer)
        with torch.no_grad(), eval_mode(self.model):
            for start in range(0, len(order), self.batch_size):
                rows = order[start:start + self.batch_size]
                batch = collate_sequences([(items[i].prompt_ids, items[i].completion_ids) for i in rows], pad)
                logits = self.scores_of(batch.to(device)).double().cpu()  # (N, L)
                for row, i in enumerate(rows):
                    at = [len(items[i].prompt_ids) + end for end in items[i].step_ends]
                    out[i] = torch.sigmoid(logits[row, at]).tolist()
        return out

    def score(self, prompts: Sequence[Text], completions: Sequence[str], columns: Columns) -> Scores:
        return [None if steps is None else aggregate_steps(steps, self.aggregate)  # type: ignore[arg-type]
                for steps in self.step_probabilities(prompts, completions)]


def _check(beta: float, batch_size: int) -> None:
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
