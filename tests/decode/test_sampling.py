"""The sampling engine: seeded determinism, EOS, greedy, truncation, and agreement with scoring.

Example: ``pytest tests/decode/test_sampling.py``
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM

from alignlab.decode import SamplingOptions, sample, score
from alignlab.decode.cost import Cost
from alignlab.models.tiny import init_tiny_model

EOS, PAD, BOS = 1, 2, 0  # the tiny tokenizer's ids; asserted in the fixture


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return init_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture()
def model(tiny_dir: Path) -> Any:
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    config = model.generation_config
    assert (config.eos_token_id, config.pad_token_id, config.bos_token_id) == (EOS, PAD, BOS)
    return model.eval()


@pytest.fixture()
def peaked(model: Any) -> Any:
    """The tiny model with its output layer scaled ×20: next-token entropy ≈ 3.5 nats instead
    of ≈ log 512, so that frequencies are large enough to test."""
    with torch.no_grad():
        model.lm_head.weight.mul_(20)
    return model


PROMPTS = [[BOS, 40, 41, 42, 43], [BOS], [BOS, 7, 8]]


def _sample(model: Any, prompts: list[list[int]], n: int, **options: Any) -> Any:
    return sample(model, prompts, n, SamplingOptions(**options), eos_id=EOS, pad_id=PAD)


def _next_logps(model: Any, ids: list[int]) -> torch.Tensor:
    """log softmax of the next-token logits after ``ids``, float64, from a plain forward."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, -1]
    return torch.log_softmax(logits.double(), -1)


def test_same_seed_repeats_and_another_seed_does_not(model: Any) -> None:
    a = _sample(model, PROMPTS, 3, max_new_tokens=8, seed=5)
    b = _sample(model, PROMPTS, 3, max_new_tokens=8, seed=5)
    c = _sample(model, PROMPTS, 3, max_new_tokens=8, seed=6)
    assert a == b
    assert a != c
    assert [len(ys) for ys in a] == [3, 3, 3]
    assert len({y for ys in a for y in ys}) == 9  # near-uniform over 512 ids: all distinct


def test_samples_depend_on_seed_prompt_and_index_only(model: Any) -> None:
    """Sample j of prompt i is seeded by (seed, i, j): not by batch size, neighbours or n."""
    reference = _sample(model, PROMPTS, 4, max_new_tokens=6, seed=1, batch_size=3)
    assert _sample(model, PROMPTS, 4, max_new_tokens=6, seed=1, batch_size=1) == reference
    assert _sample(model, PROMPTS, 4, max_new_tokens=6, seed=1, batch_size=2) == reference
    assert [ys[:2] for ys in reference] == _sample(model, PROMPTS, 2, max_new_tokens=6, seed=1)
    # The same prompt in another position is another stream; the prompt list's prefix repeats.
    assert _sample(model, PROMPTS[:2], 4, max_new_tokens=6, seed=1) == reference[:2]


def test_greedy_equals_step_by_step_argmax_without_cache_or_padding(model: Any) -> None:
    """Temperature 0 is greedy; with the KV cache and left padding it must pick what a plain
    forward of the unpadded sequence ranks first at every step."""
    got = _sample(model, PROMPTS, 1, max_new_tokens=5, temperature=0.0, batch_size=3)
    for prompt, (completion,) in zip(PROMPTS, got, strict=True):
        ids = list(prompt)
        for _ in range(5):
            ids.append(int(_next_logps(model, ids).argmax()))
            if ids[-1] == EOS:
                break
        assert completion == tuple(ids[len(prompt):])
    with pytest.raises(ValueError, match="greedy"):
        _sample(model, PROMPTS, 2, temperature=0.0)


def test_top_k_1_and_tiny_top_p_are_greedy(peaked: Any) -> None:
    greedy = _sample(peaked, PROMPTS, 1, max_new_tokens=5, temperature=0.0)
    for seed in (0, 1):
        assert _sample(peaked, PROMPTS, 1, max_new_tokens=5, top_k=1, seed=seed) == greedy
        assert _sample(peaked, PROMPTS, 1, max_new_tokens=5, top_p=1e-6, seed=seed) == greedy


def test_top_k_keeps_to_the_k_likeliest_first_tokens(peaked: Any) -> None:
    top3 = set(_next_logps(peaked, PROMPTS[0]).topk(3).indices.tolist())
    (ys,) = _sample(peaked, PROMPTS[:1], 200, max_new_tokens=1, top_k=3, temperature=2.0)
    assert {y[0] for y in ys} == top3


def test_eos_ends_a_completion_and_is_kept(model: Any) -> None:
    """With 64 of 512 ids counted as EOS (≈ 1/8 of the mass per step), some samples stop early
    and some reach the limit; an EOS only ever comes last."""
    stops = list(range(100, 164))
    got = sample(model, PROMPTS, 16, SamplingOptions(max_new_tokens=6, seed=2), eos_id=stops,
                 pad_id=PAD)
    flat = [y for ys in got for y in ys]
    ended = [y for y in flat if y[-1] in stops]
    assert 0 < len(ended) < len(flat)
    for y in flat:
        assert all(t not in stops for t in y[:-1])
        assert len(y) == 6 or y[-1] in stops
        assert 1 <= len(y) <= 6


def test_eos_equal_to_pad_cuts_at_the_first_eos(model: Any) -> None:
    """Greedy run to 6 tokens; calling its 3rd token EOS (and pad) must give the first 3."""
    (full,), *_ = _sample(model, PROMPTS, 1, max_new_tokens=6, temperature=0.0)
    stop = full[2]
    assert stop not in full[:2]
    got = sample(model, PROMPTS[:1], 1, SamplingOptions(max_new_tokens=6, temperature=0.0),
                 eos_id=stop, pad_id=stop)
    assert got == [[full[:3]]]


CHI2_999 = {11: 31.26, 23: 49.73}
"""99.9% quantiles of the chi-square distribution, by degrees of freedom."""


def _pearson(draws: list[int], p: torch.Tensor) -> tuple[float, float, int]:
    """(Pearson's chi-square over the tokens with p > 1% and one bin for the rest; z of the
    likeliest token; number of bins − 1). Under the null the first is χ²(bins − 1) and the
    second standard normal, up to the normal approximation of the binomial."""
    n = len(draws)
    counts = torch.bincount(torch.tensor(draws), minlength=len(p)).double()
    common = p > 0.01
    observed = torch.cat([counts[common], counts[~common].sum().view(1)])
    expected = n * torch.cat([p[common], p[~common].sum().view(1)])
    top = int(p.argmax())
    z = (counts[top] / n - p[top]) / (p[top] * (1 - p[top]) / n).sqrt()
    return float(((observed - expected) ** 2 / expected).sum()), float(z), len(observed) - 1


def test_first_token_frequencies_match_the_softmax(peaked: Any) -> None:
    """Temperature 1: the counts of the first token over N draws are Multinomial(N, p), p the
    model's softmax. The likeliest token lies within 3 standard errors sqrt(p(1−p)/N), and
    Pearson's statistic over the 23 tokens with p > 1% plus the rest is below χ²₂₃'s 99.9%
    quantile. (Testing every token at 3 SE would fail by chance about once in 15 seeds.)"""
    n = 3000
    (ys,) = _sample(peaked, PROMPTS[:1], n, max_new_tokens=1, seed=3)
    statistic, z, df = _pearson([y[0] for y in ys], _next_logps(peaked, PROMPTS[0]).exp())
    assert df == 23
    assert abs(z) < 3
    assert statistic < CHI2_999[df]


def test_temperature_sharpens_to_the_softmax_of_logits_over_t(peaked: Any) -> None:
    """At T = 0.5 the draws follow softmax(logits / 0.5) ∝ p² (11 tokens above 1%), not p."""
    n = 3000
    (ys,) = _sample(peaked, PROMPTS[:1], n, max_new_tokens=1, seed=4, temperature=0.5)
    p = torch.softmax(2 * _next_logps(peaked, PROMPTS[0]), -1)
    statistic, z, df = _pearson([y[0] for y in ys], p)
    assert df == 11
    assert abs(z) < 3
    assert statistic < CHI2_999[df]
    untempered, _, _ = _pearson([y[0] for y in ys], _next_logps(peaked, PROMPTS[0]).exp())
    assert untempered > 10 * CHI2_999[23]


def test_score_is_the_log_prob_the_model_assigns_to_each_sample(peaked: Any) -> None:
    """score() sums per-token log-probs of a plain forward, in sample() order, whatever the
    length sorting inside."""
    got = _sample(peaked, PROMPTS, 3, max_new_tokens=5, seed=7)
    scored = score(peaked, PROMPTS, got, PAD, batch_size=4)
    k = 0
    for i, (prompt, ys) in enumerate(zip(PROMPTS, got, strict=True)):
        for j, y in enumerate(ys):
            ids = list(prompt) + list(y)
            direct = sum(float(_next_logps(peaked, ids[:t])[ids[t]])
                         for t in range(len(prompt), len(ids)))
            assert (int(scored.prompt_index[k]), int(scored.sample_index[k])) == (i, j)
            assert int(scored.counts[k]) == len(y)
            assert float(scored.sum[k]) == pytest.approx(direct, abs=1e-4)
            assert float(scored.mean[k]) == pytest.approx(direct / len(y), abs=1e-4)
            k += 1
    assert k == len(scored.sum) == 9


def test_mode_and_generation_config_are_restored(model: Any) -> None:
    config = model.generation_config
    model.train()
    _sample(model, PROMPTS, 2, max_new_tokens=2)
    score(model, PROMPTS, [[(5,)], [], [(6, 7)]], PAD)
    assert model.training
    assert model.generation_config is config
    model.eval()
    _sample(model, PROMPTS, 2, max_new_tokens=2)
    assert not model.training


def test_a_checkpoint_generation_config_does_not_change_the_distribution(model: Any) -> None:
    """A repetition penalty or suppressed tokens in the model's generation config must not leak
    into sampling, or samples would no longer follow the model that score() evaluates."""
    plain = _sample(model, PROMPTS, 2, max_new_tokens=6, seed=9)
    model.generation_config.repetition_penalty = 5.0
    model.generation_config.suppress_tokens = [y[0] for ys in plain for y in ys]
    assert _sample(model, PROMPTS, 2, max_new_tokens=6, seed=9) == plain


@pytest.mark.parametrize(
    ("options", "n", "message"),
    [
        (SamplingOptions(temperature=-1.0), 1, "temperature"),
        (SamplingOptions(top_p=0.0), 1, "top_p"),
        (SamplingOptions(top_k=-1), 1, "top_k"),
        (SamplingOptions(max_new_tokens=0), 1, "max_new_tokens"),
        (SamplingOptions(), 0, "at least 1"),
    ],
)
def test_bad_options_are_refused(model: Any, options: SamplingOptions, n: int,
                                 message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sample(model, PROMPTS, n, options, eos_id=EOS, pad_id=PAD)


def test_an_empty_prompt_is_refused(model: Any) -> None:
    with pytest.raises(ValueError, match="BOS"):
        _sample(model, [[BOS], []], 1)


@pytest.mark.parametrize("options", [
    dict(max_new_tokens=7, seed=3),
    dict(max_new_tokens=5, seed=4, top_k=20, temperature=0.7),
    dict(max_new_tokens=6, seed=5, top_p=0.5, batch_size=2),
    dict(max_new_tokens=4, temperature=0.0),
])
def test_a_shared_prompt_encoding_gives_the_samples_of_generate_on_n_copies(peaked: Any, options: dict) -> None:
    """The fast path (each prompt encoded once, its KV cache repeated) against the plain one
    (``model.generate`` on n copies), token for token, with EOS stopping rows at different steps."""
    n = 1 if options.get("temperature") == 0.0 else 5
    stops = list(range(100, 164))
    shared, plain = Cost(), Cost()
    fast = sample(peaked, PROMPTS, n, SamplingOptions(**options), eos_id=stops, pad_id=PAD, cost=shared)
    slow = sample(peaked, PROMPTS, n, SamplingOptions(**options, share_prompt=False), eos_id=stops, pad_id=PAD,
                  cost=plain)
    assert fast == slow
    assert shared.tokens_generated == plain.tokens_generated == sum(len(y) for ys in fast for y in ys)
    batches = -(-len(PROMPTS) // options.get("batch_size", 16))
    assert batches <= shared.forward_passes <= batches * options["max_new_tokens"]


def test_streams_and_first_sample_continue_the_same_random_streams(model: Any) -> None:
    """Samples 2..3 of a prompt drawn later, alone, are samples 2..3 of the one call."""
    whole = _sample(model, PROMPTS, 4, max_new_tokens=5, seed=9)
    later = sample(model, [PROMPTS[2]], 2, SamplingOptions(max_new_tokens=5, seed=9), eos_id=EOS, pad_id=PAD,
                   streams=[2], first_sample=2)
    assert later == [whole[2][2:]]
    with pytest.raises(ValueError, match="3 prompts but 1 stream"):
        sample(model, PROMPTS, 1, SamplingOptions(), eos_id=EOS, pad_id=PAD, streams=[0])
