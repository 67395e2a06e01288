"""Format adapters: recognise a row's schema and turn it into records, reading data as published.

Example: ``detect_format({"prompt": "hi", "chosen": "a", "rejected": "b"}).name == "preference"``

Each adapter is registered in ``FORMATS`` (most specific first, which is the detection order)
with its contract: the columns it needs, the record kind it yields, and whether it reads a
published benchmark (whose rows are kept as published and whose quirks are reported).
An adapter returns records and :class:`Drop` markers: rows removed by the format's own rule
(a PandaLM tie, a FineGrainedRLHF "no preference"), which the loader counts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from alignlab.data.records import (
    Feedback,
    Judged,
    PreferencePair,
    RankedResponses,
    Record,
    SFTExample,
    StepwiseExample,
    is_chat,
)
from alignlab.errors import FieldError
from alignlab.registry import FORMATS


@dataclass(frozen=True)
class Drop:
    """A row (or part of one) removed by its format's own rule, with the reason to count."""

    reason: str


@dataclass(frozen=True)
class Note:
    """Something an adapter did to read a row as published (kept; the loader reports it)."""

    reason: str


Converted = list[Record | Drop | Note]
Adapter = Callable[[Mapping[str, Any], str], Converted]


def _always(row: Mapping[str, Any]) -> bool:
    return True


@dataclass(frozen=True)
class FormatSpec:
    """What a format adapter reads and yields: its registry contract."""

    columns: tuple[str, ...]
    """Columns a row must have for this format to be considered."""
    kind: str
    """The record kind it yields ("paired", "unpaired", ...)."""
    published: bool = False
    """A published benchmark: its rows are read as published and their quirks reported."""
    accepts: Callable[[Mapping[str, Any]], bool] = _always
    """A further check on a row that has the columns (e.g. a chat, not a string)."""
    priority: int = 0
    """Detection order: lower is tried first (the order of registration)."""

PAIR_EXTRAS = ("margin", "rater_share", "chosen_token_weights", "rejected_token_weights", "source", "id")


def _need(row: Mapping[str, Any], name: str) -> Any:
    if name not in row:
        raise FieldError(name, "missing field", f"the row has columns {sorted(row)}", "missing field")
    return row[name]


def _extras(row: Mapping[str, Any], names: tuple[str, ...], source: str) -> dict[str, Any]:
    values = {name: row[name] for name in names if row.get(name) is not None}
    values.setdefault("source", source)
    return values


def _string(row: Mapping[str, Any], name: str) -> str:
    value = _need(row, name)
    if not isinstance(value, str):
        raise FieldError(name, f"expected a string, got {type(value).__name__}", "", "mistyped field")
    return value


def format_names() -> list[str]:
    return FORMATS.names()


def detect_format(row: Mapping[str, Any]) -> Any:
    """The registry entry of the first (most specific) format whose columns the row has."""
    keys = set(row)
    ordered = sorted(FORMATS.entries(), key=lambda e: e.contract.priority)
    for entry in ordered:
        if set(entry.contract.columns) <= keys and entry.contract.accepts(row):
            return entry
    mapping_hint = "rename columns with a mapping, e.g. --map chosen=response_a rejected=response_b"
    # A near miss (most of one format's columns) is a missing field, not an unknown format.
    overlap = {e.name: len(set(e.contract.columns) & keys) for e in ordered}
    best = max(overlap.values(), default=0)
    near = [e for e in ordered if overlap[e.name] == best and best >= 2]
    if near:
        columns = near[0].contract.columns
        missing = [c for c in columns if c not in keys]
        raise FieldError(missing[0], f"missing field (format {near[0].name!r} needs {', '.join(columns)})",
                         mapping_hint, "missing field")
    raise FieldError(None, f"unrecognised columns {sorted(keys)}",
                     f"{mapping_hint}; known formats: {', '.join(format_names())}", "unknown format")


def register(name: str, columns: tuple[str, ...], kind: str, *, published: bool = False,
             accepts: Callable[[Mapping[str, Any]], bool] = _always) -> Callable[[Adapter], Adapter]:
    """Register an adapter; detection tries formats in the order they are registered here."""
    return FORMATS.register(name, FormatSpec(columns, kind, published, accepts, priority=len(FORMATS)))


# ---- published benchmarks (specific schemas first) -------------------------------------------


@register("pandalm", ("instruction", "input", "response1", "response2", "annotator1"), "paired", published=True)
def pandalm(row: Mapping[str, Any], source: str) -> Converted:
    """PandaLM: three annotators vote 0 (tie), 1 or 2; the majority wins, a tied vote is dropped.

    rater_share = (votes for chosen + half the tie votes) / number of votes.
    """
    votes = []
    for key in sorted(k for k in row if k.startswith("annotator")):
        vote = row[key]
        if isinstance(vote, bool) or vote not in (0, 1, 2):
            raise FieldError(key, f"annotator vote must be 0, 1 or 2, got {vote!r}", "", "invalid label")
        votes.append(vote)
    counts = {v: votes.count(v) for v in (0, 1, 2)}
    best = max(counts.values())
    winners = [v for v, c in counts.items() if c == best]
    if winners != [1] and winners != [2]:
        return [Drop("tie between raters")]
    win = winners[0]
    instruction, extra = _string(row, "instruction"), _string(row, "input")
    prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    notes: Converted = []
    responses = {}
    for i in (1, 2):
        value = _need(row, f"response{i}")
        if isinstance(value, (bool, int, float)):
            # PandaLM stores some one-word answers as JSON literals (true); as published, that is
            # the text the model answered.
            value = str(value)
            notes.append(Note("non-string response read as text"))
        responses[i] = _string({f"response{i}": value}, f"response{i}")
    share = (counts[win] + 0.5 * counts[0]) / len(votes)
    idx = row.get("idx")
    return notes + [PreferencePair(prompt, responses[win], responses[3 - win], rater_share=share,
                                   source=source, id=None if idx is None else str(idx))]


FINEGRAINED_ORDER = ((1, 2), (1, 3), (1, 4), (2, 3), (2, 4), (3, 4))


@register("finegrained", ("question", "prediction 1", "prediction 2", "preference"), "paired", published=True)
def finegrained(row: Mapping[str, Any], source: str) -> Converted:
    """FineGrainedRLHF QA feedback: 4 predictions, 6 pairwise votes (1v2, 1v3, 1v4, 2v3, 2v4, 3v4).

    A vote of 1 means the first is better, 2 the second, 0 no preference (dropped and counted).
    """
    prompt = _string(row, "question")
    predictions = {i: _string(row, f"prediction {i}") for i in range(1, 5)}
    votes = _need(row, "preference")
    if not isinstance(votes, list) or len(votes) != 6:
        raise FieldError("preference", "expected a list of 6 votes", "order: 1v2 1v3 1v4 2v3 2v4 3v4", "mistyped field")
    out: Converted = []
    for (a, b), vote in zip(FINEGRAINED_ORDER, votes, strict=True):
        if isinstance(vote, bool) or vote not in (0, 1, 2):
            raise FieldError("preference", f"vote must be 0, 1 or 2, got {vote!r}", "", "invalid label")
        if vote == 0:
            out.append(Drop("no preference"))
            continue
        win, lose = (a, b) if vote == 1 else (b, a)
        out.append(PreferencePair(prompt, predictions[win], predictions[lose], source=source))
    return out


def finegrained_ranked(row: Mapping[str, Any], source: str) -> Converted:
    """The same row as one ranked record: each prediction scored by its pairwise wins (Copeland).

    A question whose six votes are all "no preference" ranks nothing and is dropped (counted).
    """
    finegrained(row, source)  # validates the row
    wins = [0.0] * 4
    for (a, b), vote in zip(FINEGRAINED_ORDER, row["preference"], strict=True):
        if vote:
            wins[(a if vote == 1 else b) - 1] += 1
    if not any(row["preference"]):
        return [Drop("no preference")]
    predictions = tuple(row[f"prediction {i}"] for i in range(1, 5))
    return [RankedResponses(row["question"], predictions, scores=tuple(wins), source=source)]


def _between(text: str, start: str, end: str, name: str) -> str:
    i = text.find(start)
    j = text.find(end, i + len(start)) if i >= 0 else -1
    if i < 0 or j < 0:
        raise FieldError(name, f"judge prompt lacks the markers {start!r} … {end!r}", "", "malformed judge prompt")
    return text[i + len(start) : j].strip()


@register("prometheus_pairs", ("chosen_instruction", "rejected_instruction"), "paired", published=True)
def prometheus_pairs(row: Mapping[str, Any], source: str) -> Converted:
    """HHH alignment as wrapped by prometheus-eval: instruction and response inside judge prompts."""
    marks = ("###The instruction to evaluate:", "###Response to evaluate:", "###Score Rubrics:")
    chosen_doc, rejected_doc = _string(row, "chosen_instruction"), _string(row, "rejected_instruction")
    prompt = _between(chosen_doc, marks[0], marks[1], "chosen_instruction")
    if _between(rejected_doc, marks[0], marks[1], "rejected_instruction") != prompt:
        raise FieldError("rejected_instruction", "instruction differs from chosen_instruction's", "", "prompt mismatch")
    chosen = _between(chosen_doc, marks[1], marks[2], "chosen_instruction")
    rejected = _between(rejected_doc, marks[1], marks[2], "rejected_instruction")
    sub = row.get("source")
    return [PreferencePair(prompt, chosen, rejected, source=f"{source}/{sub}" if sub else source)]


@register("llmbar", ("input", "output_1", "output_2", "label"), "paired", published=True)
def llmbar(row: Mapping[str, Any], source: str) -> Converted:
    """LLMBar: label 1 or 2 names the better output."""
    label = row["label"]
    if isinstance(label, bool) or label not in (1, 2):
        raise FieldError("label", f"label must be 1 or 2, got {label!r}", "1 = output_1 is better", "invalid label")
    outputs = {1: _string(row, "output_1"), 2: _string(row, "output_2")}
    return [PreferencePair(_string(row, "input"), outputs[label], outputs[3 - label], source=source)]


def _is_hh(row: Mapping[str, Any]) -> bool:
    chosen = row.get("chosen")
    return "prompt" not in row and isinstance(chosen, str) and chosen.lstrip("\n").startswith("Human:")


HH_TURN = "\n\nAssistant:"


@register("hh", ("chosen", "rejected"), "paired", published=True, accepts=_is_hh)
def hh(row: Mapping[str, Any], source: str) -> Converted:
    """Anthropic HH transcripts: the prompt is the shared prefix up to its last "\\n\\nAssistant:"."""
    chosen, rejected = _string(row, "chosen"), _string(row, "rejected")
    shared = chosen[: _common_prefix_length(chosen, rejected)]
    cut = shared.rfind(HH_TURN)
    if cut < 0:
        raise FieldError("chosen", "transcripts share no '\\n\\nAssistant:' turn", "", "malformed transcript")
    cut += len(HH_TURN)
    return [PreferencePair(chosen[:cut], chosen[cut:], rejected[cut:], **_extras(row, PAIR_EXTRAS, source))]


# ---- generic (TRL-style) formats -------------------------------------------------------------


def _common_prefix_length(a: Any, b: Any) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def split_implicit_prompt(chosen: Any, rejected: Any) -> tuple[Any, Any, Any]:
    """Extract the shared prompt of two full texts (strings or chats), as TRL's implicit format.

    Strings: the common prefix, leaving a trailing space to the completions (where BPE tokenizers
    attach it). Chats: the common leading messages.
    """
    if isinstance(chosen, str) and isinstance(rejected, str):
        n = _common_prefix_length(chosen, rejected)
        if n > 0 and n < len(chosen) and chosen[n - 1] == " ":
            n -= 1
        return chosen[:n], chosen[n:], rejected[n:]
    if is_chat(chosen) and is_chat(rejected):
        n = _common_prefix_length(chosen, rejected)
        while n > 0 and isinstance(chosen[n - 1], Mapping) and chosen[n - 1].get("role") == "assistant":
            n -= 1  # the prompt ends before the assistant turns that are being compared
        return list(chosen[:n]), list(chosen[n:]), list(rejected[n:])
    raise FieldError("chosen", "chosen and rejected must both be strings or both be chats", "", "mixed string and chat")


@register("preference", ("prompt", "chosen", "rejected"), "paired")
def preference(row: Mapping[str, Any], source: str) -> Converted:
    """TRL preference format with explicit prompt (standard strings or conversational messages)."""
    return [PreferencePair(row["prompt"], row["chosen"], row["rejected"], **_extras(row, PAIR_EXTRAS, source))]


@register("preference_implicit", ("chosen", "rejected"), "paired")
def preference_implicit(row: Mapping[str, Any], source: str) -> Converted:
    """TRL preference format without a prompt column: the shared prefix becomes the prompt."""
    prompt, chosen, rejected = split_implicit_prompt(row["chosen"], row["rejected"])
    if not prompt:
        raise FieldError("chosen", "chosen and rejected share no prompt", "add a 'prompt' column", "missing field")
    return [PreferencePair(prompt, chosen, rejected, **_extras(row, PAIR_EXTRAS, source))]


@register("unpaired", ("prompt", "completion", "label"), "unpaired")
def unpaired(row: Mapping[str, Any], source: str) -> Converted:
    """TRL unpaired (KTO/BCO) format: a completion with a boolean desirability label."""
    label = row["label"]
    if isinstance(label, str) and label.strip().lower() in ("true", "false"):
        label = label.strip().lower() == "true"  # CSV cells carry booleans as text
    return [Feedback(row["prompt"], row["completion"], label, **_extras(row, ("source", "id"), source))]


def _has_scores(row: Mapping[str, Any]) -> bool:
    return "scores" in row or "ranks" in row


@register("ranked", ("prompt", "responses"), "ranked", accepts=_has_scores)
def ranked(row: Mapping[str, Any], source: str) -> Converted:
    """Several responses per prompt with ``scores`` (higher is better) or ``ranks`` (1 is best)."""
    return [RankedResponses(row["prompt"], row["responses"], scores=row.get("scores"), ranks=row.get("ranks"),
                            **_extras(row, ("source", "id"), source))]


@register("judged", ("instruction", "response", "judgment"), "judged")
def judged(row: Mapping[str, Any], source: str) -> Converted:
    """Instruction, response and a natural-language judgment (null for none), optional score."""
    return [Judged(row["instruction"], row["response"], row["judgment"], score=row.get("score"),
                   **_extras(row, ("source", "id"), source))]


@register("sft", ("prompt", "completion"), "sft")
def sft(row: Mapping[str, Any], source: str) -> Converted:
    """Prompt and completion to imitate (TRL prompt-completion format)."""
    return [SFTExample(row["prompt"], row["completion"], **_extras(row, ("source", "id"), source))]


@register("stepwise", ("prompt", "completions", "labels"), "stepwise")
def stepwise(row: Mapping[str, Any], source: str) -> Converted:
    """A solution as steps with one label each (TRL's stepwise-supervision format), for process
    reward models."""
    return [StepwiseExample(row["prompt"], row["completions"], row["labels"], **_extras(row, ("source", "id"), source))]


@register("text", ("text",), "sft")
def text(row: Mapping[str, Any], source: str) -> Converted:
    """Plain text modelled whole (TRL's language-modeling format; continued pretraining): no
    prompt, every token after the first trained, EOS appended."""
    value = _string(row, "text")
    if not value.strip():
        raise FieldError("text", "empty text", "remove the row or fill in the text", "empty text")
    return [SFTExample("", value, **_extras(row, ("source", "id"), source))]


@register("sft_messages", ("messages",), "sft")
def sft_messages(row: Mapping[str, Any], source: str) -> Converted:
    """A whole conversation: the turns before the first assistant reply are the prompt, the rest
    (every assistant turn, with the user/tool turns between them) the completion; tokenization
    supervises the assistant turns only (all of them by default, TRL's ``assistant_only_loss``)."""
    messages = row["messages"]
    if not is_chat(messages):
        raise FieldError("messages", "expected a list of chat messages", "", "mistyped field")
    if not messages or not isinstance(messages[-1], Mapping) or messages[-1].get("role") != "assistant":
        raise FieldError("messages", "conversation does not end with an assistant turn", "", "no completion")
    first = next(i for i, m in enumerate(messages) if isinstance(m, Mapping) and m.get("role") == "assistant")
    if first == 0:
        raise FieldError("messages", "conversation starts with an assistant turn: nothing prompts it", "",
                         "no prompt")
    return [SFTExample(list(messages[:first]), list(messages[first:]), **_extras(row, ("source", "id"), source))]
