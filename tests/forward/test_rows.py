"""SFT packing into fixed-length rows (alignlab.forward.rows) against one padded row per sequence.

Best-fit decreasing against a brute-force reading of its rule; the packed forward's LogProbs,
NLL loss and gradients within 1e-5 (fp32) of the plain path on Llama (RoPE, SDPA and eager) and
GPT-2 (learned positions), multi-turn holes in the mask and LoRA included; and a counterfactual:
without the block-diagonal mask the numbers differ, so the test can tell.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from alignlab.forward import CompletionLogps, collate_sequences, split_model
from alignlab.forward.rows import best_fit_decreasing, rows_hidden, rows_layout

VOCAB = 97


def make_model(kind: str, attention: str = "sdpa") -> Any:
    torch.manual_seed(0)
    if kind == "llama":
        config = LlamaConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, intermediate_size=96, max_position_embeddings=256)
        model = LlamaForCausalLM(config)
    else:
        config = GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=256, bos_token_id=1,
                            eos_token_id=2, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        model = GPT2LMHeadModel(config)
    model.config._attn_implementation = attention
    return model.float()


def sequences(n: int, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    g = random.Random(seed)
    return [([g.randrange(1, VOCAB) for _ in range(g.randint(1, 9))],
             [g.randrange(1, VOCAB) for _ in range(g.randint(1, 14))]) for _ in range(n)]


def packed_rows(pairs: list[tuple[list[int], list[int]]], capacity: int) -> tuple[list[int], torch.Tensor]:
    """The order of the sequences (bin after bin) and each one's row, as the SFT step lays them."""
    bins = best_fit_decreasing([len(p) + len(c) for p, c in pairs], capacity)
    order = [i for b in bins for i in b]
    return order, torch.tensor([r for r, b in enumerate(bins) for _ in b])


# ---- best-fit decreasing ----------------------------------------------------------------------


def brute_force_bfd(lengths: list[int], capacity: int) -> list[list[int]]:
    """The rule read literally: longest first; the open bin with the least room that fits; ties to the older bin."""
    bins: list[list[int]] = []
    for index in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        fits = [b for b in range(len(bins)) if sum(lengths[j] for j in bins[b]) + lengths[index] <= capacity]
        if fits:
            best = min(fits, key=lambda b: (capacity - sum(lengths[j] for j in bins[b]), b))
            bins[best].append(index)
        else:
            bins.append([index])
    return bins


@pytest.mark.parametrize("seed", range(6))
def test_best_fit_decreasing_follows_its_rule_and_places_every_item_once(seed: int) -> None:
    g = random.Random(seed)
    capacity = g.choice([16, 32, 100])
    lengths = [g.randint(1, capacity) for _ in range(g.randint(1, 200))]
    bins = best_fit_decreasing(lengths, capacity)
    assert bins == brute_force_bfd(lengths, capacity)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= capacity for b in bins)


def test_best_fit_decreasing_closed_cases() -> None:
    # 7 then 6 open two bins; 5 fits neither (room 3, 4); 4 goes to the 6 (room 4, exact); 3 to the 7.
    assert best_fit_decreasing([3, 7, 5, 6, 4], 10) == [[1, 0], [3, 4], [2]]
    assert best_fit_decreasing([], 8) == []
    with pytest.raises(ValueError, match="1 items are longer than 4"):
        best_fit_decreasing([2, 5], 4)


# ---- the packed forward against the plain one -------------------------------------------------


@pytest.mark.parametrize(("kind", "attention"), [("llama", "sdpa"), ("llama", "eager"), ("gpt2", "sdpa"),
                                                 ("gpt2", "eager")])
def test_rows_give_the_plain_logps_loss_and_gradients(kind: str, attention: str) -> None:
    pairs = sequences(11, seed=1)
    order, rows = packed_rows(pairs, capacity=40)
    assert rows.max() + 1 < len(pairs)  # several sequences really share rows
    batch = collate_sequences([pairs[i] for i in order], pad_id=0)
    results = []
    for packed in (False, True):
        model = make_model(kind, attention)
        forward = CompletionLogps(model, chunk_size=5, packing=False)
        out = forward(dataclasses.replace(batch, rows=rows) if packed else batch)
        loss = -(out.sum / out.counts).sum()  # nll, per-example mean
        loss.backward()
        results.append((out, loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (plain, plain_loss, plain_grads), (packed_out, packed_loss, packed_grads) = results
    torch.testing.assert_close(packed_out.tokens, plain.tokens, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(packed_out.sum, plain.sum, atol=1e-5, rtol=1e-5)
    assert torch.equal(packed_out.counts, plain.counts)
    torch.testing.assert_close(packed_loss, plain_loss, atol=1e-5, rtol=1e-5)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(packed_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_rows_keep_multi_turn_holes_and_lora() -> None:
    from peft import LoraConfig, get_peft_model

    pairs = sequences(7, seed=2)
    order, rows = packed_rows(pairs, capacity=30)
    ordered = [pairs[i] for i in order]
    g = random.Random(3)  # some completion tokens are input only (a user turn inside the completion)
    supervised = [[g.random() < 0.6 for _ in c] for _, c in ordered]
    for flags in supervised:
        flags[0] = True
    batch = collate_sequences(ordered, pad_id=0, supervised=supervised)
    outs = []
    for packed in (False, True):
        torch.manual_seed(0)
        model = get_peft_model(make_model("llama"), LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                               init_lora_weights=False))
        out = CompletionLogps(model, packing=False)(dataclasses.replace(batch, rows=rows) if packed else batch)
        out.sum.sum().backward()
        outs.append((out.sum.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]))
    torch.testing.assert_close(outs[1][0], outs[0][0], atol=1e-5, rtol=1e-5)
    for a, b in zip(outs[1][1], outs[0][1], strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_without_the_block_mask_examples_would_see_each_other() -> None:
    """The counterfactual that makes the parity test meaningful: plain causal attention over the
    concatenated row (naive packing, positions restarting or not) changes the second sequence's
    hidden states. A 2D all-ones mask stops transformers from reading the sequences off the
    position ids."""
    pairs = sequences(2, seed=4)
    batch = collate_sequences(pairs, pad_id=0)
    layout = rows_layout(batch, torch.tensor([0, 0]))
    model = make_model("llama")
    backbone, _ = split_model(model)
    with torch.no_grad():
        masked = rows_hidden(backbone, layout)
        naive = backbone(input_ids=layout.input_ids, position_ids=layout.position_ids,
                         attention_mask=torch.ones_like(layout.input_ids),
                         use_cache=False).last_hidden_state.reshape(masked.shape)
    first = len(pairs[0][0]) + len(pairs[0][1])
    torch.testing.assert_close(naive[:first], masked[:first], atol=1e-5, rtol=1e-5)
    assert (naive[first:] - masked[first:]).abs().max() > 1e-3


def test_rows_layout_refuses_unordered_rows() -> None:
    batch = collate_sequences(sequences(3), pad_id=0)
    with pytest.raises(ValueError, match="consecutive"):
        rows_layout(batch, torch.tensor([0, 1, 0]))
    with pytest.raises(ValueError, match="2 row numbers for 3"):
        rows_layout(batch, torch.tensor([0, 0]))


def test_rows_compose_with_gradient_checkpointing_and_the_lean_layers() -> None:
    from alignlab.forward.checkpointing import enable_gradient_checkpointing

    pairs = sequences(9, seed=5)
    order, rows = packed_rows(pairs, capacity=36)
    batch = dataclasses.replace(collate_sequences([pairs[i] for i in order], pad_id=0), rows=rows)
    grads = []
    for checkpointed in (False, True):
        model = make_model("llama")
        if checkpointed:
            enable_gradient_checkpointing(model)
        model.train()
        out = CompletionLogps(model, packing=True)(batch)  # packable: the lean layers run too
        out.sum.sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, atol=1e-5, rtol=1e-4, msg=name)
