"""Data kinds: the keys a batch asks the reference for are the keys its cache holds, placeholders
read nothing, every loss's kind is registered, and each kind names its loss inputs.

Example: ``.venv/bin/pytest tests/kinds``
"""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from alignlab.data.records import Feedback, PreferencePair, RankedResponses, SFTExample
from alignlab.data.tokenize import TokenizedCompletion, TokenizedPair, TokenizedRanked
from alignlab.errors import ConfigError
from alignlab.kinds import DATA_KINDS, get_kind
from alignlab.losses import LOSSES, get_loss
from alignlab.models.ref_cache import CachedReference, RefCache
from alignlab.models.reference import CopyReference

PAD = 0


def ids(g: torch.Generator, low: int, high: int) -> tuple[int, ...]:
    n = int(torch.randint(low, high + 1, (), generator=g))
    return tuple(torch.randint(3, 97, (n,), generator=g).tolist())


def pairs(n: int = 5) -> list[TokenizedPair]:
    g = torch.Generator().manual_seed(0)
    record = PreferencePair("q", "a", "b", margin=0.5)
    return [TokenizedPair(ids(g, 1, 5), ids(g, 1, 6), ids(g, 1, 6), None, None, record) for _ in range(n)]


def completions(n: int = 5) -> list[TokenizedCompletion]:
    g = torch.Generator().manual_seed(1)
    return [TokenizedCompletion(ids(g, 1, 5), ids(g, 1, 6), Feedback("q", "a", label=i % 2 == 0))
            for i in range(n)]


def ranked() -> list[TokenizedRanked]:
    """Lists of 3, 2 and 3 responses: a batch of all three has a placeholder."""
    g = torch.Generator().manual_seed(2)
    out = []
    for k in (3, 2, 3):
        record = RankedResponses("q", tuple(f"r{j}" for j in range(k)), scores=tuple(float(j) for j in range(k)))
        out.append(TokenizedRanked(ids(g, 1, 5), tuple(ids(g, 1, 6) for _ in range(k)), record))
    return out


CASES = [("paired", "dpo", pairs), ("unpaired", "bco", completions), ("sft", "npo", completions),
         ("ranked", "plackett_luce", ranked)]


@pytest.mark.parametrize(("kind_name", "loss", "make"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("prefix", ["", "eval/"])
def test_every_key_a_batch_asks_for_is_in_the_cache_with_its_tokens(kind_name, loss, make, prefix) -> None:
    kind, items = get_kind(kind_name), make()
    cached = {key: (prompt, completion) for key, prompt, completion in kind.cache_sequences(items, prefix)}
    indices = list(range(len(items)))[::-1]  # another order than the cache's
    batch = kind.collate([items[i] for i in indices], indices, PAD, get_loss(loss).contract, prefix)
    sequences = batch.sequences
    assert batch.examples == len(items) and len(sequences.keys) == sequences.input_ids.shape[0]
    named = [(row, key) for row, key in enumerate(sequences.keys) if key is not None]
    assert named and all(key.startswith(prefix) for _, key in named)
    for row, key in named:
        prompt, completion = cached[key]
        length = len(prompt) + len(completion)
        assert sequences.input_ids[row, :length].tolist() == [*prompt, *completion]
        assert int(sequences.completion_mask[row].sum()) == len(completion)
    assert len({key for _, key in named}) == len(named)


def test_ranked_placeholders_have_no_key_and_read_zero_from_a_cache() -> None:
    """Lists of different lengths through a cached reference: the placeholders of the shorter
    lists are not looked up, and every real response reads what a frozen copy computes."""
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=4))
    kind, items = get_kind("ranked"), ranked()
    cache = RefCache.build(model, list(kind.cache_sequences(items)), PAD, fingerprint="c" * 64)
    batch = kind.collate(items, [0, 1, 2], PAD, get_loss("plackett_luce").contract)
    present = batch.fields["response_mask"]  # (3, 3)
    assert present.sum() == 8 and [k is None for k in batch.sequences.keys] == (~present).flatten().tolist()
    got = CachedReference(cache).logps(batch.sequences)
    expected = CopyReference(model).logps(batch.sequences)
    flat = present.flatten()
    torch.testing.assert_close(got.sum[flat], expected.sum[flat], atol=1e-5, rtol=0)
    assert got.sum[~flat].abs().max() == 0
    inputs = kind.inputs(get_loss("plackett_luce").contract, batch, got, got)
    assert inputs["policy"].shape == (3, 3) and torch.isneginf(inputs["scores"][~present]).all()


def test_unpaired_kinds_name_labels_and_mismatched_pairs() -> None:
    kind, items = get_kind("unpaired"), completions(4)
    kto = get_loss("kto").contract
    batch = kind.collate(items, [7, 3, 5, 1], PAD, kto)
    assert batch.examples == 4 and batch.sequences.input_ids.shape[0] == 8
    assert batch.sequences.keys[4:] == ("7:kl:1", "3:kl:7", "5:kl:3", "1:kl:5")  # item j, completion j-1
    assert batch.fields["labels"].tolist() == [True, False, True, False]
    assert kind.min_batch(kto) == 2 and kind.min_batch(get_loss("bco").contract) == 1
    with pytest.raises(ConfigError, match="batch_size >= 2"):
        kind.collate(items[:1], [0], PAD, kto)
    sft_items = [TokenizedCompletion(i.prompt_ids, i.completion_ids, SFTExample("q", "a")) for i in items]
    with pytest.raises(ConfigError, match="labelled completions"):
        kind.collate(sft_items, [0, 1, 2, 3], PAD, kto)


def test_reward_kind_reads_rewards_and_margins() -> None:
    kind, items = get_kind("reward"), pairs(3)
    batch = kind.collate(items, [0, 1, 2], PAD, get_loss("bradley_terry").contract)
    rewards = torch.tensor([1.0, 2.0, 3.0, -1.0, -2.0, -3.0])  # chosen first, then rejected
    inputs = kind.inputs(get_loss("bradley_terry").contract, batch, rewards, None)
    assert inputs["chosen_rewards"].tolist() == [1.0, 2.0, 3.0]
    assert inputs["rejected_rewards"].tolist() == [-1.0, -2.0, -3.0]
    assert inputs["margin"].tolist() == [0.5, 0.5, 0.5] and kind.reward_model


def test_every_loss_trains_on_a_registered_kind_or_says_it_cannot() -> None:
    for entry in LOSSES.entries():
        if entry.contract.data in DATA_KINDS:
            assert get_kind(entry.contract.data).name == entry.contract.data
        else:
            with pytest.raises(ConfigError, match="not supported yet"):
                get_kind(entry.contract.data)
