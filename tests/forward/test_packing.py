"""Prefix sharing and padding-free packing (alignlab.forward.packing) against the plain padded path.

Parity: the same LogProbs, losses and parameter gradients within 1e-5 (fp32) for pairs, K
responses, KTO's mismatched rows, token weights, empty completions, grouped-query attention and a
sliding window; and the backbone sees each shared prompt once, with no padding.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from alignlab.data.tokenize import TokenizedRanked
from alignlab.forward import (
    CompletionLogps,
    SequenceBatch,
    collate_sequences,
    packing,
    sequence_logps,
)
from alignlab.forward.packing import ATTENTION_NAME, pack, supports_packing
from alignlab.kinds.ranked import collate_responses
from alignlab.losses.dpo import dpo
from alignlab.models.ref_cache import RefCache

VOCAB = 97
SMALL = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
             intermediate_size=96, max_position_embeddings=256)


def make_model(kind: str = "llama", **extra: Any) -> Any:
    torch.manual_seed(0)
    if kind == "llama":
        model = LlamaForCausalLM(LlamaConfig(**SMALL, num_key_value_heads=2, **extra))
    elif kind == "mistral":  # a window shorter than the sequences: the window mask matters
        model = MistralForCausalLM(MistralConfig(**SMALL, num_key_value_heads=2, sliding_window=5, **extra))
    elif kind == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**SMALL, num_key_value_heads=4, **extra))
    elif kind == "qwen3":
        model = Qwen3ForCausalLM(Qwen3Config(**SMALL, num_key_value_heads=2, head_dim=16, **extra))
    else:
        raise ValueError(kind)
    return model.float()


def ids(g: torch.Generator, low: int, high: int) -> list[int]:
    n = int(torch.randint(low, high + 1, (1,), generator=g))
    return torch.randint(1, VOCAB, (n,), generator=g).tolist()


def grouped_sequences(groups: int, per_group: int, seed: int = 0, empty: bool = False) -> list[tuple[list[int], list[int]]]:
    """``groups`` prompts with ``per_group`` completions each, interleaved as collate_pairs does
    (all first completions, then all second ones ...); one completion empty when asked."""
    g = torch.Generator().manual_seed(seed)
    prompts = [ids(g, 1, 9) for _ in range(groups)]
    rows = [(prompts[i], ids(g, 1, 8)) for _ in range(per_group) for i in range(groups)]
    if empty:
        rows[1] = (rows[1][0], [])
    return rows


def both(model: Any, batch: SequenceBatch) -> tuple[Any, Any]:
    return sequence_logps(model, batch, chunk_size=7, packing=False), sequence_logps(model, batch, chunk_size=7,
                                                                                    packing=True)


def grads(model: Any, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def assert_close_logps(plain: Any, packed: Any) -> None:
    for field in ("sum", "mean", "tokens", "counts"):
        torch.testing.assert_close(getattr(packed, field), getattr(plain, field), atol=1e-5, rtol=1e-5, msg=field)


# ---- the layout ----------------------------------------------------------------------------------

def test_layout_of_one_pair_is_prompt_then_both_completions_with_restarted_positions() -> None:
    batch = collate_sequences([([5, 6, 7], [8, 9]), ([5, 6, 7], [10])], pad_id=0)
    layout = pack(batch)
    assert layout.input_ids.tolist() == [[5, 6, 7, 8, 9, 10]]
    assert layout.position_ids.tolist() == [[0, 1, 2, 3, 4, 3]]
    # 8 is predicted by the prompt's last token (packed 2), 9 by 8 (packed 3), 10 by the prompt.
    assert layout.predictors.tolist() == [2, 3, 2] and layout.targets.tolist() == [8, 9, 10]
    (group,) = layout.segments  # a pair: one call with the group's tree mask
    assert group.span == (0, 6) and group.branches.tolist() == [0, 0, 0, 1, 1, 2]
    (mask,) = layout.attention_masks()
    assert mask[5].tolist() == [True, True, True, False, False, True]  # 10 never sees 8 or 9
    assert mask[4].tolist() == [True, True, True, True, True, False]
    assert mask[1].tolist() == [True, True, False, False, False, False]
    (window,) = layout.attention_masks(sliding_window=2)
    assert window[5].tolist() == [False, False, True, False, False, True]


def test_many_long_completions_attend_in_the_split_form() -> None:
    rows = [([1, 2], [3 + k] * 6) for k in range(4)]
    layout = pack(collate_sequences(rows, pad_id=0))
    # (2 + 24)² scores as one tree would be more than twice 2² + 4·6·(2 + 6): split.
    assert [(s.span, s.keys) for s in layout.segments] == [((0, 2), ((0, 2),))] + [
        ((2 + 6 * k, 8 + 6 * k), ((0, 2), (2 + 6 * k, 8 + 6 * k))) for k in range(4)]
    masks = layout.attention_masks()
    assert masks[0] is None  # the prompt: plain causal
    assert masks[1].shape == (6, 8) and masks[1][0].tolist() == [True, True, True] + [False] * 5
    assert masks[1][5].all()
    (_, window, *_) = layout.attention_masks(sliding_window=2)
    assert window[0].tolist() == [False, True, True] + [False] * 5  # position 2 sees 1 and 2


def test_rows_without_shared_prompt_are_packed_back_to_back_without_padding() -> None:
    rows = [([1, 2], [3]), ([4, 5, 6, 7], [8, 9, 10]), ([11], [])]
    layout = pack(collate_sequences(rows, pad_id=0))
    assert layout.input_ids.tolist() == [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]] and layout.positions == 11
    assert [s.span for s in layout.segments] == [(0, 3), (3, 10), (10, 11)]
    assert all(m is None for m in layout.attention_masks())  # each row alone: plain causal


def test_attention_cost_stays_linear_in_the_number_of_completions() -> None:
    rows = grouped_sequences(groups=3, per_group=6, seed=9)
    layout = pack(collate_sequences(rows, pad_id=0))
    scores = sum(m.numel() for m in layout.attention_masks(sliding_window=10**6))
    prompts = {tuple(p) for p, _ in rows}
    split = sum(len(p) ** 2 for p in prompts) + sum(len(c) * (len(p) + len(c)) for p, c in rows)
    assert scores <= packing.TREE_COST_RATIO * split


@pytest.fixture(params=["tree", "split"])
def form(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every shared group as one tree-masked call, or every one split (both must agree)."""
    monkeypatch.setattr(packing, "TREE_COST_RATIO", float("inf") if request.param == "tree" else 0.0)
    return request.param


def test_rows_grouped_with_another_prompt_are_refused() -> None:
    batch = collate_sequences([([5, 6], [8]), ([5, 7], [9])], pad_id=0)
    wrong = SequenceBatch(batch.input_ids, batch.attention_mask, batch.completion_mask, groups=torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="prompt tokens differ"):
        pack(wrong)


def test_left_padded_rows_are_refused() -> None:
    batch = collate_sequences([([5, 6], [8]), ([5], [9])], pad_id=0)
    flipped = SequenceBatch(batch.input_ids.flip(1), batch.attention_mask.flip(1), batch.completion_mask.flip(1))
    with pytest.raises(ValueError, match="right-padded"):
        pack(flipped)


# ---- parity with the plain path ------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["llama", "mistral", "qwen2", "qwen3"])
def test_dpo_loss_and_gradients_match_the_plain_path(kind: str, form: str) -> None:
    model = make_model(kind)
    rows = grouped_sequences(groups=3, per_group=2, seed=1)
    batch = collate_sequences(rows, pad_id=0)
    assert batch.groups.tolist() == [0, 1, 2, 0, 1, 2]
    g = torch.Generator().manual_seed(2)
    ref = -torch.rand(6, generator=g) * 30

    def loss(packing: bool) -> torch.Tensor:
        lp = sequence_logps(model, batch, chunk_size=5, packing=packing)
        losses, _ = dpo(lp.sum[:3], lp.sum[3:], ref[:3], ref[3:], beta=0.1)
        return losses.mean()

    plain, packed = loss(False), loss(True)
    torch.testing.assert_close(packed, plain, atol=1e-5, rtol=0)
    expected, got = grads(model, plain), grads(model, packed)
    assert expected.keys() == got.keys() and len(got) == len(list(model.parameters()))
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-5, rtol=1e-4, msg=name)


def test_k_responses_token_weights_and_an_empty_completion_match(form: str) -> None:
    model = make_model()
    rows = grouped_sequences(groups=2, per_group=3, seed=3, empty=True)
    g = torch.Generator().manual_seed(4)
    weights = [torch.rand(len(c), generator=g).tolist() for _, c in rows]
    batch = collate_sequences(rows, pad_id=0, weights=weights)
    plain, packed = both(model, batch)
    assert_close_logps(plain, packed)
    assert packed.counts[1] == 0 and packed.sum[1] == 0
    # Token weights reach the loss as a tensor of the batch (dense DPO weighs per-token log-probs).
    w = batch.token_weights
    torch.testing.assert_close((packed.tokens * w).sum(-1), (plain.tokens * w).sum(-1), atol=1e-5, rtol=1e-5)
    expected = grads(model, ((plain.tokens * w).sum(-1) * torch.arange(6.0)).sum())
    got = grads(model, ((packed.tokens * w).sum(-1) * torch.arange(6.0)).sum())
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-5, rtol=1e-4, msg=name)


def test_ranked_batches_with_placeholders_and_kto_mismatched_rows_match(form: str) -> None:
    model = make_model()
    g = torch.Generator().manual_seed(5)
    items = [TokenizedRanked(ids(g, 2, 6), tuple(ids(g, 1, 5) for _ in range(k)), None) for k in (3, 2)]
    ranked, present = collate_responses(items, [0, 1], pad_id=0)
    assert ranked.groups.tolist() == [0, 0, 0, 1, 1, 1] and not present[1, 2]
    assert_close_logps(*both(model, ranked))
    # KTO: row j pairs prompt j with completion j-1; it shares prompt j with row j.
    prompts, completions = [ids(g, 2, 6) for _ in range(3)], [ids(g, 1, 5) for _ in range(3)]
    rows = [(p, c) for p, c in zip(prompts, completions, strict=True)]
    rows += [(prompts[j], completions[j - 1]) for j in range(3)]
    kto = collate_sequences(rows, pad_id=0)
    assert kto.groups.tolist() == [0, 1, 2, 0, 1, 2]
    assert_close_logps(*both(model, kto))


def test_reference_pass_without_gradients_and_in_eval_mode_matches() -> None:
    model = make_model("qwen2", attention_dropout=0.5)
    model.eval()
    batch = collate_sequences(grouped_sequences(groups=4, per_group=2, seed=6), pad_id=0)
    with torch.no_grad():
        plain, packed = both(model, batch)
    assert_close_logps(plain, packed)
    assert not packed.sum.requires_grad


def test_group_of_g_completions_at_a_temperature_with_entropy_matches(form: str) -> None:
    """Online RL's batch: one prompt, G completions, log-probs at the sampling temperature and
    per-token entropies, packed (prompt encoded once) as plain."""
    from alignlab.forward import CompletionLogps

    model = make_model()
    batch = collate_sequences(grouped_sequences(groups=2, per_group=4, seed=7), pad_id=0)
    plain = CompletionLogps(model, 5, packing=False, temperature=0.6, entropy=True)(batch)
    packed = CompletionLogps(model, 5, packing=True, temperature=0.6, entropy=True)(batch)
    assert_close_logps(plain, packed)
    torch.testing.assert_close(packed.entropy, plain.entropy, atol=1e-5, rtol=0)
    cold = CompletionLogps(model, 5, packing=True)(batch)
    assert not torch.allclose(cold.sum, packed.sum)  # the temperature is applied


# ---- the prompt is encoded once ------------------------------------------------------------------

def positions_through_backbone(model: Any, batch: SequenceBatch, packing: bool) -> int:
    seen: list[int] = []
    hook = model.get_input_embeddings().register_forward_hook(lambda m, args, out: seen.append(args[0].numel()))
    try:
        sequence_logps(model, batch, packing=packing)
    finally:
        hook.remove()
    return sum(seen)


@pytest.mark.parametrize("k", [2, 4])
def test_a_shared_prompt_goes_through_the_backbone_once(k: int) -> None:
    model = make_model()
    rows = grouped_sequences(groups=3, per_group=k, seed=7)
    batch = collate_sequences(rows, pad_id=0)
    prompts = {tuple(p) for p, _ in rows}
    assert len(prompts) == 3
    expected = sum(len(p) for p in prompts) + sum(len(c) for _, c in rows)
    assert positions_through_backbone(model, batch, packing=True) == expected
    # The plain path runs every prompt k times, padded to the longest row.
    assert positions_through_backbone(model, batch, packing=False) == batch.input_ids.numel() > expected


# ---- where packing applies -----------------------------------------------------------------------

def test_auto_packs_supported_models_and_keeps_the_plain_path_for_others() -> None:
    assert supports_packing(make_model()) and CompletionLogps(make_model()).packing
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=1, n_head=2, n_positions=64))
    assert not supports_packing(gpt2) and not CompletionLogps(gpt2).packing
    with pytest.raises(ValueError, match="packing is not supported for model type 'gpt2'"):
        CompletionLogps(gpt2, packing=True)


def test_the_attention_switch_is_scoped_to_the_packed_call() -> None:
    model = make_model()
    before = model.config._attn_implementation
    batch = collate_sequences(grouped_sequences(2, 2), pad_id=0)
    sequence_logps(model, batch, packing=True)
    assert model.config._attn_implementation == before != ATTENTION_NAME
    bad = SequenceBatch(batch.input_ids + VOCAB, batch.attention_mask, batch.completion_mask, groups=batch.groups)
    with pytest.raises(IndexError):  # a failing forward still restores the model's own attention
        sequence_logps(model, bad, packing=True)
    assert model.config._attn_implementation == before
    out = model(batch.input_ids[:1]).logits  # the model's own forward is untouched
    assert out.shape == (1, batch.input_ids.shape[1], VOCAB)


def test_reference_cache_built_packed_equals_the_plain_build() -> None:
    model = make_model()
    rows = grouped_sequences(groups=5, per_group=2, seed=8)
    seqs = [(f"{i % 5}:{'chosen' if i < 5 else 'rejected'}", p, c) for i, (p, c) in enumerate(rows)]
    plain = RefCache.build(model, seqs, 0, fingerprint="a" * 64, batch_size=3, packing=False)
    packed = RefCache.build(model, seqs, 0, fingerprint="a" * 64, batch_size=3, packing=True)
    assert packed.keys == plain.keys
    torch.testing.assert_close(packed.values, plain.values, atol=1e-5, rtol=1e-5)
    direct = F.log_softmax(model(torch.tensor([rows[0][0] + rows[0][1]])).logits[0].float(), -1)
    n = len(rows[0][0])
    expected = direct[n - 1:-1].gather(1, torch.tensor(rows[0][1])[:, None]).squeeze(1)
    torch.testing.assert_close(packed[seqs[0][0]], expected.detach(), atol=1e-5, rtol=1e-5)
