"""Records to token ids with an exact prompt/completion boundary, for any Hugging Face tokenizer.

Example: ``RecordTokenizer(AutoTokenizer.from_pretrained(path), TokenizeOptions(512))(pair)``
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from rich.progress import track

from alignlab.data.records import (
    Feedback,
    Judged,
    PreferencePair,
    RankedResponses,
    Record,
    SFTExample,
    StepwiseExample,
    Text,
    is_chat,
)
from alignlab.errors import TokenizationError, require

Ids = tuple[int, ...]
Weights = tuple[float, ...] | None
PROGRESS_MIN_RECORDS = 1000
"""``map`` shows a progress bar from this many records on."""


@dataclass(frozen=True)
class TokenizeOptions:
    max_length: int | None = 1024
    """Longest prompt + completion in tokens (each completion of a pair on its own)."""
    max_prompt_length: int | None = None
    """Longest prompt; a longer one keeps its end (and its BOS at the front)."""
    max_completion_length: int | None = None
    """Longest completion; a longer one is cut or dropped as ``completion_overflow`` says."""
    completion_overflow: Literal["truncate", "drop"] = "truncate"
    """Over a limit: "truncate" cuts the completion (which then has no EOS), "drop" the record."""
    chat_template: str | None = None
    """A Jinja chat template to use instead of ``tokenizer.chat_template``."""
    assistant_turns: Literal["all", "last"] = "all"
    """SFT on a multi-turn conversation: supervise every assistant turn (TRL's
    assistant_only_loss) or only the last ones; system, user and tool turns never."""
    step_separator: str = "\n\n"
    """Stepwise (PRM) data: the text after each step, whose last token carries the step's label
    (PRM800K's and Sun et al.'s "\n\n"; TRL's PRM default is "\n")."""
    train_on_prompt: bool = False
    """SFT: train on the prompt too (TRL's completion_only_loss=false, LLaMA-Factory's
    train_on_prompt): every token after the first, each turn of a conversation included."""

    def __post_init__(self) -> None:
        for key in ("max_length", "max_prompt_length", "max_completion_length"):
            value = getattr(self, key)
            require(value is None or (type(value) is int and value >= 1), key,
                    f"must be a positive integer or null, got {value!r}")
        require(self.completion_overflow in ("truncate", "drop"), "completion_overflow",
                f"must be 'truncate' or 'drop', got {self.completion_overflow!r}")
        require(self.assistant_turns in ("all", "last"), "assistant_turns",
                f"must be 'all' or 'last', got {self.assistant_turns!r}")
        if self.max_length is not None and self.max_prompt_length is not None:
            require(self.max_prompt_length < self.max_length, "max_prompt_length",
                    f"({self.max_prompt_length}) must be less than max_length ({self.max_length}), "
                    "or no room is left for the completion")


@dataclass(frozen=True)
class Encoded:
    """One prompt and one completion; ``truncated``: the completion was cut and has no EOS."""

    prompt_ids: Ids
    completion_ids: Ids
    truncated: bool


@dataclass(frozen=True)
class TokenizedPair:
    prompt_ids: Ids
    chosen_ids: Ids
    rejected_ids: Ids
    chosen_weights: Weights
    rejected_weights: Weights
    record: PreferencePair


@dataclass(frozen=True)
class TokenizedCompletion:
    """A Feedback (its label is on the record) or an SFTExample."""

    prompt_ids: Ids
    completion_ids: Ids
    record: Feedback | SFTExample
    supervised: tuple[bool, ...] | None = None
    """Per completion token, whether the loss reads it (a multi-turn conversation: its assistant
    turns, not the user/tool turns between them); None: every token."""


@dataclass(frozen=True)
class TokenizedSteps:
    """A stepwise solution: its prompt, its steps' ids one after another (each step followed by
    the separator), and where each step ends."""

    prompt_ids: Ids
    completion_ids: Ids
    step_ends: tuple[int, ...]
    """Per kept step, the index in ``completion_ids`` of its last token (the separator's)."""
    labels: tuple[float, ...]
    """The kept steps' labels (a length limit keeps the first steps that fit)."""
    record: StepwiseExample


@dataclass(frozen=True)
class TokenizedRanked:
    prompt_ids: Ids
    responses_ids: tuple[Ids, ...]
    record: RankedResponses


@dataclass(frozen=True)
class TokenizedJudged:
    """Instruction → response; judgment-conditioned prompts are the business of the CUT loss."""

    prompt_ids: Ids
    response_ids: Ids
    record: Judged


Tokenized = TokenizedPair | TokenizedCompletion | TokenizedRanked | TokenizedJudged | TokenizedSteps


@dataclass
class TokenizeResult:
    items: list[Tokenized]
    stats: Counter[str] = field(default_factory=Counter)
    """Counts of this call only: records, kept, dropped_*, *_truncated, boundary_merges, ..."""


def pad_id_of(tokenizer: Any) -> int:
    """The id that pads batches: the tokenizer's pad token, else its EOS (padding is masked out
    everywhere, so any id serves; EOS is the one every causal LM tokenizer has)."""
    pad = tokenizer.pad_token_id
    return pad if pad is not None else tokenizer.eos_token_id


class RecordTokenizer:
    """Turns records into token ids; ``stats`` counts every truncation, drop and repair made.

    - Text is encoded with ``add_special_tokens=False``; BOS goes in front of the prompt iff the
      tokenizer adds one on its own and the prompt (or its chat template) does not start with it.
      Whatever a post-processor appends (an EOS) never reaches the prompt.
    - ``prompt_ids`` encode the prompt alone, as at generation. The completion is what the joint
      encoding of prompt + completion adds; when a token merges across the boundary, it is the
      joint tokens after that token plus an encoding of the completion's share of it, and
      ``decode(prompt_ids + completion_ids)`` must equal the decoded joint encoding.
    - Chats: the prompt renders with the generation prompt; the completion is what the full chat
      adds to that rendering, which must be a prefix of it.
    - EOS exactly once: what follows the last EOS of a completion (template whitespace) is cut and
      repeated final EOS collapse to one; a completion without EOS gets one appended, except a chat
      completion that the template ends with another special token (an end-of-turn token such as
      ``<|eot_id|>`` while ``eos_token`` is ``<|end_of_text|>``): the template is the authority
      on how a turn ends, so it is kept as rendered, whitespace after that token cut.
    - Lengths: the prompt is cut to ``max_prompt_length`` from the left, the completion to
      ``max_completion_length`` and then to fit ``max_length``; a prompt that leaves no room for
      one completion token drops the record (``dropped_prompt_too_long``).
    """

    def __init__(self, tokenizer: Any, options: TokenizeOptions = TokenizeOptions()) -> None:
        self.tokenizer = tokenizer
        self.options = options
        self.stats: Counter[str] = Counter()
        if tokenizer.eos_token_id is None:
            raise TokenizationError(
                f"{type(tokenizer).__name__} has no EOS token, so a completion cannot be ended\n"
                "  hint: set tokenizer.eos_token (the token the model emits to stop) first"
            )
        self.eos_id: int = tokenizer.eos_token_id
        self.bos_id: int | None = tokenizer.bos_token_id
        # Whether the model was trained with BOS: what the tokenizer does on its own tells.
        probe = tokenizer("a", add_special_tokens=True)["input_ids"]
        self.adds_bos = self.bos_id is not None and probe[:1] == [self.bos_id]
        added = tokenizer.added_tokens_decoder.items()
        self.special_ids = frozenset(tokenizer.all_special_ids) | {
            i for i, token in added if getattr(token, "special", False)
        }
        self._offsets = bool(getattr(tokenizer, "is_fast", False))

    def encode(self, prompt: Text, completion: Text) -> Encoded | None:
        """Ids of one prompt and completion; None when a length limit drops them (see ``stats``)."""
        out = self._encode(prompt, {"completion": (completion, None)})
        if out is None:
            return None
        prompt_ids, [(ids, _, truncated)] = out
        return Encoded(prompt_ids, ids, truncated)

    def encode_prompt(self, prompt: Text) -> tuple[int, ...]:
        """Ids of a prompt alone, as :meth:`encode` gives them: what generation continues from."""
        ids = self._ids(self._render(prompt, add_generation_prompt=True))
        return tuple(self._fit_prompt(self._with_bos(ids, from_template=is_chat(prompt))))

    def map(self, records: Iterable[Record], progress: bool = True) -> TokenizeResult:
        """Tokenize many records, leaving dropped ones out; stats count this call only."""
        records = list(records)
        before = self.stats.copy()
        iterator: Iterable[Record] = records
        if progress and len(records) >= PROGRESS_MIN_RECORDS:
            iterator = track(records, "tokenizing", total=len(records), transient=True)
        items = []
        for i, record in enumerate(iterator):
            try:
                out = self(record)
            except TokenizationError as err:
                record_id = getattr(record, "id", None)
                record_id = f" (id {record_id!r})" if record_id is not None else ""
                raise TokenizationError(f"record #{i}{record_id}: {err}") from err
            if out is not None:
                items.append(out)
        stats = self.stats.copy()
        stats.subtract(before)
        stats = +stats  # keeps positive counts only
        stats["records"], stats["kept"] = len(records), len(items)
        return TokenizeResult(items, stats)

    def __call__(self, record: Record) -> Tokenized | None:
        """Tokenize one record; None when a length limit drops it (see ``stats``)."""
        if isinstance(record, PreferencePair):
            out = self._encode(record.prompt, {
                "chosen": (record.chosen, record.chosen_token_weights),
                "rejected": (record.rejected, record.rejected_token_weights),
            })
            if out is None:
                return None
            prompt_ids, [(chosen, chosen_w, _), (rejected, rejected_w, _)] = out
            return TokenizedPair(prompt_ids, chosen, rejected, chosen_w, rejected_w, record)
        if isinstance(record, RankedResponses):
            named = {f"responses[{i}]": (r, None) for i, r in enumerate(record.responses)}
            out = self._encode(record.prompt, named)
            if out is None:
                return None
            return TokenizedRanked(out[0], tuple(ids for ids, _, _ in out[1]), record)
        if isinstance(record, StepwiseExample):
            return self._steps(record)
        if isinstance(record, SFTExample) and record.prompt == "":
            return self._plain_text(record)
        if isinstance(record, SFTExample) and self.options.train_on_prompt:
            item = self._completion(record)
            if item is None:
                return None
            whole = item.prompt_ids + item.completion_ids  # nothing predicts the first token
            return TokenizedCompletion(whole[:1], whole[1:], record)
        if isinstance(record, (Feedback, SFTExample)):
            return self._completion(record)
        if isinstance(record, Judged):
            out = self._encode(record.instruction, {"response": (record.response, None)})
            return None if out is None else TokenizedJudged(out[0], out[1][0][0], record)
        raise TokenizationError(
            f"cannot tokenize a {type(record).__name__}\n"
            "  hint: give a record of alignlab.data.records (PreferencePair, Feedback, ...)"
        )

    def _completion(self, record: Feedback | SFTExample) -> TokenizedCompletion | None:
        """A prompt and its completion; a multi-turn SFT completion with its supervision mask."""
        if isinstance(record, SFTExample) and _multi_turn(record.completion):
            out = self._encode(record.prompt, {"completion": (record.completion, ASSISTANT_TURNS)})
            if out is None:
                return None
            ids, weights, _ = out[1][0]
            return TokenizedCompletion(out[0], ids, record, tuple(w > 0 for w in weights))
        out = self._encode(record.prompt, {"completion": (record.completion, None)})
        return None if out is None else TokenizedCompletion(out[0], out[1][0][0], record)

    def _steps(self, record: StepwiseExample) -> TokenizedSteps | None:
        """Each step and the separator tokenized on their own and concatenated (as TRL's PRM
        trainer does), so every step's end is a token boundary; a length limit keeps the steps
        that fit whole (counted in ``steps_truncated``)."""
        prompt_ids = self.encode_prompt(record.prompt)
        ids: list[int] = []
        ends = []
        for step in record.steps:
            ids += self._ids(step + self.options.step_separator)
            ends.append(len(ids) - 1)
        fitted = self._fit_completion(len(prompt_ids), ids, None)
        if isinstance(fitted, str):
            self.stats[fitted] += 1
            return None
        room = len(fitted[0])
        kept = [end for end in ends if end < room]
        if not kept:
            self.stats["dropped_overlong"] += 1
            return None
        if len(kept) < len(ends):
            self.stats["steps_truncated"] += len(ends) - len(kept)
        return TokenizedSteps(prompt_ids, tuple(ids[:kept[-1] + 1]), tuple(kept), record.labels[:len(kept)], record)

    def _plain_text(self, record: SFTExample) -> TokenizedCompletion | None:
        """Plain text modelled whole (TRL's language-modeling format): BOS where the model takes
        one, the text, EOS. Nothing predicts the first token, so it is the "prompt" and every
        token after it is trained; a length limit cuts (or drops) as it does a completion."""
        text = record.completion
        if self.tokenizer.eos_token and self.tokenizer.eos_token in text:
            self.stats["eos_in_text"] += 1
        ids = self._end(self._with_bos(self._ids(text), from_template=False), chat=False)
        fitted = self._fit_completion(1, ids[1:], None)
        if isinstance(fitted, str):
            self.stats[fitted] += 1
            return None
        completion, _, cut = fitted
        if cut:
            self.stats["completions_truncated"] += 1
        return TokenizedCompletion((ids[0],), tuple(completion), record)

    def _encode(
        self, prompt: Text, completions: dict[str, tuple[Text, Weights]]
    ) -> tuple[Ids, list[tuple[Ids, Weights, bool]]] | None:
        """Prompt ids (computed once, shared) and, per named completion, (ids, weights, cut)."""
        prompt_text = self._render(prompt, add_generation_prompt=True)
        raw_prompt = self._ids(prompt_text)
        finished = []
        for name, (completion, weights) in completions.items():
            if is_chat(prompt) and isinstance(completion, str):
                completion = ({"role": "assistant", "content": completion},)
            texts = [m["content"] for m in completion] if is_chat(completion) else [completion]
            if any(self.tokenizer.eos_token in t for t in texts):
                self.stats["eos_in_text"] += 1
            completion_text = self._completion_text(prompt, prompt_text, completion, name)
            ids = self._split(prompt_text, raw_prompt, completion_text, name)
            ids = self._end(ids, chat=is_chat(prompt))
            if weights is ASSISTANT_TURNS:
                weights = self._assistant_weights(prompt, completion, prompt_text, ids)
            finished.append((ids, self._check_weights(weights, ids, name)))
        prompt_ids = self._fit_prompt(self._with_bos(raw_prompt, from_template=is_chat(prompt)))
        fitted = [self._fit_completion(len(prompt_ids), ids, w) for ids, w in finished]
        dropped = [reason for reason in fitted if isinstance(reason, str)]
        if dropped:  # a pair (or ranked list) is kept whole or not at all
            self.stats[dropped[0]] += 1
            return None
        kept = [(tuple(ids), w, cut) for ids, w, cut in fitted]  # type: ignore[misc]
        if truncated := sum(cut for _, _, cut in kept):
            self.stats["completions_truncated"] += truncated
        return tuple(prompt_ids), kept

    def _render(self, text: Text, add_generation_prompt: bool) -> str:
        if isinstance(text, str):
            return text
        if not (self.options.chat_template or getattr(self.tokenizer, "chat_template", None)):
            raise TokenizationError(
                "a chat record needs a chat template, but the tokenizer has none\n"
                "  hint: pass TokenizeOptions(chat_template=...), use the instruct/chat model's "
                "tokenizer, or give prompt and completions as plain strings"
            )
        return self.tokenizer.apply_chat_template(
            [dict(m) for m in text], chat_template=self.options.chat_template,
            add_generation_prompt=add_generation_prompt, tokenize=False,
        )

    def _completion_text(self, prompt: Text, prompt_text: str, completion: Text, name: str) -> str:
        if isinstance(prompt, str):
            if not isinstance(completion, str):
                raise TokenizationError(f"{name}: a chat completion needs a chat prompt")
            return completion
        full = self._render(tuple(prompt) + tuple(completion), add_generation_prompt=False)
        if not full.startswith(prompt_text):
            at = max(0, len(prompt_text) - 40)
            raise TokenizationError(
                f"{name}: the chat template renders the prompt differently with and without the "
                f"reply, so the reply has no clean start: prompt alone ...{prompt_text[at:]!r}, "
                f"with the reply ...{full[at:at + 80]!r}\n"
                "  hint: pass TokenizeOptions(chat_template=...) with a template whose generation "
                "prompt is exactly the start of a rendered assistant turn"
            )
        return full[len(prompt_text):]

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(
            list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False
        )

    def _split(self, prompt_text: str, prompt_ids: list[int], text: str, name: str) -> list[int]:
        """Completion ids that continue ``prompt_ids`` into the encoding of prompt + completion."""
        joint_text = prompt_text + text
        enc = self.tokenizer(
            joint_text, add_special_tokens=False, return_offsets_mapping=self._offsets
        )
        joint = list(enc["input_ids"])
        if joint[: len(prompt_ids)] == prompt_ids:
            return joint[len(prompt_ids):]
        self.stats["boundary_merges"] += 1
        target = self._decode(joint)
        offsets = enc["offset_mapping"] if self._offsets else None
        boundary = len(prompt_text)
        for candidate in self._merge_candidates(boundary, prompt_ids, joint_text, joint, offsets):
            if self._decode(prompt_ids + candidate) == target:
                return candidate
        raise TokenizationError(
            f"{name}: a token merges across the prompt/completion boundary (prompt ends "
            f"{prompt_text[-20:]!r}, completion starts {text[:20]!r}) and no re-encoding of the "
            "completion's part of it decodes back to the text\n"
            "  hint: end the prompt without trailing whitespace and start the completion with it"
        )

    def _merge_candidates(
        self, boundary: int, prompt_ids: list[int], joint_text: str, joint: list[int],
        offsets: Sequence[tuple[int, int]] | None,
    ) -> Iterator[list[int]]:
        """Completion ids that may continue ``prompt_ids``; the caller keeps one that decodes."""
        pairs = zip(prompt_ids, joint, strict=False)
        same = next((i for i, (a, b) in enumerate(pairs) if a != b), len(joint))
        if offsets is not None:  # fast tokenizers: offsets name the token across the boundary
            k = next((i for i in range(same, len(joint)) if offsets[i][1] > boundary), None)
            if k is None:
                yield []
            else:
                start, end = offsets[k]
                if start >= boundary:
                    yield joint[k:]
                for fragment in self._fragment_ids(joint_text[boundary:end]):
                    yield fragment + joint[k + 1:]
        # Any tokenizer: the first joint prefix that decodes past the prompt holds the merged token.
        prompt_decoded = self._decode(prompt_ids)
        for k in range(same, len(joint)):
            head = self._decode(joint[: k + 1])
            if len(head) > len(prompt_decoded):
                for fragment in self._fragment_ids(head[len(prompt_decoded):]):
                    yield fragment + joint[k + 1:]
                return

    def _fragment_ids(self, fragment: str) -> Iterator[list[int]]:
        if not fragment:
            yield []
            return
        yield self._ids(fragment)
        # Sentencepiece-style tokenizers mark a word start at the start of a text but not after a
        # special token; behind one, the fragment encodes as the continuation it is.
        anchored = self._ids(self.tokenizer.eos_token + fragment)
        if anchored[:1] == [self.eos_id]:
            yield anchored[1:]

    def _with_bos(self, ids: list[int], from_template: bool) -> list[int]:
        """BOS exactly once at the front when the model expects one.

        A chat template that writes BOS itself is normal; a BOS in the user's own text, or a
        second one after the template's, is counted (``bos_in_text``) and kept once.
        """
        if self.bos_id is None:
            return ids
        if ids[:2] == [self.bos_id, self.bos_id]:
            self.stats["bos_in_text"] += 1
            while ids[:2] == [self.bos_id, self.bos_id]:
                ids = ids[1:]
        elif ids[:1] == [self.bos_id] and not from_template:
            self.stats["bos_in_text"] += 1
        if not self.adds_bos or ids[:1] == [self.bos_id]:
            return ids
        return [self.bos_id, *ids]

    def _end(self, ids: list[int], chat: bool) -> list[int]:
        """The EOS rule of the class docstring."""
        if self.eos_id in ids:
            last = len(ids) - 1 - ids[::-1].index(self.eos_id)
            if self._decode(ids[last + 1:]).strip():
                self.stats["text_after_eos_cut"] += 1
            ids = ids[: last + 1]  # a template's "\n" after the EOS is never generated
            while len(ids) >= 2 and ids[-2] == self.eos_id:
                ids = ids[:-1]
            return ids
        if chat:
            end = len(ids)
            while end and self._is_blank(ids[end - 1]):
                end -= 1
            if end and ids[end - 1] in self.special_ids:
                return ids[:end]
        return [*ids, self.eos_id]

    def _is_blank(self, token_id: int) -> bool:
        """A whitespace token, as templates put after an end-of-turn token."""
        return token_id not in self.special_ids and not self._decode([token_id]).strip()

    def _assistant_weights(self, prompt: Text, completion: Text, prompt_text: str, ids: list[int]) -> Weights:
        """1.0 on the tokens of the supervised assistant turns of a multi-turn completion, 0.0 on
        the rest: each turn's characters are where the rendering of the conversation up to and
        including it extends the rendering up to it with the generation prompt, so the template's
        end-of-turn token belongs to the turn it ends and the next role header does not."""
        messages = tuple(prompt) + tuple(completion)
        full = self._render(messages, add_generation_prompt=False)
        turns = [i for i in range(len(prompt), len(messages)) if messages[i]["role"] == "assistant"]
        if self.options.assistant_turns == "last":
            last_other = max(i for i, m in enumerate(messages) if m["role"] != "assistant")
            turns = [i for i in turns if i > last_other]
        spans = []
        for i in turns:
            before = self._render(messages[:i], add_generation_prompt=True)
            through = self._render(messages[:i + 1], add_generation_prompt=False)
            if not (full.startswith(before) and full.startswith(through) and len(through) > len(before)):
                raise TokenizationError(
                    f"the chat template does not render assistant turn {i} as an extension of the turns before "
                    "it, so its tokens cannot be told apart\n  hint: pass tokenize.chat_template with a template "
                    "that renders a conversation's prefixes as prefixes of it, or tokenize.assistant_turns=last")
            spans.append((len(before) - len(prompt_text), len(through) - len(prompt_text)))
        total = len(full) - len(prompt_text)  # the rendered completion's length
        weights = []
        for start, end in self._char_spans(prompt_text, full[len(prompt_text):], ids):
            if start >= total:  # an EOS appended after the rendering: it ends the last turn
                inside = bool(spans) and spans[-1][1] >= total
            else:
                inside = any(a <= start and end <= b for a, b in spans)
            weights.append(1.0 if inside else 0.0)
        return tuple(weights)

    def _char_spans(self, prompt_text: str, completion_text: str, ids: list[int]) -> list[tuple[int, int]]:
        """Each completion token's characters in the rendered completion, from the fast tokenizer's
        offsets of the joint encoding; decoded prefixes where the ids are not its tail (a token
        merged across the boundary, a slow tokenizer). Tokens past the text get (len, len + 1)."""
        past = len(completion_text)
        raw = self._ids(prompt_text)
        if self._offsets:
            enc = self.tokenizer(prompt_text + completion_text, add_special_tokens=False, return_offsets_mapping=True)
            joint, offsets = list(enc["input_ids"]), enc["offset_mapping"]
            tail = joint[len(raw):]
            shared = min(len(ids), len(tail))
            if joint[:len(raw)] == raw and tail[:shared] == list(ids[:shared]):
                spans = [(max(0, a - len(prompt_text)), b - len(prompt_text)) for a, b in offsets[len(raw):len(raw) + shared]]
                return spans + [(past, past + 1)] * (len(ids) - shared)
        spans, previous = [], 0
        for k in range(len(ids)):
            end = max(previous, min(len(self._decode(ids[:k + 1])), past + 1))
            spans.append((previous, end))
            previous = end
        return spans

    def _check_weights(self, weights: Weights, ids: list[int], name: str) -> Weights:
        if weights is None:
            return None
        n = len(ids)
        if len(weights) == n - 1:  # given without the final EOS, which then counts fully
            return (*weights, 1.0)
        if len(weights) == n:
            return tuple(weights)
        raise TokenizationError(
            f"{name}_token_weights has {len(weights)} weights but {name} has {n} completion tokens "
            f"({n - 1} without the final EOS)\n"
            "  hint: give one weight per completion token of this tokenizer, with or without EOS"
        )

    def _fit_prompt(self, ids: list[int]) -> list[int]:
        limit = self.options.max_prompt_length
        if limit is None or len(ids) <= limit:
            return ids
        self.stats["prompts_truncated"] += 1
        # The end of a prompt (the question, the generation prompt) matters most; BOS stays first.
        if limit > 1 and self.bos_id is not None and ids[0] == self.bos_id:
            return [ids[0], *ids[len(ids) - limit + 1:]]
        return ids[len(ids) - limit:]

    def _fit_completion(
        self, prompt_length: int, ids: list[int], weights: Weights
    ) -> tuple[list[int], Weights, bool] | str:
        """(ids, weights, truncated) within the limits, or the stats key of the drop."""
        budget = self.options.max_completion_length
        if self.options.max_length is not None:
            room = self.options.max_length - prompt_length
            if room < 1:
                return "dropped_prompt_too_long"
            budget = room if budget is None else min(budget, room)
        if budget is None or len(ids) <= budget:
            return ids, weights, False
        if self.options.completion_overflow == "drop":
            return "dropped_overlong"
        return ids[:budget], None if weights is None else weights[:budget], True


ASSISTANT_TURNS: Any = object()
"""Sentinel weights of a multi-turn SFT completion: computed from its assistant turns."""


def _multi_turn(completion: Text) -> bool:
    """Whether a completion needs a supervision mask: it holds turns other than assistant ones."""
    return is_chat(completion) and any(m["role"] != "assistant" for m in completion)


__all__ = [
    "Encoded", "RecordTokenizer", "TokenizeOptions", "TokenizeResult", "Tokenized",
    "TokenizedCompletion", "TokenizedJudged", "TokenizedPair", "TokenizedRanked",
]
