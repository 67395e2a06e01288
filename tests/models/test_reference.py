"""Reference modes (copy, adapters off, cache) and the persistent reference cache.

Example: ``pytest tests/models/test_reference.py``
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

from alignlab import files
from alignlab.errors import AlignlabError
from alignlab.files import sha256_file
from alignlab.forward import SequenceBatch, collate_sequences, sequence_logps
from alignlab.logprobs import LogProbs
from alignlab.models import ref_cache
from alignlab.models.ref_cache import (
    CachedReference,
    RefCache,
    RefCacheError,
    checksum_file,
    fingerprint,
    get_or_build,
    weights_fingerprint,
)
from alignlab.models.reference import AdapterReference, CopyReference, Reference

PAD = 0
SETTINGS = {"precision": "fp32"}


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    """Random weights; attention dropout on, so that a reference run in train mode would show."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=257, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
        attention_dropout=0.2, pad_token_id=PAD, bos_token_id=1, eos_token_id=2,
    )
    return LlamaForCausalLM(config)


def make_sequences(pairs: int = 6, seed: int = 0) -> list[tuple[str, list[int], list[int]]]:
    """(key, prompt, completion) like collate_pairs: every chosen, then every rejected."""
    g = torch.Generator().manual_seed(seed)

    def ids(low: int, high: int) -> list[int]:
        n = int(torch.randint(low, high + 1, (), generator=g))
        return torch.randint(3, 257, (n,), generator=g).tolist()

    rows = [(ids(1, 6), ids(1, 9), ids(1, 9)) for _ in range(pairs)]
    return [(f"{i}:chosen", p, c) for i, (p, c, _) in enumerate(rows)] + [
        (f"{i}:rejected", p, r) for i, (p, _, r) in enumerate(rows)
    ]


def collate(seqs: list[tuple[str, list[int], list[int]]], weights: bool = False) -> SequenceBatch:
    """The batch of ``seqs``, each row named by its key."""
    g = torch.Generator().manual_seed(1)
    token_weights = [torch.rand(len(c), generator=g).tolist() for _, _, c in seqs]
    return collate_sequences([(p, c) for _, p, c in seqs], PAD, token_weights if weights else None,
                             keys=[key for key, _, _ in seqs])


def assert_same(got: LogProbs, expected: LogProbs, atol: float = 1e-6) -> None:
    """Equal up to float32 rounding: batches of another composition pack differently, so sums
    over tens of tokens may move in their 7th significant digit."""
    for field in ("sum", "mean", "tokens", "counts"):
        a, b = getattr(got, field), getattr(expected, field)
        if b is None:
            assert a is None, field
        else:
            torch.testing.assert_close(a, b, atol=atol, rtol=1e-6, msg=field)


@torch.no_grad()
def eval_logps(model: Any, batch: SequenceBatch) -> LogProbs:
    training = model.training
    model.eval()
    try:
        return sequence_logps(model, batch)
    finally:
        model.train(training)


def sgd_step(model: Any, batch: SequenceBatch, lr: float = 0.5) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr)
    model.train()
    (-sequence_logps(model, batch).sum.sum()).backward()
    optimizer.step()
    optimizer.zero_grad()


def test_copy_reference_is_frozen_and_does_not_move_with_the_policy() -> None:
    policy = tiny_llama()
    batch = collate(make_sequences())
    reference = CopyReference(policy, chunk_size=5)
    assert isinstance(reference, Reference)
    initial = eval_logps(policy, batch)
    before = reference.logps(batch)
    assert_same(before, initial)
    assert not before.sum.requires_grad
    assert not reference.model.training
    assert not any(p.requires_grad for p in reference.model.parameters())

    sgd_step(policy, batch)
    assert (eval_logps(policy, batch).sum - initial.sum).abs().max() > 1e-2  # the policy moved
    after = reference.logps(batch)
    assert torch.equal(after.sum, before.sum) and torch.equal(after.tokens, before.tokens)
    assert reference.forward_sequences == 2 * len(batch.keys)
    with pytest.raises(ValueError, match="keys"):
        dataclasses.replace(batch, keys=batch.keys[:-1])


def lora_policy() -> tuple[Any, LlamaForCausalLM]:
    """A LoRA policy (q_proj, v_proj) trained one step, and a plain copy of its base model."""
    base = tiny_llama()
    plain = copy.deepcopy(base)
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, target_modules=["q_proj", "v_proj"])
    policy = get_peft_model(base, config)
    sgd_step(policy, collate(make_sequences()))
    lora_b = [p for n, p in policy.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # adapters are non-zero
    return policy, plain


def test_adapter_reference_is_the_base_model_and_restores_modes() -> None:
    policy, plain = lora_policy()
    batch = collate(make_sequences(), weights=True)
    expected = eval_logps(plain, batch)
    with_adapters = eval_logps(policy, batch)
    assert (with_adapters.sum - expected.sum).abs().max() > 1e-3

    policy.train()
    frozen_part = policy.get_base_model().model.layers[0].mlp
    frozen_part.eval()  # a module kept in eval mode on purpose must stay so
    reference = AdapterReference(policy, chunk_size=3)
    got = reference.logps(batch)
    assert_same(got, expected)
    assert not got.sum.requires_grad
    assert reference.forward_sequences == len(batch.keys)
    assert policy.training and policy.get_base_model().model.layers[1].self_attn.training
    assert not frozen_part.training
    assert_same(eval_logps(policy, batch), with_adapters)  # adapters are back on

    with pytest.raises(AlignlabError, match="peft"):
        AdapterReference(plain)


def test_cache_built_from_adapter_reference_equals_base_model() -> None:
    policy, plain = lora_policy()
    seqs = make_sequences()
    fp = fingerprint(weights_fingerprint(plain), None, seqs, SETTINGS)
    assert weights_fingerprint(policy, without_adapters=True) == weights_fingerprint(plain)
    assert weights_fingerprint(policy) != weights_fingerprint(plain)
    via_adapters = RefCache.build(AdapterReference(policy), seqs, PAD, fingerprint=fp)
    via_plain = RefCache.build(plain, seqs, PAD, fingerprint=fp)
    torch.testing.assert_close(via_adapters.values, via_plain.values, atol=1e-6, rtol=0)
    assert torch.equal(via_adapters.offsets, via_plain.offsets)
    assert policy.training  # build restored the policy's mode


def test_cached_reference_matches_copy_in_another_batch() -> None:
    model = tiny_llama()
    model.train()
    seqs = make_sequences()
    fp = fingerprint(weights_fingerprint(model), None, seqs, SETTINGS)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    cache = RefCache.build(model, seqs, PAD, fingerprint=fp, batch_size=3, chunk_size=5)
    assert model.training and not any(p.grad is not None for p in model.parameters())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert len(cache) == len(seqs) and cache.keys == [k for k, _, _ in seqs]

    # Another composition and order than the build's, with token weights.
    other = [seqs[i] for i in (9, 2, 11, 0, 5, 6)]
    batch = collate(other, weights=True)
    expected = CopyReference(model).logps(batch)
    cached = CachedReference(cache)
    assert isinstance(cached, Reference)
    assert_same(cached.logps(batch), expected)
    assert cached.forward_sequences == 0

    wrong = [(key, p, c + [7]) if i == 2 else (key, p, c) for i, (key, p, c) in enumerate(other)]
    with pytest.raises(AlignlabError, match="not for this tokenization"):
        cached.logps(collate(wrong))
    with pytest.raises(AlignlabError, match="no sequence '99:chosen'"):
        cached.logps(dataclasses.replace(batch, keys=("99:chosen", *batch.keys[1:])))
    with pytest.raises(ValueError, match="no keys"):
        cached.logps(dataclasses.replace(batch, keys=None))


def test_get_or_build_hits_the_second_time(tmp_path: Path) -> None:
    model = tiny_llama()
    seqs = make_sequences()
    fp = fingerprint(weights_fingerprint(model), None, seqs, SETTINGS)
    calls = []

    def build() -> RefCache:
        calls.append(1)
        return RefCache.build(model, seqs, PAD, fingerprint=fp)

    first, hit = get_or_build(tmp_path, fp, build)
    assert not hit and len(calls) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{fp}.safetensors", f"{fp}.sha256"]
    second, hit = get_or_build(tmp_path, fp, build)
    assert hit and len(calls) == 1
    assert second.keys == first.keys and second.created == first.created
    assert torch.equal(second.values, first.values) and torch.equal(second.offsets, first.offsets)

    batch = collate(seqs[3:9])
    reference = CachedReference(second)
    assert_same(reference.logps(batch), CopyReference(model).logps(batch))
    assert reference.forward_sequences == 0

    changed = [seqs[0], (seqs[1][0], seqs[1][1], [*seqs[1][2][:-1], 5]), *seqs[2:]]
    fp2 = fingerprint(weights_fingerprint(model), None, changed, SETTINGS)
    assert fp2 != fp
    rebuild = lambda: RefCache.build(model, changed, PAD, fingerprint=fp2)  # noqa: E731
    _, hit = get_or_build(tmp_path, fp2, rebuild)
    assert not hit


def test_fingerprint_covers_data_tokenizer_weights_and_settings(bpe_tokenizer: Any) -> None:
    model = tiny_llama()
    weights = weights_fingerprint(model)
    seqs = make_sequences()
    base = fingerprint(weights, bpe_tokenizer, seqs, SETTINGS)
    assert len(base) == 64 and int(base, 16) >= 0
    assert fingerprint(weights, bpe_tokenizer, iter(seqs), dict(SETTINGS)) == base
    # chunk_size and batch_size change float rounding only: deliberately not covered.
    assert fingerprint(weights, bpe_tokenizer, seqs, {**SETTINGS, "chunk_size": 7}) == base

    key, prompt, completion = seqs[4]
    data_changes = [
        [*seqs[:4], (key, prompt, [*completion[:-1], completion[-1] + 1]), *seqs[5:]],
        [*seqs[:4], (key, prompt[1:] or [9, *prompt], completion), *seqs[5:]],
        # the same tokens split differently between prompt and completion
        [*seqs[:4], (key, [*prompt, completion[0]], completion[1:]), *seqs[5:]],
        [*seqs[:4], ("4:other", prompt, completion), *seqs[5:]],
        [seqs[1], seqs[0], *seqs[2:]],
        seqs[:-1],
    ]
    for changed in data_changes:
        assert fingerprint(weights, bpe_tokenizer, changed, SETTINGS) != base

    extra_special = copy.deepcopy(bpe_tokenizer)
    extra_special.add_special_tokens({"additional_special_tokens": ["<|extra|>"]})
    other_pad = copy.deepcopy(bpe_tokenizer)
    other_pad.pad_token = "<|im_start|>"
    other_template = copy.deepcopy(bpe_tokenizer)
    other_template.chat_template = "{{ messages }}"
    for tokenizer in (extra_special, other_pad, other_template, None):
        assert fingerprint(weights, tokenizer, seqs, SETTINGS) != base

    moved = copy.deepcopy(model)
    with torch.no_grad():
        moved.model.layers[1].mlp.up_proj.weight[3, 4] += 1e-4
    assert fingerprint(weights_fingerprint(moved), bpe_tokenizer, seqs, SETTINGS) != base
    as_bf16 = copy.deepcopy(model).to(torch.bfloat16)
    assert weights_fingerprint(as_bf16) != weights
    assert fingerprint(weights, bpe_tokenizer, seqs, {"precision": "bf16"}) != base


class SlowTokenizer:
    """A tokenizer without a fast backend: vocab, special tokens and template are hashed."""

    is_fast = False

    def __init__(self, vocab: dict[str, int], template: str | None = None) -> None:
        self.vocab, self.chat_template = vocab, template
        self.special_tokens_map = {"eos_token": "</s>"}

    def get_vocab(self) -> dict[str, int]:
        return dict(self.vocab)


def test_fingerprint_of_a_slow_tokenizer() -> None:
    seqs = make_sequences(2)
    base = fingerprint("w", SlowTokenizer({"a": 0, "b": 1}), seqs, SETTINGS)
    assert fingerprint("w", SlowTokenizer({"b": 1, "a": 0}), seqs, SETTINGS) == base
    assert fingerprint("w", SlowTokenizer({"a": 1, "b": 0}), seqs, SETTINGS) != base
    assert fingerprint("w", SlowTokenizer({"a": 0, "b": 1}, "{{x}}"), seqs, SETTINGS) != base


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, str, Any]:
    """A cache saved under its fingerprint, and a build function that must not be called."""
    model = tiny_llama()
    seqs = make_sequences(3)
    fp = fingerprint(weights_fingerprint(model), None, seqs, SETTINGS)
    cache, _ = get_or_build(tmp_path, fp, lambda: RefCache.build(model, seqs, PAD, fingerprint=fp))

    def must_not_build() -> RefCache:
        raise AssertionError("a present cache file must never be rebuilt over")

    return tmp_path / f"{fp}.safetensors", fp, must_not_build


def test_a_flipped_byte_is_corruption_not_a_rebuild(saved: tuple[Path, str, Any]) -> None:
    path, fp, must_not_build = saved
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01  # inside the values
    path.write_bytes(bytes(data))
    with pytest.raises(RefCacheError, match=r"corrupted cache .* delete"):
        RefCache.load(path, fp)
    with pytest.raises(AlignlabError, match="corrupted cache"):
        get_or_build(path.parent, fp, must_not_build)


def test_a_missing_checksum_is_corruption(saved: tuple[Path, str, Any]) -> None:
    path, fp, must_not_build = saved
    checksum_file(path).unlink()
    with pytest.raises(RefCacheError, match="corrupted cache .*checksum file .* is missing"):
        get_or_build(path.parent, fp, must_not_build)


def test_a_file_under_another_fingerprint_is_stale(saved: tuple[Path, str, Any]) -> None:
    path, fp, must_not_build = saved
    other = "0" * 64
    path.rename(path.with_name(f"{other}.safetensors"))
    checksum_file(path).rename(path.with_name(f"{other}.sha256"))  # checksum still valid
    with pytest.raises(RefCacheError, match=f"stale cache .* built for fingerprint {fp}"):
        get_or_build(path.parent, other, must_not_build)


def test_an_unknown_format_version_is_refused(saved: tuple[Path, str, Any]) -> None:
    path, fp, must_not_build = saved
    cache = RefCache.load(path, fp)
    save_file(
        {"values": cache.values, "offsets": cache.offsets}, str(path),
        metadata={"fingerprint": fp, "keys": json.dumps(cache.keys), "format_version": "999",
                  "created": cache.created},
    )
    checksum_file(path).write_text(sha256_file(path) + "\n")
    with pytest.raises(RefCacheError, match="format version '999'"):
        get_or_build(path.parent, fp, must_not_build)


def test_writes_are_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = RefCache.build(tiny_llama(), make_sequences(2), PAD, fingerprint="a" * 64)
    target = ref_cache.cache_file(tmp_path, cache.fingerprint)
    real_replace = files.os.replace
    calls = []

    def failing_replace(src: Any, dst: Any) -> None:
        calls.append(dst)
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        cache.save(target)
    assert list(tmp_path.iterdir()) == []  # no partial file, no temp file

    def fail_second(src: Any, dst: Any) -> None:  # the checksum write is interrupted
        calls.append(dst)
        if len(calls) > 2:
            raise OSError("killed")
        real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", fail_second)
    with pytest.raises(OSError, match="killed"):
        cache.save(target)
    assert [p.name for p in tmp_path.iterdir()] == [target.name]
    with pytest.raises(RefCacheError, match="interrupted write"):
        RefCache.load(target, cache.fingerprint)

    monkeypatch.setattr(files.os, "replace", real_replace)
    target.unlink()
    cache.save(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, f"{'a' * 64}.sha256"])
    assert RefCache.load(target, cache.fingerprint).keys == cache.keys


def test_build_with_progress_through_a_reference() -> None:
    model = tiny_llama()
    seqs = [(f"{i}:{k}", p, c) for i in range(25) for k, p, c in make_sequences(6, seed=i)]
    assert len(seqs) == 300  # above the progress-bar threshold
    reference = CopyReference(model)
    cache = RefCache.build(reference, seqs, PAD, fingerprint="b" * 64, batch_size=64)
    assert reference.forward_sequences == 300
    assert cache.offsets[-1] == sum(len(c) for _, _, c in seqs)
    batch = collate(seqs[::37])
    assert_same(CachedReference(cache).logps(batch), reference.logps(batch))


def test_non_finite_reference_is_not_cached() -> None:
    model = tiny_llama()
    with torch.no_grad():
        model.lm_head.weight[5, 0] = float("nan")
    with pytest.raises(AlignlabError, match="non-finite reference log-probs"):
        RefCache.build(model, make_sequences(2), PAD, fingerprint="c" * 64)


def test_cache_file_refuses_a_path_like_fingerprint(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="64 lower-case hex"):
        ref_cache.cache_file(tmp_path, "../../etc/passwd")
