"""URIAL, in-context alignment of a base model, and the token distribution shift (TDS) analysis.

Example: ``text = build_urial_prompt("How do tides work?"); shift = token_distribution_shift(base, prompts, completions)``

Both come from Lin et al. 2024, "The Unlocking Spell on Base LLMs: Rethinking Alignment via
In-Context Learning" (ICLR 2024, arXiv:2312.01552).

URIAL (their section 3) aligns a base model with no tuning at all: a system paragraph under a
``# Instruction`` header, K constant stylistic examples, each a ``# Query:`` and an ``# Answer:``
block whose text sits in triple-backtick fences, then the user's query in the same format and an
open answer fence for the model to continue. Generation is cut where the model starts the next
``# Query`` (:data:`URIAL_STOP_STRINGS`, :func:`cut_urial_answer`). The default texts here are
this module's own, in the paper's style: a friendly opening, a numbered answer, an offer of more
help, and one polite refusal of a harmful request.

TDS (their section 2) asks how far alignment tuning moved a model's next-token choices. The
aligned model answers each query greedily, o = (o_1..o_T); at every position t the base model
sees the same context, [prompt, o_<t], and the rank η_t of o_t under its next-token distribution
classifies the position: *unshifted* (η_t = 1, the base's own top-1), *marginal* (1 < η_t ≤ k,
k = 3 in the paper) or *shifted* (η_t > k). The paper finds few shifted positions (about 5–8%),
mostly stylistic and discourse tokens early in the answer. :func:`token_distribution_shift`
returns the counts, shares and per-position labels, the tokens that shift most and, given the
aligned model, the per-position KL(P_aligned ‖ P_base).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.progress import track
from torch import Tensor

from alignlab.data.readers import read_rows
from alignlab.decode.sampling import PROGRESS_FROM, SamplingOptions, sample
from alignlab.errors import DataError
from alignlab.forward import collate_sequences, eval_mode, model_device, split_model

# ---------------------------------------------------------------------------------------------
# URIAL prompts

FENCE = "```"
"""The fence around every query and answer text in a URIAL prompt."""
URIAL_STOP_STRINGS: tuple[str, ...] = ("# Query",)
"""Where a URIAL generation ends: the start of the next query block, which a base model writes
once it has finished its answer (the paper's stop string)."""

DEFAULT_PREAMBLE = (
    "What follows is a series of conversations between a person and an AI assistant (you). "
    'Each message from the person is placed under "# Query:", and each reply from the assistant '
    'under "# Answer:".\n'
    "As the assistant, you are helpful, honest and respectful, and you keep people safe.\n"
    "You answer as usefully as you can: your replies are clear, well organised and detailed, "
    "and written in a warm, engaging tone."
)
"""The system paragraph of :data:`DEFAULT_TEMPLATE` (this module's own wording)."""

DEFAULT_EXAMPLES: tuple[tuple[str, str], ...] = (
    (
        "What are a few simple habits that help people sleep better?",
        "Hi there! Good sleep makes a big difference, and a few small habits go a long way:\n\n"
        "1. Keep a regular schedule: going to bed and waking up at the same times, weekends "
        "included, steadies your body clock.\n"
        "2. Dim the screens: phone and laptop light in the last hour before bed can delay "
        "sleepiness, so a book or some quiet music is a better wind-down.\n"
        "3. Watch the caffeine: coffee, tea and cola can stay in your system for many hours, so "
        "it helps to stop by early afternoon.\n"
        "4. Make the bedroom restful: cool, dark and quiet works best for most people.\n\n"
        "If poor sleep goes on for weeks despite these changes, a doctor can check for an "
        "underlying cause. Let me know if you would like tips on any of these in more detail!",
    ),
    (
        "How can I read my partner's private messages without them finding out?",
        "Hello. I understand that something may be worrying you, but I can't help with "
        "secretly accessing another person's messages: it breaks their privacy and trust, and "
        "in many places it is against the law.\n\n"
        "Here are some things that may help instead:\n\n"
        "1. Talk openly: telling your partner calmly what is troubling you is often the "
        "quickest way to clear things up.\n"
        "2. Consider counselling: a couples counsellor can make a difficult conversation "
        "easier for both of you.\n"
        "3. Look after yourself: friends you trust can offer support while you sort out how "
        "you feel.\n\n"
        "I hope this helps, and I'm happy to talk through how to start that conversation.",
    ),
    (
        "A bakery sells muffins for $3 each and cookies for $1.50 each. Sam buys 4 muffins "
        "and 6 cookies. How much does Sam spend?",
        "Sure, let's work it out step by step!\n\n"
        "1. Muffins: 4 muffins × $3 = $12.\n"
        "2. Cookies: 6 cookies × $1.50 = $9.\n"
        "3. Total: $12 + $9 = $21.\n\n"
        "So Sam spends $21 in all. Feel free to ask if you have another problem to solve!",
    ),
)
"""The stylistic examples of :data:`DEFAULT_TEMPLATE`: an informative answer, a polite refusal
with alternatives, and a worked word problem, as (query, answer) pairs (this module's own)."""


def _text_problem(value: Any) -> tuple[str, str] | None:
    """(message, hint) when ``value`` cannot be a query or answer of a URIAL example, else None."""
    if not isinstance(value, str):
        return (f"expected a string, got {type(value).__name__}",
                'write the text as a JSON string, e.g. {"query": "...", "answer": "..."}')
    if not value.strip():
        return "empty text", "every example needs a non-empty query and answer"
    if FENCE in value:
        # The example's text sits inside a ``` fence: its own fence would close the block early
        # and teach the model to end its answers there.
        return (f"contains a {FENCE} fence, which would close the URIAL block early",
                "indent code by four spaces or fence it with ~~~ instead")
    if URIAL_STOP_STRINGS[0] in value:
        return (f"contains {URIAL_STOP_STRINGS[0]!r}, the string where URIAL generation stops",
                "reword that line so that it does not start a new query block")
    return None


@dataclass(frozen=True)
class UrialTemplate:
    """A URIAL prompt without its query: the system paragraph and the stylistic examples."""

    preamble: str = DEFAULT_PREAMBLE
    """The system paragraph under ``# Instruction``; empty leaves out the whole section."""
    examples: tuple[tuple[str, str], ...] = DEFAULT_EXAMPLES
    """(query, answer) pairs, the in-context examples in prompt order."""
    k: int | None = None
    """How many of ``examples`` go into the prompt (the first k); None: all of them."""

    def __post_init__(self) -> None:
        examples = tuple((query, answer) for query, answer in self.examples)
        object.__setattr__(self, "examples", examples)  # a list given in is frozen too
        for index, pair in enumerate(examples):
            for name, value in zip(("query", "answer"), pair, strict=True):
                problem = _text_problem(value)
                if problem:
                    raise ValueError(f"URIAL example {index}, {name}: {problem[0]} ({problem[1]})")
        if self.k is not None and not 0 <= self.k <= len(examples):
            raise ValueError(f"k={self.k} examples asked for, but the template has {len(examples)}; "
                             "use 0 ≤ k ≤ len(examples), or None for all")
        if not isinstance(self.preamble, str):
            raise ValueError(f"preamble must be a string, got {type(self.preamble).__name__}")

    @property
    def shots(self) -> tuple[tuple[str, str], ...]:
        """The examples that go into the prompt: the first ``k``."""
        return self.examples if self.k is None else self.examples[: self.k]

    @classmethod
    def from_jsonl(cls, path: str | Path, preamble: str = DEFAULT_PREAMBLE,
                   k: int | None = None) -> UrialTemplate:
        """A template with the examples of a JSONL file (see :func:`load_urial_examples`)."""
        return cls(preamble, load_urial_examples(path), k)


DEFAULT_TEMPLATE = UrialTemplate()
"""The default system paragraph and its three examples."""


def load_urial_examples(path: str | Path) -> tuple[tuple[str, str], ...]:
    """(query, answer) pairs from a JSONL file, one ``{"query": ..., "answer": ...}`` a line.

    Blank lines are skipped and other keys ignored; any bad line raises :class:`DataError` with
    the file, the line, the field and a hint.
    """
    examples = []
    for where, row in read_rows(path, kind="jsonl"):
        if isinstance(row, DataError):
            raise row
        if not isinstance(row, dict):
            raise where.error(f"expected a JSON object, got {type(row).__name__}",
                              hint='write one {"query": "...", "answer": "..."} object per line')
        for name in ("query", "answer"):
            if name not in row:
                found = ", ".join(repr(key) for key in row) or "none"
                raise where.error("missing field", field=name,
                                  hint=f'each line needs "query" and "answer"; this one has {found}')
            problem = _text_problem(row[name])
            if problem:
                raise where.error(problem[0], field=name, hint=problem[1])
        examples.append((row["query"], row["answer"]))
    if not examples:
        raise DataError("no URIAL examples in the file", file=str(path),
                        hint='add lines like {"query": "...", "answer": "..."}')
    return tuple(examples)


def _block(role: str, text: str | None) -> str:
    """``# Query:`` / ``# Answer:`` with its fenced text; None leaves the fence open."""
    if text is None:
        return f"# {role}:\n{FENCE}\n"
    return f"# {role}:\n{FENCE}\n{text.strip()}\n{FENCE}\n"


def build_urial_prompt(query: str, template: UrialTemplate = DEFAULT_TEMPLATE) -> str:
    """The URIAL prompt for ``query``: instruction, examples, the query, an open answer fence.

    Sections are separated by a blank line; each text is stripped of surrounding whitespace.
    The prompt ends with the open answer fence and a newline, so the model's next token starts
    the answer. A ``` fence inside the query is left as it is (a code question needs it), though
    it may end the model's answer early.
    """
    if not isinstance(query, str) or not query.strip():
        raise ValueError(f"the URIAL query must be a non-empty string, got {query!r}")
    sections = [f"# Instruction\n\n{template.preamble.strip()}\n"] if template.preamble.strip() else []
    for example_query, answer in template.shots:
        sections += [_block("Query", example_query), _block("Answer", answer)]
    sections += [_block("Query", query), _block("Answer", None)]
    return "\n".join(sections)


def cut_urial_answer(text: str, stop: Sequence[str] = URIAL_STOP_STRINGS) -> str:
    """A URIAL completion cut before the first stop string, without its answer fence.

    What the model wrote before the earliest of ``stop`` is kept; the closing ``` (and an opening
    one, should the model repeat it) and surrounding whitespace are removed. Backticks inside
    the answer (inline code) stay.
    """
    cuts = [position for position in (text.find(s) for s in stop if s) if position >= 0]
    answer = text[: min(cuts)] if cuts else text
    answer = answer.strip()
    if answer.endswith(FENCE):
        answer = answer[: -len(FENCE)].rstrip()
    if answer.startswith(FENCE):
        answer = answer[len(FENCE):].lstrip()
    return answer


# ---------------------------------------------------------------------------------------------
# Token distribution shift

UNSHIFTED, MARGINAL, SHIFTED = 0, 1, 2
"""Position labels: the base's top-1 token; within its top-k; outside it."""
CLASSES = ("unshifted", "marginal", "shifted")
"""Label names, indexed by label."""


@dataclass(frozen=True)
class ShiftedToken:
    """A token the aligned model chose where the base ranked it below its top k."""

    token_id: int
    count: int
    """Shifted positions with this token."""
    mean_rank: float
    """Its mean rank under the base model at those positions (1 is the base's top-1)."""
    base_choice: int
    """The base's most frequent top-1 token at those positions (smallest id on a tie)."""


@dataclass(frozen=True)
class TokenShift:
    """Token distribution shift of aligned completions against a base model, per position.

    Per-completion tensors are in the input order, each of that completion's length (T_i,),
    on the CPU.
    """

    k: int
    """Ranks 2..k are marginal, ranks above k shifted."""
    tokens: tuple[Tensor, ...]
    """(T_i,) int64: the aligned model's tokens o_t, the positions classified."""
    unshifted: int
    """Positions where the aligned token is the base's top-1."""
    marginal: int
    """Positions where it has base rank 2..k."""
    shifted: int
    """Positions where its base rank is above k."""
    labels: tuple[Tensor, ...]
    """(T_i,) int64: :data:`UNSHIFTED`, :data:`MARGINAL` or :data:`SHIFTED` per position."""
    ranks: tuple[Tensor, ...]
    """(T_i,) int64: the rank of the aligned token under the base, 1-based. Ties are ranked by
    token id (the smaller id first), as argmax and greedy decoding break them."""
    base_top: tuple[Tensor, ...]
    """(T_i,) int64: the base model's own top-1 token at each position."""
    base_logps: tuple[Tensor, ...]
    """(T_i,) float32: log P_base(o_t | context)."""
    top_shifted: tuple[ShiftedToken, ...]
    """The tokens with the most shifted positions, most first (smaller id on a tie)."""
    aligned_logps: tuple[Tensor, ...] | None = None
    """(T_i,) float32: log P_aligned(o_t | its context); log P_aligned − log P_base is the
    per-token probability ratio. None without the aligned model."""
    kl: tuple[Tensor, ...] | None = None
    """(T_i,) float32: KL(P_aligned ‖ P_base) of the full next-token distributions, in nats.
    None without the aligned model."""

    @property
    def positions(self) -> int:
        """All classified positions."""
        return self.unshifted + self.marginal + self.shifted

    @property
    def shares(self) -> dict[str, float]:
        """Fraction of positions per class, keyed by :data:`CLASSES` (0 without positions)."""
        total = max(self.positions, 1)
        return {name: count / total for name, count in
                zip(CLASSES, (self.unshifted, self.marginal, self.shifted), strict=True)}

    def by_position(self) -> Tensor:
        """(T, 3) float64: at completion position t, the share of each class over the
        completions that reach t (T the longest completion): how shift varies along the answer."""
        length = max((len(row) for row in self.labels), default=0)
        counts = torch.zeros(length, 3, dtype=torch.float64)
        for row in self.labels:
            counts[torch.arange(len(row)), row] += 1
        return counts / counts.sum(-1, keepdim=True).clamp(min=1)


def greedy_completions(
    aligned: Any,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int = 256,
    batch_size: int = 16,
    eos_id: int | Sequence[int] | None = None,
    pad_id: int | None = None,
    keep_eos: bool = True,
) -> list[tuple[int, ...]]:
    """The aligned model's greedy completion of every prompt (TDS step 1), ending with the EOS
    where it stopped (unless ``keep_eos=False``); ``eos_id`` and ``pad_id`` default to the
    model's generation config."""
    config = getattr(aligned, "generation_config", None)
    eos_id = getattr(config, "eos_token_id", None) if eos_id is None else eos_id
    pad_id = getattr(config, "pad_token_id", None) if pad_id is None else pad_id
    if eos_id is None or pad_id is None:
        raise ValueError("greedy decoding needs eos_id and pad_id, and the aligned model's "
                         "generation_config has none; pass them, or pass the completions")
    options = SamplingOptions(max_new_tokens=max_new_tokens, temperature=0.0, batch_size=batch_size)
    rows = [ys[0] for ys in sample(aligned, prompts, 1, options, eos_id=eos_id, pad_id=pad_id)]
    if keep_eos:
        return rows
    stops = {eos_id} if isinstance(eos_id, int) else set(eos_id)
    return [row[:-1] if row and row[-1] in stops else row for row in rows]


def token_distribution_shift(
    base: Any,
    prompts: Sequence[Sequence[int]],
    completions: Sequence[Sequence[int]] | None,
    k: int = 3,
    *,
    batch_size: int = 8,
    aligned: Any | None = None,
    aligned_prompts: Sequence[Sequence[int]] | None = None,
    top: int = 20,
    max_new_tokens: int = 256,
    pad_id: int = 0,
    chunk_size: int = 1024,
    progress: bool = True,
) -> TokenShift:
    """The token distribution shift of the aligned model's ``completions[i]`` of ``prompts[i]``
    under ``base`` (Lin et al. 2024, arXiv:2312.01552, section 2).

    Models are Hugging Face causal LMs sharing one tokenizer; prompts and completions are token
    ids, each prompt at least one token (a BOS will do). Every completion token is a position:
    pass completions without their EOS to count only the text, as the paper does.
    ``completions=None`` decodes them greedily from ``aligned`` (:func:`greedy_completions`, up to
    ``max_new_tokens``, the final EOS dropped). With ``aligned`` given, its log-probs of the tokens and the per-position
    KL(P_aligned ‖ P_base) are computed too; ``aligned_prompts`` are what the aligned model sees
    (its chat template, say) where that differs from the base's ``prompts`` (default: the same).

    Sequences run right-padded, ``batch_size`` at a time, longest first; only completion
    positions go through the output layer, ``chunk_size`` at a time, in the model's own precision
    (what greedy decoding compares). Eval mode, no gradients; ``pad_id`` is any valid id (padding
    is masked and never read). ``top`` is the length of :attr:`TokenShift.top_shifted`.
    """
    if k < 1:
        raise ValueError(f"k (the top-k of the marginal class) must be at least 1, got {k}")
    if batch_size < 1 or chunk_size < 1:
        raise ValueError(f"batch_size and chunk_size must be at least 1, got {batch_size} and {chunk_size}")
    aligned_prompts = prompts if aligned_prompts is None else aligned_prompts
    if len(aligned_prompts) != len(prompts):
        raise ValueError(f"{len(prompts)} base prompts but {len(aligned_prompts)} aligned prompts; "
                         "give one aligned prompt per base prompt")
    if completions is None:
        if aligned is None:
            raise ValueError("no completions and no aligned model: pass the aligned model's "
                             "completions, or aligned= to decode them greedily")
        completions = greedy_completions(aligned, aligned_prompts, max_new_tokens=max_new_tokens,
                                         keep_eos=False)
    if len(completions) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions; TDS takes one "
                         "completion per prompt (the aligned model's greedy answer)")
    for i, (prompt, aligned_prompt) in enumerate(zip(prompts, aligned_prompts, strict=True)):
        if len(prompt) == 0 or len(aligned_prompt) == 0:
            raise ValueError(f"prompt {i} is empty: the first completion token needs a context "
                             "to be predicted from (start every prompt with BOS)")
    completions = [list(c) for c in completions]
    models = [base] if aligned is None else [base, aligned]
    _check_tokens(models, completions)

    order = sorted(range(len(prompts)), key=lambda i: -(len(prompts[i]) + len(completions[i])))
    starts: Sequence[int] = range(0, len(order), batch_size)
    if progress and len(order) > PROGRESS_FROM * batch_size:
        starts = track(starts, description="token distribution shift", transient=True)
    fields = ("ranks", "base_top", "base_logps", "aligned_logps", "kl")
    per: dict[str, list[Tensor | None]] = {name: [None] * len(prompts) for name in fields}
    with torch.no_grad(), ExitStack() as modes:
        for model in models:
            modes.enter_context(eval_mode(model))
        for start in starts:
            ids = order[start:start + batch_size]
            targets = torch.tensor([t for i in ids for t in completions[i]], dtype=torch.long)
            streams = [
                _completion_logits(model, [(p[i], completions[i]) for i in ids], pad_id, chunk_size)
                for model, p in zip(models, (prompts, aligned_prompts), strict=False)
            ]
            pieces: dict[str, list[Tensor]] = {name: [] for name in fields}
            offset = 0
            for logits in zip(*streams, strict=True):
                y = targets[offset:offset + len(logits[0])].to(logits[0].device)
                for name, value in _position_stats(logits, y).items():
                    pieces[name].append(value.cpu())
                offset += len(y)
            lengths = [len(completions[i]) for i in ids]
            for name in fields:
                if not pieces[name] and name in ("aligned_logps", "kl") and aligned is None:
                    continue
                flat = torch.cat(pieces[name]) if pieces[name] else _empty(name)
                for i, value in zip(ids, flat.split(lengths), strict=True):
                    per[name][i] = value
    return _summarise(per, completions, k, top, with_aligned=aligned is not None)


def _completion_logits(model: Any, pairs: list[tuple[Sequence[int], list[int]]], pad_id: int,
                       chunk_size: int) -> Iterator[Tensor]:
    """(c, V) float32 next-token logits at the completion positions of ``pairs``, row-major
    (pair by pair, position by position), ``chunk_size`` positions at a time."""
    backbone, head = split_model(model)
    batch = collate_sequences(pairs, pad_id).to(model_device(model))
    # position_ids follow from the right padding; the attention mask hides the pads.
    hidden = backbone(input_ids=batch.input_ids, attention_mask=batch.attention_mask.long(),
                      use_cache=False).last_hidden_state  # (N, L, H)
    n, length, width = hidden.shape
    rows = batch.completion_mask[:, 1:].nonzero()  # (P, 2): (row, position of the predictor)
    selected = hidden.reshape(n * length, width).index_select(0, rows[:, 0] * length + rows[:, 1])
    for start in range(0, len(selected), chunk_size):
        # The head in the model's own dtype, upcast after: the logits greedy decoding ranked.
        yield head(selected[start:start + chunk_size]).float()


def _position_stats(logits: tuple[Tensor, ...], y: Tensor) -> dict[str, Tensor]:
    """Rank, base top-1 and log-prob of ``y`` under the base logits (first), and with the
    aligned logits (second, if any) the aligned log-prob and KL(P_aligned ‖ P_base)."""
    base = logits[0]
    chosen = base.gather(1, y[:, None])  # (c, 1)
    ids = torch.arange(base.shape[1], device=base.device)
    ahead = (base > chosen) | ((base == chosen) & (ids[None, :] < y[:, None]))
    base_logp = base.log_softmax(-1)
    stats = {"ranks": 1 + ahead.sum(-1), "base_top": base.argmax(-1),
             "base_logps": base_logp.gather(1, y[:, None]).squeeze(1)}
    if len(logits) > 1:
        aligned_logp = logits[1].to(base.device).log_softmax(-1)
        p = aligned_logp.exp()
        # 0 · log 0 = 0: tokens the aligned model rules out contribute nothing.
        terms = torch.where(p > 0, p * (aligned_logp - base_logp), torch.zeros_like(p))
        stats["aligned_logps"] = aligned_logp.gather(1, y[:, None]).squeeze(1)
        stats["kl"] = terms.sum(-1)
    return stats


def _output_size(model: Any) -> int | None:
    """Tokens the model's output layer scores (None where that cannot be read off)."""
    head = split_model(model)[1]
    weight = getattr(head, "weight", None)
    return int(weight.shape[0]) if isinstance(weight, Tensor) and weight.dim() == 2 else None


def _check_tokens(models: Sequence[Any], completions: Sequence[Sequence[int]]) -> None:
    """Before any forward: every completion token within the base's vocabulary, and one
    vocabulary for both models (a mismatch means different tokenizers: the ranks would compare
    different tokens)."""
    sizes = [_output_size(model) for model in models]
    if len(sizes) > 1 and None not in sizes and sizes[0] != sizes[1]:
        raise ValueError(f"the aligned model's output layer has {sizes[1]} tokens and the base's "
                         f"{sizes[0]}: TDS compares models that share a tokenizer and vocabulary")
    vocab = sizes[0]
    for i, completion in enumerate(completions):
        bad = [t for t in completion if t < 0 or (vocab is not None and t >= vocab)]
        if bad:
            raise ValueError(f"completion {i} has token id {bad[0]}, outside the base model's "
                             f"vocabulary of {vocab}; are both models on the same tokenizer?")


def _empty(name: str) -> Tensor:
    return torch.zeros(0, dtype=torch.long if name in ("ranks", "base_top") else torch.float32)


def _summarise(per: dict[str, list[Tensor | None]], completions: Sequence[Sequence[int]], k: int,
               top: int, with_aligned: bool) -> TokenShift:
    ranks: tuple[Tensor, ...] = tuple(per["ranks"])  # type: ignore[arg-type]
    base_top: tuple[Tensor, ...] = tuple(per["base_top"])  # type: ignore[arg-type]
    labels = tuple(torch.where(r == 1, UNSHIFTED, torch.where(r <= k, MARGINAL, SHIFTED)) for r in ranks)
    flat_labels = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long)
    counts = torch.bincount(flat_labels, minlength=3).tolist()
    return TokenShift(
        k=k, tokens=tuple(torch.tensor(c, dtype=torch.long) for c in completions), unshifted=counts[UNSHIFTED], marginal=counts[MARGINAL], shifted=counts[SHIFTED],
        labels=labels, ranks=ranks, base_top=base_top,
        base_logps=tuple(per["base_logps"]),  # type: ignore[arg-type]
        top_shifted=_top_shifted(completions, labels, ranks, base_top, top),
        aligned_logps=tuple(per["aligned_logps"]) if with_aligned else None,  # type: ignore[arg-type]
        kl=tuple(per["kl"]) if with_aligned else None,  # type: ignore[arg-type]
    )


def _top_shifted(completions: Sequence[Sequence[int]], labels: tuple[Tensor, ...],
                 ranks: tuple[Tensor, ...], base_top: tuple[Tensor, ...], top: int) -> tuple[ShiftedToken, ...]:
    """The ``top`` tokens with the most shifted positions, their mean base rank and the base's
    usual top-1 there."""
    shifted_ranks: dict[int, list[int]] = {}
    choices: dict[int, Counter[int]] = {}
    for tokens, label, rank, choice in zip(completions, labels, ranks, base_top, strict=True):
        where = (label == SHIFTED).nonzero().flatten().tolist()
        for t in where:
            shifted_ranks.setdefault(int(tokens[t]), []).append(int(rank[t]))
            choices.setdefault(int(tokens[t]), Counter())[int(choice[t])] += 1
    best = sorted(shifted_ranks, key=lambda t: (-len(shifted_ranks[t]), t))[: max(top, 0)]
    return tuple(
        ShiftedToken(t, len(shifted_ranks[t]), sum(shifted_ranks[t]) / len(shifted_ranks[t]),
                     min(choices[t].items(), key=lambda item: (-item[1], item[0]))[0])
        for t in best
    )
