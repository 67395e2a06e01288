"""Completion log-probs: the chunked path against the naive full-logits path, memory, edges.

Example: ``pytest tests/test_logprobs.py``
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode  # no public equivalent sees backward

from alignlab.logprobs import LogProbs, completion_logps, reduce_token_logps

B, L, H, V = 3, 17, 32, 1000
PROMPTS = torch.tensor([4, 2, 7])
TOTALS = torch.tensor([17, 9, 12])  # completions of 13, 7 and 5 tokens


def naive(logits: Tensor, ids: Tensor, mask: Tensor) -> dict:
    """The textbook computation, position by position: token t is scored by the logits at t-1."""
    logp = torch.log_softmax(logits.float(), -1)  # (B, L, V)
    sums, counts, tokens = [], [], torch.zeros(ids.shape)
    for b in range(ids.shape[0]):
        terms = [(t, logp[b, t - 1, ids[b, t]]) for t in range(1, ids.shape[1]) if mask[b, t]]
        for t, value in terms:
            tokens[b, t] = value.detach()
        sums.append(sum((v for _, v in terms), torch.tensor(0.0)))
        counts.append(len(terms))
    out = {"sum": torch.stack(sums), "tokens": tokens, "counts": torch.tensor(counts).float()}
    out["mean"] = out["sum"] / out["counts"].clamp(min=1)
    return out


def logps_from_logits(logits: Tensor, input_ids: Tensor, completion_mask: Tensor) -> LogProbs:
    """The plain vectorised path from full (B, L, V) logits: log_softmax, then gather."""
    mask = completion_mask.bool()
    if mask[:, 0].any():
        raise ValueError("completion_mask is True at position 0")
    shifted = mask[:, 1:]  # (B, L-1)
    ids = torch.where(shifted, input_ids[:, 1:], 0)  # masked-out ids may be padding
    logp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, ids.unsqueeze(-1))
    tokens = torch.nn.functional.pad(torch.where(shifted, logp.squeeze(-1), 0.0), (1, 0))  # (B, L)
    return reduce_token_logps(tokens, mask)


def completion_mask_from_lengths(prompt_lengths: Tensor, total_lengths: Tensor, length: int,
                                 padding_side: str) -> Tensor:
    """(B, length) bool mask of the completion positions, given the unpadded lengths per row."""
    if (prompt_lengths < 1).any():
        raise ValueError("every row needs a prompt length of at least 1")
    positions = torch.arange(length)  # (L,)
    offset = length - total_lengths if padding_side == "left" else torch.zeros_like(total_lengths)
    start, end = (offset + prompt_lengths).unsqueeze(1), (offset + total_lengths).unsqueeze(1)
    return (positions >= start) & (positions < end)


def layout(padding_side: str) -> tuple[Tensor, Tensor]:
    """Random ids and the completion mask of the ragged batch, padded on the given side."""
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, V, (B, L), generator=gen)
    return ids, completion_mask_from_lengths(PROMPTS, TOTALS, L, padding_side)


def random_head(dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor, Tensor]:
    """Hidden states ~ N(0, 1) and a head whose logits are ~ N(0, 1), as a trained LM's roughly."""
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(B, L, H, generator=gen)
    weight = torch.randn(V, H, generator=gen) / H**0.5
    bias = torch.randn(V, generator=gen) * 0.1
    return hidden.to(dtype), weight.to(dtype), bias.to(dtype)


def leaves(*tensors: Tensor) -> list[Tensor]:
    return [t.detach().clone().requires_grad_(True) for t in tensors]


def test_mask_from_lengths_marks_the_completion_on_either_side() -> None:
    right = completion_mask_from_lengths(torch.tensor([2]), torch.tensor([4]), 6, "right")
    left = completion_mask_from_lengths(torch.tensor([2]), torch.tensor([4]), 6, "left")
    assert right.int().tolist() == [[0, 0, 1, 1, 0, 0]]
    assert left.int().tolist() == [[0, 0, 0, 0, 1, 1]]
    with pytest.raises(ValueError, match="prompt length"):
        completion_mask_from_lengths(torch.tensor([0]), torch.tensor([4]), 6, "right")


@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("chunk_size", [1, 3, 1024])
def test_chunked_matches_naive_values_and_gradients(padding_side: str, chunk_size: int) -> None:
    ids, mask = layout(padding_side)
    hidden, weight, bias = random_head()

    h1, w1, b1 = leaves(hidden, weight, bias)
    fast = completion_logps(h1, w1, ids, mask, bias=b1, chunk_size=chunk_size)
    h2, w2, b2 = leaves(hidden, weight, bias)
    slow = naive(h2 @ w2.T + b2, ids, mask)

    for name in ("sum", "mean", "tokens", "counts"):
        torch.testing.assert_close(getattr(fast, name), slow[name], atol=1e-5, rtol=0, msg=name)
    assert fast.counts.tolist() == [13, 7, 5]

    # A loss that touches every output, so each one's gradient is compared.
    probe = torch.tensor([1.0, -2.0, 0.5])
    for r in (vars(fast), slow):
        (probe * (r["sum"] + r["mean"])).sum().backward()
    for name, a, b in (("hidden", h1, h2), ("weight", w1, w2), ("bias", b1, b2)):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=0, msg=name)
    # Prompt and padding positions, and the last position (it predicts nothing), get no gradient.
    predicting = torch.zeros(B, L, dtype=torch.bool)
    predicting[:, :-1] = mask[:, 1:]
    assert h1.grad[~predicting].abs().max() == 0


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_logits_path_and_head_forms_agree(padding_side: str) -> None:
    ids, mask = layout(padding_side)
    hidden, weight, bias = random_head()
    slow = naive(hidden @ weight.T + bias, ids, mask)
    plain = logps_from_logits(hidden @ weight.T + bias, ids, mask)
    linear = nn.Linear(H, V)
    linear.weight.data, linear.bias.data = weight.clone(), bias.clone()
    wrapped = nn.Sequential(linear)  # any other module is called as is
    for result in (
        plain,
        completion_logps(hidden, linear, ids, mask, chunk_size=5),
        completion_logps(hidden, wrapped, ids, mask, chunk_size=5),
        completion_logps(hidden, weight, ids, mask, bias=bias, upcast=False),
    ):
        for name in ("sum", "mean", "tokens"):
            torch.testing.assert_close(getattr(result, name), slow[name], atol=1e-5, rtol=0)


def test_bf16_head_is_computed_in_float32() -> None:
    """bf16 inputs: float32 math on the bf16 values, and a bounded distance from fp32 inputs.

    With the upcast the only difference to float32 math on the same (bf16-valued) numbers is
    the summation order: 1e-4 on sums of 5 to 13 tokens. Against the unrounded fp32 inputs, the
    bf16 rounding of hidden and weight (relative 2⁻⁹ each) moves each N(0, 1) logit by about
    2⁻⁹·√2 ≈ 3e-3 rms, so a log-prob (target logit minus logsumexp) by about 4e-3 rms and a sum
    of up to 13 independent such errors by about 1.5e-2 rms: 6e-2 is four standard deviations.
    Computing the logits in bf16 (upcast=False) adds their own rounding of 2⁻⁹ of each logit.
    """
    ids, mask = layout("right")
    hidden, weight, bias = random_head()
    exact = naive(hidden @ weight.T + bias, ids, mask)
    h16, w16, b16 = (t.bfloat16() for t in (hidden, weight, bias))
    same_values = naive(h16.float() @ w16.float().T + b16.float(), ids, mask)

    fast = completion_logps(h16, w16, ids, mask, bias=b16, chunk_size=4)
    assert fast.sum.dtype == torch.float32
    torch.testing.assert_close(fast.sum, same_values["sum"], atol=1e-4, rtol=0)
    torch.testing.assert_close(fast.sum, exact["sum"], atol=6e-2, rtol=0)
    torch.testing.assert_close(fast.mean, exact["mean"], atol=6e-2 / 5, rtol=0)

    # An enclosing autocast must not pull the head matmul back down to bf16.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = completion_logps(hidden, weight, ids, mask, bias=bias, chunk_size=4)
    torch.testing.assert_close(autocast.sum, exact["sum"], atol=1e-4, rtol=0)

    # Gradients reach bf16 leaves in their own dtype.
    h, w = leaves(h16, w16)
    completion_logps(h, w, ids, mask, chunk_size=4).sum.sum().backward()
    assert h.grad.dtype == w.grad.dtype == torch.bfloat16
    assert torch.isfinite(h.grad).all() and torch.isfinite(w.grad).all()


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_tiny_llama_matches_its_own_logits(padding_side: str) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=257,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
    )
    model = LlamaForCausalLM(config).eval()
    ids = torch.randint(0, 257, (B, L))
    mask = completion_mask_from_lengths(PROMPTS, TOTALS, L, padding_side)
    positions = torch.arange(L)
    start = L - TOTALS[:, None] if padding_side == "left" else torch.zeros(B, 1, dtype=torch.long)
    attention = ((positions >= start) & (positions < start + TOTALS[:, None])).long()
    ids = torch.where(attention.bool(), ids, 0)  # pad id 0

    hidden = model.model(input_ids=ids, attention_mask=attention).last_hidden_state
    fast = completion_logps(hidden, model.lm_head, ids, mask, chunk_size=4)
    slow = naive(model(input_ids=ids, attention_mask=attention).logits, ids, mask)
    for name in ("sum", "mean", "tokens", "counts"):
        torch.testing.assert_close(getattr(fast, name), slow[name], atol=1e-5, rtol=0, msg=name)

    fast.sum.sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    slow = naive(model(input_ids=ids, attention_mask=attention).logits, ids, mask)
    slow["sum"].sum().backward()
    for mine, theirs in zip(grads, (p.grad for p in model.parameters()), strict=True):
        torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-4)


class RowCountingHead(nn.Module):
    """A head that records how many rows each call projects."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.linear = linear
        self.rows: list[int] = []

    def forward(self, hidden: Tensor) -> Tensor:
        self.rows.append(hidden.shape[0])
        return self.linear(hidden)


def test_only_completion_positions_are_projected_in_chunks() -> None:
    ids, mask = layout("left")
    hidden, weight, _ = random_head()
    head = RowCountingHead(nn.Linear(H, V))

    with torch.no_grad():
        completion_logps(hidden, head, ids, mask, chunk_size=4)
    assert max(head.rows) <= 4
    assert sum(head.rows) == int(mask.sum()) == 25

    head.rows.clear()
    result = completion_logps(hidden.requires_grad_(), head, ids, mask, chunk_size=4)
    assert sum(head.rows) == 25
    head.rows.clear()
    result.sum.sum().backward()  # each chunk is recomputed once, chunk by chunk
    assert max(head.rows) <= 4 and sum(head.rows) == 25


class VocabSizedTensors(TorchDispatchMode):
    """Records the shape of every tensor that any op (forward or backward) makes with a V axis."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, Tensor) and V in t.shape:
                self.shapes.append(tuple(t.shape))
        return out


def test_no_logits_beyond_a_chunk_exist_or_are_kept_for_backward() -> None:
    ids, mask = layout("right")
    hidden, weight, bias = leaves(*random_head())
    saved: list[tuple[int, ...]] = []

    def pack(t: Tensor) -> Tensor:
        saved.append(tuple(t.shape))
        return t

    with VocabSizedTensors() as made:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            result = completion_logps(hidden, weight, ids, mask, bias=bias, chunk_size=3)
        result.mean.sum().backward()
    # Rows per V-sized tensor: a chunk's logits (or their gradient) have at most 3, the head
    # weight, its transpose and its gradient have H, vectors over the vocabulary 1.
    rows = {numel // V for numel in (torch.Size(s).numel() for s in made.shapes)}
    assert 3 in rows and rows <= {1, 2, 3, H}, sorted(rows)
    # Nothing with a V axis is kept for the backward: chunks are recomputed there.
    assert saved and not [s for s in saved if V in s], saved


def test_empty_completion_gives_zeros_without_nan() -> None:
    ids, mask = layout("right")
    mask[1] = False
    hidden, weight = leaves(*random_head()[:2])
    result = completion_logps(hidden, weight, ids, mask)
    assert result.counts[1] == 0 and result.sum[1] == 0 and result.mean[1] == 0
    result.mean.sum().backward()
    assert torch.isfinite(hidden.grad).all() and torch.isfinite(weight.grad).all()

    nothing = completion_logps(hidden, weight, ids, torch.zeros(B, L, dtype=torch.bool))
    assert isinstance(nothing, LogProbs) and nothing.sum.tolist() == [0.0, 0.0, 0.0]
    nothing.mean.sum().backward()  # still part of the graph

    plain = logps_from_logits(torch.randn(B, L, V), ids, mask)
    assert plain.mean[1] == 0


def test_mask_at_position_zero_or_wrong_shape_raises() -> None:
    ids, mask = layout("left")
    hidden, weight, _ = random_head()
    mask[0] = True
    with pytest.raises(ValueError, match=r"position 0 in rows \[0\].*previous"):
        completion_logps(hidden, weight, ids, mask)
    with pytest.raises(ValueError, match="position 0"):
        logps_from_logits(torch.randn(B, L, V), ids, mask)
    with pytest.raises(ValueError, match="completion_mask has shape"):
        completion_logps(hidden, weight, ids, mask[:, 1:])


@pytest.mark.parametrize("chunk_size", [2, 1024])
def test_temperature_and_entropy_match_the_full_softmax(chunk_size: int) -> None:
    """At temperature T the log-probs are those of softmax(logits / T), with gradients; the
    entropy is that distribution's, detached, 0 off the mask; T = 1 changes nothing."""
    ids, mask = layout("right")
    hidden, weight, bias = random_head()
    h1, w1 = leaves(hidden, weight)
    fast = completion_logps(h1, w1, ids, mask, bias=bias, chunk_size=chunk_size, temperature=0.7, entropy=True)
    h2, w2 = leaves(hidden, weight)
    logits = (h2 @ w2.T + bias) / 0.7
    slow = naive(logits, ids, mask)
    torch.testing.assert_close(fast.sum, slow["sum"], atol=1e-5, rtol=0)
    fast.sum.sum().backward()
    slow["sum"].sum().backward()
    torch.testing.assert_close(h1.grad, h2.grad, atol=1e-5, rtol=0)
    logp = torch.log_softmax(logits.detach(), -1)
    entropy = -(logp.exp() * logp).sum(-1)  # (B, L): position t-1's distribution predicts token t
    expected = torch.zeros(B, L)
    expected[:, 1:] = torch.where(mask[:, 1:], entropy[:, :-1], 0.0)
    assert fast.entropy is not None and not fast.entropy.requires_grad
    torch.testing.assert_close(fast.entropy, expected, atol=1e-5, rtol=0)
    plain = completion_logps(hidden, weight, ids, mask, bias=bias, chunk_size=chunk_size)
    same = completion_logps(hidden, weight, ids, mask, bias=bias, chunk_size=chunk_size, temperature=1.0)
    assert plain.entropy is None and torch.equal(plain.tokens, same.tokens)
    with pytest.raises(ValueError, match="temperature must be a positive number"):
        completion_logps(hidden, weight, ids, mask, temperature=0.0)
