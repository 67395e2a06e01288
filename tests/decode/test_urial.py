"""URIAL prompts and their stop handling; token distribution shift against closed forms.

Example: ``pytest tests/decode/test_urial.py``
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import AutoModelForCausalLM

from alignlab.decode.urial import (
    DEFAULT_EXAMPLES,
    DEFAULT_TEMPLATE,
    FENCE,
    MARGINAL,
    SHIFTED,
    UNSHIFTED,
    URIAL_STOP_STRINGS,
    ShiftedToken,
    UrialTemplate,
    build_urial_prompt,
    cut_urial_answer,
    greedy_completions,
    load_urial_examples,
    token_distribution_shift,
)
from alignlab.errors import DataError
from alignlab.models.tiny import init_tiny_model

EOS, PAD, BOS = 1, 2, 0  # the tiny tokenizer's ids

# --------------------------------------------------------------------------------- URIAL prompt


def test_prompt_has_the_paper_structure_exactly() -> None:
    template = UrialTemplate("Be kind.", (("Q one?", "A one."), ("Q two?", " A two.\n")))
    assert build_urial_prompt("  My question?\n", template) == (
        "# Instruction\n\nBe kind.\n\n"
        "# Query:\n```\nQ one?\n```\n\n# Answer:\n```\nA one.\n```\n\n"
        "# Query:\n```\nQ two?\n```\n\n# Answer:\n```\nA two.\n```\n\n"
        "# Query:\n```\nMy question?\n```\n\n# Answer:\n```\n"
    )


def test_default_template_is_three_shot_and_ends_in_an_open_answer() -> None:
    prompt = build_urial_prompt("How do tides work?")
    assert DEFAULT_TEMPLATE.k is None and len(DEFAULT_TEMPLATE.shots) == 3
    assert prompt.startswith("# Instruction\n\n")
    # The preamble names the headers in quotes; as headers they start a line.
    assert prompt.count("\n# Query:\n") == 4 and prompt.count("\n# Answer:\n") == 4
    assert prompt.count(FENCE) == 4 * 3 + 3  # each example 4 fences, the query 2, the open one
    assert prompt.endswith("# Query:\n```\nHow do tides work?\n```\n\n# Answer:\n```\n")


def test_k_takes_the_first_examples_and_an_empty_preamble_drops_the_header() -> None:
    one = UrialTemplate(examples=DEFAULT_EXAMPLES[:1])
    assert build_urial_prompt("q?", UrialTemplate(k=1)) == build_urial_prompt("q?", one)
    zero = build_urial_prompt("q?", UrialTemplate(k=0))
    assert zero.count("\n# Query:\n") == 1 and zero.startswith("# Instruction")
    bare = build_urial_prompt("q?", UrialTemplate(preamble="", k=0))
    assert bare == "# Query:\n```\nq?\n```\n\n# Answer:\n```\n"


def test_template_checks_its_examples_and_k() -> None:
    with pytest.raises(ValueError, match="k=4"):
        UrialTemplate(k=4)
    with pytest.raises(ValueError, match=r"example 1, answer: contains a ``` fence"):
        UrialTemplate(examples=(("a", "b"), ("c", "see\n```\ncode\n```")))
    with pytest.raises(ValueError, match="example 0, query: empty text"):
        UrialTemplate(examples=((" ", "b"),))
    with pytest.raises(ValueError, match="non-empty"):
        build_urial_prompt("  ")
    listed = UrialTemplate(examples=[["a", "b"]])  # type: ignore[arg-type]
    assert listed.examples == (("a", "b"),)
    with pytest.raises(AttributeError):
        listed.k = 2  # type: ignore[misc]


def test_cut_stops_at_the_next_query_and_drops_the_fence() -> None:
    assert URIAL_STOP_STRINGS == ("# Query",)
    assert cut_urial_answer("Hello!\n1. One.\n```\n\n# Query:\n```\nmore") == "Hello!\n1. One."
    assert cut_urial_answer("  plain answer  ") == "plain answer"
    assert cut_urial_answer("use `x` here\n```") == "use `x` here"  # inline code stays
    assert cut_urial_answer("```\nreopened\n```\n# Query") == "reopened"
    assert cut_urial_answer("a STOP b # Query c", stop=("# Query", "STOP")) == "a"


def test_every_example_answer_round_trips_through_cut() -> None:
    """What follows an example's answer fence in the prompt, cut, is that answer: a model that
    copies the format exactly yields its answer."""
    prompt = build_urial_prompt("q?")
    pieces = prompt.split("# Answer:\n```\n")[1:-1]
    assert [cut_urial_answer(p) for p in pieces] == [a for _, a in DEFAULT_EXAMPLES]


# ------------------------------------------------------------------------------- URIAL from JSONL


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_examples_load_from_jsonl(tmp_path: Path) -> None:
    rows = [json.dumps({"query": "q1", "answer": "a1", "id": 7}), "",
            json.dumps({"query": "q2", "answer": "a2"})]
    path = _write(tmp_path / "shots.jsonl", rows)
    assert load_urial_examples(path) == (("q1", "a1"), ("q2", "a2"))
    template = UrialTemplate.from_jsonl(path, preamble="P.", k=1)
    assert template.shots == (("q1", "a1"),) and template.preamble == "P."


GOOD = json.dumps({"query": "q", "answer": "a"})


@pytest.mark.parametrize(("bad", "field", "message", "hint"), [
    ('{"query": "q", "answer": ', None, "malformed JSON", "complete JSON object"),
    ('["q", "a"]', None, "expected a JSON object, got list", "one {"),
    ('{"query": "q", "response": "a"}', "answer", "missing field", "'query', 'response'"),
    ('{"query": 3, "answer": "a"}', "query", "expected a string, got int", "JSON string"),
    ('{"query": "q", "answer": "  "}', "answer", "empty text", "non-empty"),
    ('{"query": "q", "answer": "x\\n```\\ny"}', "answer", "fence", "~~~"),
    ('{"query": "q", "answer": "# Query: again"}', "answer", "stops", "reword"),
])
def test_a_bad_line_names_file_line_field_and_hint(tmp_path: Path, bad: str, field: str | None,
                                                    message: str, hint: str) -> None:
    path = _write(tmp_path / "shots.jsonl", [GOOD, bad])
    with pytest.raises(DataError) as caught:
        load_urial_examples(path)
    error = caught.value
    assert (error.file, error.line, error.field) == (str(path), 2, field)
    assert message in error.message and hint in error.hint
    assert f"{path}:2" in str(error)


def test_an_empty_or_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no URIAL examples"):
        load_urial_examples(_write(tmp_path / "empty.jsonl", [""]))
    with pytest.raises(DataError, match="file not found"):
        load_urial_examples(tmp_path / "absent.jsonl")


# --------------------------------------------------------------- TDS on a model with known ranks


class _OneHot(nn.Module):
    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                use_cache: bool = False) -> Any:
        return SimpleNamespace(last_hidden_state=F.one_hot(input_ids, self.vocab).float())


class Bigram(nn.Module):
    """A stub causal LM with the shape split_model expects: the next-token logits after token
    a are ``table[a]``, whatever came before, so every rank is known by hand."""

    base_model_prefix = "model"

    def __init__(self, table: list[list[float]]) -> None:
        super().__init__()
        weights = torch.tensor(table, dtype=torch.float32)
        self.model = _OneHot(len(table))
        self.lm_head = nn.Linear(len(table), len(table), bias=False)
        with torch.no_grad():
            self.lm_head.weight.copy_(weights.T)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head


TABLE = [
    [0, 5, 4, 3, 2, 1],  # after 0: rank of id 1..5 is 1..5, id 0 is 6
    [1, 1, 1, 1, 1, 1],  # after 1: all tied, so rank = id + 1
    [0, 1, 2, 3, 4, 5],  # after 2: rank = 6 − id
    [5, 4, 3, 2, 1, 0],  # after 3: rank = id + 1
    [0, 0, 0, 0, 9, 0],  # after 4: id 4 first, then the tied rest by id
    [0, 0, 0, 0, 0, 0],  # after 5: all tied
]
PROMPTS_B = [[0], [3, 3], [2], [0]]
COMPLETIONS_B = [[1, 2, 5, 4], [4, 4, 0], [], [4, 5]]
RANKS_B = [[1, 3, 1, 5], [5, 1, 2], [], [4, 6]]
BASE_TOP_B = [[1, 0, 5, 0], [0, 4, 4], [], [1, 4]]


@pytest.mark.parametrize("batch_size", [1, 2, 8])
def test_ranks_labels_and_counts_match_the_hand_computed_ones(batch_size: int) -> None:
    got = token_distribution_shift(Bigram(TABLE), PROMPTS_B, COMPLETIONS_B, batch_size=batch_size)
    assert [r.tolist() for r in got.ranks] == RANKS_B
    assert [t.tolist() for t in got.tokens] == COMPLETIONS_B
    assert [b.tolist() for b in got.base_top] == BASE_TOP_B
    U, M, S = UNSHIFTED, MARGINAL, SHIFTED  # noqa: N806
    assert [x.tolist() for x in got.labels] == [[U, M, U, S], [S, U, M], [], [S, S]]
    assert [x.shape for x in got.labels] == [torch.Size([len(c)]) for c in COMPLETIONS_B]
    assert (got.k, got.unshifted, got.marginal, got.shifted, got.positions) == (3, 3, 2, 4, 9)
    assert got.shares == pytest.approx({"unshifted": 3 / 9, "marginal": 2 / 9, "shifted": 4 / 9})
    # Token 4 shifted thrice (ranks 5, 5, 4; the base preferred 0, 0, 1), token 5 once (rank 6).
    assert got.top_shifted == (ShiftedToken(4, 3, 14 / 3, 0), ShiftedToken(5, 1, 6.0, 4))
    expected_logps = [torch.tensor([TABLE[a][b] for a, b in zip([*p[-1:], *c[:-1]], c, strict=True)])
                      - torch.tensor([TABLE[a] for a in [*p[-1:], *c[:-1]]]).logsumexp(-1)
                      if c else torch.zeros(0) for p, c in zip(PROMPTS_B, COMPLETIONS_B, strict=True)]
    for lp, want in zip(got.base_logps, expected_logps, strict=True):
        torch.testing.assert_close(lp, want)
    assert got.aligned_logps is None and got.kl is None


def test_k_moves_the_marginal_boundary_and_top_trims_the_list() -> None:
    stub = Bigram(TABLE)
    one = token_distribution_shift(stub, PROMPTS_B, COMPLETIONS_B, k=1, top=1)
    assert (one.unshifted, one.marginal, one.shifted) == (3, 0, 6)
    assert [s.token_id for s in one.top_shifted] == [4]
    five = token_distribution_shift(stub, PROMPTS_B, COMPLETIONS_B, k=5)
    assert (five.unshifted, five.marginal, five.shifted) == (3, 5, 1)
    assert five.top_shifted == (ShiftedToken(5, 1, 6.0, 4),)


def test_by_position_shares_run_over_the_completions_that_reach_each_position() -> None:
    got = token_distribution_shift(Bigram(TABLE), PROMPTS_B, COMPLETIONS_B).by_position()
    assert got.shape == (4, 3)
    # t=0: U, S, S over three completions; t=1: M, U, S; t=2: U, M; t=3: S.
    torch.testing.assert_close(got, torch.tensor(
        [[1 / 3, 0, 2 / 3], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0], [0, 0, 1]], dtype=torch.float64))


def test_kl_against_an_aligned_stub_is_the_closed_form() -> None:
    aligned_table = [row[::-1] for row in TABLE]
    got = token_distribution_shift(Bigram(TABLE), PROMPTS_B, COMPLETIONS_B,
                                   aligned=Bigram(aligned_table))
    base = torch.tensor(TABLE, dtype=torch.float32).log_softmax(-1)
    aligned = torch.tensor(aligned_table, dtype=torch.float32).log_softmax(-1)
    for p, c, kl, lp in zip(PROMPTS_B, COMPLETIONS_B, got.kl, got.aligned_logps, strict=True):  # type: ignore[arg-type]
        context = [*p[-1:], *c[:-1]][: len(c)]
        want = (aligned[context].exp() * (aligned[context] - base[context])).sum(-1)
        torch.testing.assert_close(kl, want)
        torch.testing.assert_close(lp, aligned[context, c] if c else torch.zeros(0))
    same = token_distribution_shift(Bigram(TABLE), PROMPTS_B, COMPLETIONS_B, aligned=Bigram(TABLE))
    assert all(bool((kl == 0).all()) for kl in same.kl)  # type: ignore[union-attr]


def test_bad_inputs_are_named() -> None:
    stub = Bigram(TABLE)
    with pytest.raises(ValueError, match="2 prompts but 1 completions"):
        token_distribution_shift(stub, [[0], [0]], [[1]])
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        token_distribution_shift(stub, [[0], []], [[1], [1]])
    with pytest.raises(ValueError, match="completion 1 has token id 6, outside"):
        token_distribution_shift(stub, [[0], [0]], [[1], [2, 6]])
    with pytest.raises(ValueError, match="k .* at least 1"):
        token_distribution_shift(stub, [[0]], [[1]], k=0)
    with pytest.raises(ValueError, match="no completions and no aligned model"):
        token_distribution_shift(stub, [[0]], None)
    with pytest.raises(ValueError, match="share a tokenizer"):
        token_distribution_shift(stub, [[0]], [[1]], aligned=Bigram([[0.0] * 5] * 5))
    empty = token_distribution_shift(stub, [[0]], [[]])
    assert empty.positions == 0 and empty.shares["unshifted"] == 0 and empty.top_shifted == ()


# ------------------------------------------------------------------------ TDS on the tiny Llama


PROMPTS = [[BOS, 40, 41, 42, 43, 44, 45], [BOS], [BOS, 7, 8]]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = init_tiny_model(tmp_path_factory.mktemp("tiny") / "model")
    return AutoModelForCausalLM.from_pretrained(path).eval()


@pytest.fixture(scope="module")
def tuned(tiny: Any) -> Any:
    """The tiny model with its output layer perturbed: an 'aligned' model whose greedy choices
    the base ranks at all sorts of places."""
    model = copy.deepcopy(tiny)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        weight = model.lm_head.weight
        weight.add_(torch.randn(weight.shape, generator=generator) * weight.std() * 0.3)
    return model


def test_a_model_against_itself_is_all_unshifted_with_zero_kl(tiny: Any) -> None:
    completions = greedy_completions(tiny, PROMPTS, max_new_tokens=10)
    got = token_distribution_shift(tiny, PROMPTS, completions, aligned=tiny, batch_size=2)
    assert got.positions == sum(len(c) for c in completions) > 0
    assert got.unshifted == got.positions and got.shares["unshifted"] == 1.0
    assert all(bool((r == 1).all()) for r in got.ranks)
    assert [b.tolist() for b in got.base_top] == [list(c) for c in completions]
    for kl, a, b in zip(got.kl, got.aligned_logps, got.base_logps, strict=True):  # type: ignore[arg-type]
        assert float(kl.abs().max()) < 1e-5
        torch.testing.assert_close(a, b)
    # Without completions the aligned model decodes them, the paper's way: its final EOS dropped.
    decoded = token_distribution_shift(tiny, PROMPTS, None, aligned=tiny, max_new_tokens=10)
    text = [c[:-1] if c[-1] == EOS else c for c in completions]
    assert [t.tolist() for t in decoded.tokens] == [list(c) for c in text]
    assert decoded.unshifted == decoded.positions == sum(len(c) for c in text)


def _plain_ranks_and_kl(base: Any, aligned: Any, prompt: list[int], completion: tuple[int, ...]
                        ) -> tuple[list[int], Tensor]:
    """Ranks and KL from one unpadded full forward of each model: the definition, directly."""
    ids = torch.tensor([[*prompt, *completion]])
    with torch.no_grad():
        b = base(ids).logits[0, len(prompt) - 1:-1].float()
        a = aligned(ids).logits[0, len(prompt) - 1:-1].float()
    y = torch.tensor(completion)
    ranks = (1 + (b > b.gather(1, y[:, None])).sum(-1)).tolist()
    kl = (a.softmax(-1) * (a.log_softmax(-1) - b.log_softmax(-1))).sum(-1)
    return ranks, kl


def test_batched_ranks_and_kl_equal_an_unpadded_forward(tiny: Any, tuned: Any) -> None:
    completions = greedy_completions(tuned, PROMPTS, max_new_tokens=12)
    got = token_distribution_shift(tiny, PROMPTS, completions, aligned=tuned, batch_size=2,
                                   chunk_size=5)
    for prompt, completion, ranks, kl in zip(PROMPTS, completions, got.ranks, got.kl, strict=True):  # type: ignore[arg-type]
        want_ranks, want_kl = _plain_ranks_and_kl(tiny, tuned, prompt, completion)
        assert ranks.tolist() == want_ranks
        torch.testing.assert_close(kl, want_kl, atol=1e-5, rtol=1e-4)
    # The perturbation moved some choices a little, some a lot, and left others.
    assert min(got.unshifted, got.marginal, got.shifted) > 0
    again = token_distribution_shift(tiny, PROMPTS, completions, batch_size=1)
    assert [r.tolist() for r in again.ranks] == [r.tolist() for r in got.ranks]
    assert tiny.training is False and tuned.training is False


def test_greedy_completions_end_with_eos_unless_dropped(tiny: Any) -> None:
    """Calling the 3rd greedy token EOS cuts there: kept by default, dropped for TDS."""
    (full,) = greedy_completions(tiny, PROMPTS[1:2], max_new_tokens=6)
    stop = full[2]
    assert stop not in full[:2]
    assert greedy_completions(tiny, PROMPTS[1:2], max_new_tokens=6, eos_id=stop) == [full[:3]]
    assert greedy_completions(tiny, PROMPTS[1:2], max_new_tokens=6, eos_id=[stop],
                              keep_eos=False) == [full[:2]]
