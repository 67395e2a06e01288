"""Text in, scored candidates out: the sampler that strategies share, and what they return.

Example: ``sampler = TextSampler(model, tokenizer); texts = sampler.sample(["2+2?"], n=4)``

A strategy (best-of-N, voting, DeAL, ...) returns a :class:`Decoded`: per prompt a
:class:`Selection` of candidates with their scores and the index of the chosen one, and the
:class:`Cost` of the whole call. Prompts are encoded as training encodes them (the chat template
for chats, BOS once), so a reward model or a policy trained by alignlab sees what it was
trained on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from alignlab.data.records import Text
from alignlab.data.tokenize import RecordTokenizer, TokenizeOptions, pad_id_of
from alignlab.decode.cost import Cost
from alignlab.decode.sampling import SamplingOptions, sample
from alignlab.decode.voting import best_by_orm
from alignlab.rewards import Reward, Scores

PromptColumns = Mapping[str, Sequence[Any]]
"""Extra columns by name, one value per prompt (e.g. the reference ``answer`` of each)."""


@dataclass(frozen=True)
class Candidate:
    """One sampled completion."""

    text: str
    """Decoded without special tokens, surrounding whitespace stripped."""
    token_ids: tuple[int, ...]
    """As sampled, EOS included when it stopped there."""
    score: float | None = None
    """The strategy's score of it; None when unscored or unscorable."""


@dataclass(frozen=True)
class Selection:
    """A prompt's candidates and which one a strategy chose."""

    prompt: Text
    candidates: tuple[Candidate, ...]
    chosen: int | None
    """Index into ``candidates``; None when none qualifies (all unscorable, none accepted)."""
    details: Mapping[str, Any] = field(default_factory=dict)
    """What the strategy knows beyond scores (a vote's answer and tallies), JSON-ready."""

    @property
    def completion(self) -> str | None:
        """The chosen candidate's text, or None."""
        return None if self.chosen is None else self.candidates[self.chosen].text


@dataclass(frozen=True)
class Decoded:
    """What a strategy returns for a list of prompts."""

    strategy: str
    selections: tuple[Selection, ...]
    cost: Cost

    @property
    def completions(self) -> list[str | None]:
        return [s.completion for s in self.selections]

    def rows(self) -> list[dict[str, Any]]:
        """One JSON-ready row per prompt: the chosen completion, every candidate with its score,
        the strategy's details and the prompt's share of the cost."""
        return [{"prompt": _plain(s.prompt), "completion": s.completion, "chosen_index": s.chosen,
                 "candidates": [{"text": c.text, "score": c.score, "tokens": len(c.token_ids)} for c in s.candidates],
                 **({"details": dict(s.details)} if s.details else {}),
                 "cost": {"tokens_generated": sum(len(c.token_ids) for c in s.candidates),
                          "samples": len(s.candidates)}}
                for s in self.selections]


class TextSampler:
    """A policy and its tokenizer behind :func:`alignlab.decode.sample`: text prompts in, (token
    ids, text) completions out, with the cost counted.

    ``as_chat``: a plain-string prompt is sent as one user message through the chat template. An
    instruct model given its question as raw text often ends its turn at once. True wraps such
    prompts; None (the default) wraps them when the tokenizer has a chat template; False never
    does (a base model, a URIAL prompt). Chat prompts always go through the template."""

    def __init__(self, model: Any, tokenizer: Any, options: SamplingOptions = SamplingOptions(),  # noqa: B008
                 tokenize: TokenizeOptions = TokenizeOptions(), as_chat: bool | None = None) -> None:  # noqa: B008
        self.model, self.tokenizer, self.options = model, tokenizer, options
        self.encoder = RecordTokenizer(tokenizer, tokenize)
        self.pad_id = pad_id_of(tokenizer)
        has_template = bool(tokenize.chat_template or getattr(tokenizer, "chat_template", None))
        self.as_chat = has_template if as_chat is None else as_chat

    def prompt_ids(self, prompts: Sequence[Text], as_chat: bool | None = None) -> list[tuple[int, ...]]:
        wrap = self.as_chat if as_chat is None else as_chat
        return [self.encoder.encode_prompt(({"role": "user", "content": p},) if wrap and isinstance(p, str) else p)
                for p in prompts]

    def sample(self, prompts: Sequence[Text], n: int, *, streams: Sequence[int] | None = None,
               first_sample: int = 0, cost: Cost | None = None, options: SamplingOptions | None = None,
               as_chat: bool | None = None) -> list[list[Candidate]]:
        """``n`` unscored candidates per prompt (see :func:`alignlab.decode.sample` for the seeds);
        ``as_chat`` overrides the sampler's own choice for this call."""
        ids = sample(self.model, self.prompt_ids(prompts, as_chat), n, options or self.options,
                     eos_id=self.encoder.eos_id, pad_id=self.pad_id, streams=streams,
                     first_sample=first_sample, cost=cost)
        return [[Candidate(self.text(c), c) for c in row] for row in ids]

    def text(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True).strip()


def _plain(prompt: Text) -> Any:
    return prompt if isinstance(prompt, str) else [dict(m) for m in prompt]


def score_candidates(reward: Reward, prompts: Sequence[Text], candidates: Sequence[Sequence[Candidate]],
                     columns: PromptColumns | None = None, cost: Cost | None = None) -> list[list[Candidate]]:
    """The candidates with ``reward``'s scores, one batched reward call for all of them; each
    candidate gets its prompt's columns."""
    columns = dict(columns or {})
    for name, values in columns.items():
        if len(values) != len(prompts):
            raise ValueError(f"column {name!r} has {len(values)} values for {len(prompts)} prompts")
    owner = [i for i, row in enumerate(candidates) for _ in row]
    flat = [c for row in candidates for c in row]
    scores: Scores = reward([prompts[i] for i in owner], [c.text for c in flat],
                            {name: [values[i] for i in owner] for name, values in columns.items()})
    if cost is not None:
        cost.reward_calls += len(flat)
    out: list[list[Candidate]] = [[] for _ in candidates]
    for i, c, s in zip(owner, flat, scores, strict=True):
        out[i].append(Candidate(c.text, c.token_ids, s))
    return out


def choose_best(name: str, prompts: Sequence[Text], candidates: Sequence[Sequence[Candidate]],
                reward: Reward | None, columns: PromptColumns | None, cost: Cost) -> Decoded:
    """The candidates scored by ``reward`` (one batched call) and the best of each prompt chosen;
    without a reward, unscored and the first chosen."""
    if reward is not None:
        candidates = score_candidates(reward, prompts, candidates, columns, cost)
    chosen = (lambda row: best_index(row)) if reward is not None else (lambda row: 0)
    return Decoded(name, tuple(Selection(p, tuple(row), chosen(row)) for p, row in zip(prompts, candidates, strict=True)),
                   cost)


def best_index(candidates: Sequence[Candidate]) -> int | None:
    """The highest-scoring candidate (the first of equals); None when none has a score."""
    return best_by_orm([c.score for c in candidates]).index
