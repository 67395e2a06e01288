"""Typed, validated records: the five kinds of training data alignlab understands.

Example: ``PreferencePair(prompt="2+2?", chosen="4", rejected="5", rater_share=0.9)``

A text is either a string or a chat (a tuple of ``{"role", "content"}`` messages). Records check
themselves when built and raise :class:`FieldError` naming the field; loaders add file and line.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from alignlab.errors import FieldError

Message = Mapping[str, str]
Chat = tuple[Message, ...]
Text = str | Chat

CHAT_ROLES = ("system", "user", "assistant", "tool")


class FrozenMessage(dict):
    """A chat message that cannot change and can be hashed, so records stay truly frozen.

    A dict subclass, so chat templates, ``json.dumps`` and ``dict(m)`` treat it as a dict.
    """

    def _immutable(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("chat messages of a record are immutable; build a new record instead")

    __setitem__ = __delitem__ = update = pop = popitem = clear = setdefault = _immutable  # type: ignore[assignment]

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(json.dumps(self, sort_keys=True, default=str))

    def __reduce__(self) -> Any:  # pickling (datasets, multiprocessing) rebuilds through dict
        return (FrozenMessage, (dict(self),))


def is_chat(text: Any) -> bool:
    """True for a sequence of messages (as opposed to a plain string)."""
    return isinstance(text, (list, tuple))


def check_chat(name: str, value: Sequence[Any]) -> Chat:
    """Validate a message list and return it as a tuple of plain ``{"role", "content"}`` dicts."""
    if len(value) == 0:
        raise FieldError(name, "empty message list", "give at least one message", "empty text")
    messages = []
    for i, message in enumerate(value):
        where = f"{name}[{i}]"
        if not isinstance(message, Mapping):
            raise FieldError(
                where,
                f"a message must be an object with 'role' and 'content', got {type(message).__name__}",
                'write messages as {"role": "user", "content": "..."}',
                "invalid chat message",
            )
        missing = [key for key in ("role", "content") if key not in message]
        if missing:
            raise FieldError(
                where,
                f"message lacks {' and '.join(repr(k) for k in missing)}",
                'write messages as {"role": "user", "content": "..."}',
                "invalid chat message",
            )
        role, content = message["role"], message["content"]
        if role not in CHAT_ROLES:
            raise FieldError(
                f"{where}.role",
                f"invalid chat role {role!r}",
                f"use one of {', '.join(CHAT_ROLES)}",
                "invalid chat role",
            )
        if not isinstance(content, str):
            raise FieldError(
                f"{where}.content",
                f"message content must be a string, got {type(content).__name__}",
                "multimodal content lists are not supported; give the text",
                "mistyped field",
            )
        messages.append(FrozenMessage(message))  # extra keys (name, tool_calls) are kept
    return tuple(messages)


def check_text(name: str, value: Any, allow_empty: bool = False) -> Text:
    """Validate a prompt or response: a string or a valid chat, non-empty unless allowed.

    Completions may be empty (a model can answer nothing, and published data sets hold such
    answers); loaders report them. Prompts may not.
    """
    if isinstance(value, str):
        if not value.strip() and not allow_empty:
            raise FieldError(name, "empty text", "remove the row or fill in the text", "empty text")
        return value
    if is_chat(value):
        chat = check_chat(name, value)
        if not allow_empty and not any(m["content"].strip() for m in chat):
            raise FieldError(name, "all messages are empty", "remove the row or fill in the text", "empty text")
        return chat
    raise FieldError(
        name,
        f"expected a string or a list of chat messages, got {_type_name(value)}",
        "give text as a string or as [{\"role\": ..., \"content\": ...}]",
        "mistyped field" if value is not None else "missing field",
    )


def check_prompt(value: Any, name: str = "prompt") -> Text:
    text = check_text(name, value)
    if is_chat(text) and text[-1]["role"] == "assistant":
        raise FieldError(
            name,
            "a chat prompt must not end with an assistant message",
            "move the final assistant turn into the completion (chosen/rejected/completion)",
            "prompt ends with assistant turn",
        )
    return text


def check_completion(name: str, value: Any, prompt: Text, *, multi_turn: bool = False) -> Text:
    """A completion matches its prompt's form: a chat prompt takes assistant messages, or with
    ``multi_turn`` (SFT) the rest of a conversation, starting and ending with an assistant turn."""
    text = check_text(name, value, allow_empty=True)
    if multi_turn and is_chat(text) and {m["role"] for m in text} - {"assistant", "tool"}:
        if text[0]["role"] != "assistant" or text[-1]["role"] != "assistant":
            raise FieldError(name, "a multi-turn completion must start and end with an assistant turn, got "
                             f"{text[0]['role']} … {text[-1]['role']}", "the prompt holds the turns before the "
                             "first assistant reply", "invalid chat role")
        return text
    if is_chat(prompt) and isinstance(text, str):
        return (FrozenMessage(role="assistant", content=text),)
    if isinstance(prompt, str) and is_chat(text):
        raise FieldError(
            name,
            "completion is a chat but the prompt is a plain string",
            "give the prompt as messages too, or the completion as a string",
            "mixed string and chat",
        )
    if is_chat(text):
        roles = {m["role"] for m in text}
        if roles - {"assistant", "tool"}:
            raise FieldError(
                name,
                f"completion messages must be assistant (or tool) turns, got roles {sorted(roles)}",
                "put user/system turns in the prompt",
                "invalid chat role",
            )
    return text


def check_number(name: str, value: Any, low: float = -math.inf, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FieldError(name, f"expected a number, got {_type_name(value)}", "", "mistyped field")
    if not math.isfinite(value) or not low <= value <= high:
        bounds = f" in [{low}, {high}]" if math.isfinite(low) or math.isfinite(high) else ""
        raise FieldError(name, f"expected a finite number{bounds}, got {value!r}", "", "number out of range")
    return float(value)


def check_optional_str(name: str, value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # numeric ids are common; keep them as text
    raise FieldError(name, f"expected a string, got {_type_name(value)}", "", "mistyped field")


def check_weights(name: str, value: Any) -> tuple[float, ...] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)):
        raise FieldError(name, f"expected a list of numbers, got {_type_name(value)}", "", "mistyped field")
    return tuple(check_number(f"{name}[{i}]", w, low=0.0) for i, w in enumerate(value))


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


@dataclass(frozen=True)
class PreferencePair:
    """A prompt with a preferred (chosen) and a dispreferred (rejected) response.

    Identical chosen and rejected are a content problem, not a structural one: the loader rejects
    them (or keeps and reports them for published benchmarks), see ``alignlab.data.validation``.
    """

    prompt: Text
    chosen: Text
    rejected: Text
    margin: float | None = None
    """How much better chosen is than rejected (reward-model margin), if known."""
    rater_share: float | None = None
    """α: the share of raters who preferred chosen, in [0, 1]."""
    chosen_token_weights: tuple[float, ...] | None = None
    """Per-completion-token weights of chosen (dense DPO); checked against its token count."""
    rejected_token_weights: tuple[float, ...] | None = None
    source: str | None = None
    id: str | None = None

    def __post_init__(self) -> None:
        prompt = check_prompt(self.prompt)
        chosen = check_completion("chosen", self.chosen, prompt)
        rejected = check_completion("rejected", self.rejected, prompt)
        _set(self, prompt=prompt, chosen=chosen, rejected=rejected)
        if self.margin is not None:
            _set(self, margin=check_number("margin", self.margin))
        if self.rater_share is not None:
            _set(self, rater_share=check_number("rater_share", self.rater_share, 0.0, 1.0))
        _set(
            self,
            chosen_token_weights=check_weights("chosen_token_weights", self.chosen_token_weights),
            rejected_token_weights=check_weights("rejected_token_weights", self.rejected_token_weights),
            source=check_optional_str("source", self.source),
            id=check_optional_str("id", self.id),
        )


@dataclass(frozen=True)
class Feedback:
    """An unpaired response with a thumbs-up (True) or thumbs-down (False) label."""

    prompt: Text
    completion: Text
    label: bool
    source: str | None = None
    id: str | None = None

    def __post_init__(self) -> None:
        prompt = check_prompt(self.prompt)
        _set(self, prompt=prompt, completion=check_completion("completion", self.completion, prompt))
        if not isinstance(self.label, bool):
            raise FieldError(
                "label",
                f"label must be a boolean, got {self.label!r}",
                "use true for desirable and false for undesirable",
                "label not boolean",
            )
        _set(self, source=check_optional_str("source", self.source), id=check_optional_str("id", self.id))


@dataclass(frozen=True)
class RankedResponses:
    """Several responses to one prompt, with scores (higher is better) or ranks (1 is best)."""

    prompt: Text
    responses: tuple[Text, ...]
    scores: tuple[float, ...] | None = None
    ranks: tuple[int, ...] | None = None
    source: str | None = None
    id: str | None = None

    def __post_init__(self) -> None:
        prompt = check_prompt(self.prompt)
        if not isinstance(self.responses, (list, tuple)) or len(self.responses) < 2:
            raise FieldError("responses", "need a list of at least two responses", "", "too few responses")
        responses = tuple(
            check_completion(f"responses[{i}]", r, prompt) for i, r in enumerate(self.responses)
        )
        if (self.scores is None) == (self.ranks is None):
            raise FieldError("scores", "give exactly one of 'scores' and 'ranks'", "", "missing field")
        order = self.scores if self.scores is not None else self.ranks
        name = "scores" if self.scores is not None else "ranks"
        if not isinstance(order, (list, tuple)) or len(order) != len(responses):
            raise FieldError(
                name,
                f"expected {len(responses)} {name}, one per response",
                "",
                "length mismatch",
            )
        if self.scores is not None:
            _set(self, scores=tuple(check_number(f"scores[{i}]", s) for i, s in enumerate(order)))
        else:
            for i, r in enumerate(order):
                if isinstance(r, bool) or not isinstance(r, int) or r < 1:
                    raise FieldError(f"ranks[{i}]", f"a rank is an integer >= 1, got {r!r}", "", "mistyped field")
            _set(self, ranks=tuple(order))
        _set(
            self,
            prompt=prompt,
            responses=responses,
            source=check_optional_str("source", self.source),
            id=check_optional_str("id", self.id),
        )

    def preference(self, i: int, j: int) -> int:
        """+1 if response i is better than j, -1 if worse, 0 if tied."""
        if self.scores is not None:
            a, b = self.scores[i], self.scores[j]
            return (a > b) - (a < b)
        a, b = self.ranks[i], self.ranks[j]  # type: ignore[index]
        return (a < b) - (a > b)


@dataclass(frozen=True)
class Judged:
    """A response with a natural-language judgment of it (None: no judgment, a positive)."""

    instruction: Text
    response: Text
    judgment: str | None = None
    score: float | None = None
    source: str | None = None
    id: str | None = None

    def __post_init__(self) -> None:
        instruction = check_prompt(self.instruction, "instruction")
        _set(self, instruction=instruction, response=check_completion("response", self.response, instruction))
        if self.judgment is not None:
            if not isinstance(self.judgment, str):
                raise FieldError("judgment", f"expected a string or null, got {_type_name(self.judgment)}", "", "mistyped field")
            if not self.judgment.strip():
                raise FieldError("judgment", "empty judgment", "use null for 'no judgment'", "empty text")
        if self.score is not None:
            _set(self, score=check_number("score", self.score))
        _set(self, source=check_optional_str("source", self.source), id=check_optional_str("id", self.id))


@dataclass(frozen=True)
class SFTExample:
    """A prompt and the response to imitate. In a chat, the completion may be the rest of a
    conversation (assistant turns with user/tool turns between them): tokenization supervises
    its assistant turns (all, or the last ones: ``tokenize.assistant_turns``), never the others.
    An empty prompt is plain text (the ``text`` format): the completion, a string, is modelled
    whole."""

    prompt: Text
    completion: Text
    source: str | None = None
    id: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.prompt, str) and self.prompt == "":
            prompt, completion = "", check_text("completion", self.completion)
            if not isinstance(completion, str):
                raise FieldError("completion", "plain text (an empty prompt) must be a string, not a chat",
                                 "give a chat as messages, or a prompt with it", "mistyped field")
        else:
            prompt = check_prompt(self.prompt)
            completion = check_completion("completion", self.completion, prompt, multi_turn=True)
        _set(
            self,
            prompt=prompt,
            completion=completion,
            source=check_optional_str("source", self.source),
            id=check_optional_str("id", self.id),
        )


@dataclass(frozen=True)
class StepwiseExample:
    """A prompt, a solution written as steps, and one label per step (TRL's stepwise supervision;
    PRM800K's step ratings): what a process reward model learns. A label is True/False, or a
    probability in [0, 1] that the step is correct."""

    prompt: Text
    steps: tuple[str, ...]
    labels: tuple[float, ...]
    source: str | None = None
    id: str | None = None

    COLUMNS: ClassVar[Mapping[str, str]] = {"steps": "completions"}
    """Fields written under another column name (the stepwise format's)."""

    def __post_init__(self) -> None:
        prompt = check_prompt(self.prompt)
        if isinstance(self.steps, str) or not isinstance(self.steps, (list, tuple)) or not self.steps:
            raise FieldError("completions", f"expected a non-empty list of step texts, got {_type_name(self.steps)}",
                             "give the solution's steps as a list of strings", "mistyped field")
        steps = []
        for i, step in enumerate(self.steps):
            if not isinstance(step, str):
                raise FieldError(f"completions[{i}]", f"expected a string, got {_type_name(step)}", "", "mistyped field")
            if not step.strip():
                raise FieldError(f"completions[{i}]", "empty step", "remove the step or fill in its text", "empty text")
            steps.append(step)
        if isinstance(self.labels, (str, bytes)) or not isinstance(self.labels, (list, tuple)):
            raise FieldError("labels", f"expected a list of step labels, got {_type_name(self.labels)}", "",
                             "mistyped field")
        if len(self.labels) != len(steps):
            raise FieldError("labels", f"{len(self.labels)} labels for {len(steps)} steps",
                             "give one label per step", "length mismatch")
        labels = tuple(float(label) if isinstance(label, bool) else check_number(f"labels[{i}]", label, 0.0, 1.0)
                       for i, label in enumerate(self.labels))
        _set(self, prompt=prompt, steps=tuple(steps), labels=labels,
             source=check_optional_str("source", self.source), id=check_optional_str("id", self.id))


Record = PreferencePair | Feedback | RankedResponses | Judged | SFTExample | StepwiseExample


def _set(record: Any, **values: Any) -> None:
    # Frozen dataclasses forbid assignment; normalisation in __post_init__ is the one exception.
    for name, value in values.items():
        object.__setattr__(record, name, value)


def ranked_to_pairs(ranked: RankedResponses) -> list[PreferencePair]:
    """All strictly ordered pairs (i better than j) of a ranked record, ties left out."""
    pairs = []
    n = len(ranked.responses)
    for i in range(n):
        for j in range(i + 1, n):
            sign = ranked.preference(i, j)
            if sign == 0 or ranked.responses[i] == ranked.responses[j]:
                continue
            win, lose = (i, j) if sign > 0 else (j, i)
            pairs.append(
                PreferencePair(
                    ranked.prompt, ranked.responses[win], ranked.responses[lose],
                    source=ranked.source, id=f"{ranked.id}:{win}>{lose}" if ranked.id else None,
                )
            )
    return pairs


def pairs_to_feedback(pairs: Sequence[PreferencePair]) -> list[Feedback]:
    """Split each pair into a desirable (chosen) and an undesirable (rejected) example."""
    out = []
    for pair in pairs:
        out.append(Feedback(pair.prompt, pair.chosen, True, source=pair.source, id=pair.id))
        out.append(Feedback(pair.prompt, pair.rejected, False, source=pair.source, id=pair.id))
    return out


RECORD_KINDS: dict[str, type] = {
    "paired": PreferencePair,
    "unpaired": Feedback,
    "ranked": RankedResponses,
    "judged": Judged,
    "sft": SFTExample,
    "stepwise": StepwiseExample,
}
"""Record class per data kind, with the kind names loss contracts use."""

__all__ = [
    "CHAT_ROLES", "Chat", "Feedback", "Judged", "Message", "PreferencePair", "RECORD_KINDS",
    "RankedResponses", "Record", "SFTExample", "StepwiseExample", "Text", "is_chat", "pairs_to_feedback",
    "ranked_to_pairs",
]
