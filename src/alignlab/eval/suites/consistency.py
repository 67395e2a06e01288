"""Factual consistency (Zha, Yang, Li, Hu 2023, "AlignScore: Evaluating Factual Consistency with a
Unified Alignment Function", arXiv 2305.16739): is each claim supported by its context?

Example: ``alignlab eval --suite consistency --model runs/sft/model --items my_contexts.jsonl --out runs/eval``

Aggregation (as the authors' ``nli_sp`` mode, their default): the context is split into sentences
and the sentences grouped into consecutive chunks of about ``chunk_words`` (350) words — with W
words and S sentences, ``W // chunk_words + 1`` chunks are wanted and each takes
``max(S // that, 1)`` sentences, joined by spaces (so a remainder makes one short chunk more); the
claim is split into sentences. The alignment function scores every (chunk, sentence) pair, and

    score = mean over claim sentences of (max over context chunks of align(chunk, sentence)).

The alignment function is pluggable, ``scorer(premises, hypotheses) -> [p in [0, 1]]``:

- ``lexical`` (the default, always available; a baseline, not the paper's model): the share of the
  hypothesis' content words (lower case, stop words and one-letter tokens removed; negations kept)
  and numbers (compared by value) that the premise contains, halved for every hypothesis number
  the premise does not contain and every negation word (not, no, never, ...) it does not use;
  1 for a hypothesis with no content word;
- :class:`NLIScorer` (``scorer="<name or path of an NLI cross-encoder>"``): the entailment
  probability of an ``AutoModelForSequenceClassification`` (softmax over its labels), standing in
  for the 3-way head's "aligned" probability of the paper's model. The AlignScore checkpoints
  themselves (RoBERTa with three heads, read by the authors' package) are not loaded here.

Sentences are split by punctuation (., !, ? followed by space and a non-lower-case character,
common abbreviations and initials excepted), an approximation of NLTK's Punkt that the authors use.

Protocol. Items ``{"context", "claim", "label"}``:

- the model's own responses: each context is given with a request to summarise it (or, with a
  ``question``, to answer from it); the response is the claim. ``response_consistency`` = mean
  score over responses with at least one sentence (s.e. = sample s.d. / √n; empty responses are
  counted, not scored); ``response_consistent_share`` = share of those with score ≥ ``threshold``;
- the scorer's agreement with labels, on the items that carry ``label`` (1/true: consistent):
  ``scorer_auc`` = P(score of a consistent claim > score of an inconsistent one) + ½ P(tie), by the
  rank formula (R₊ − n₊(n₊ + 1)/2) / (n₊ n₋) with average ranks for ties, s.e. by Hanley and
  McNeil (1982); ``scorer_accuracy`` = share of labelled claims where (score ≥ ``threshold``)
  equals the label (the threshold, default 0.5, is alignlab's choice, not the paper's).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from alignlab.data.readers import Location
from alignlab.errors import ConfigError
from alignlab.eval.suites.base import (
    Metric,
    Suite,
    SuiteResult,
    proportion,
    register_suite,
    require,
)
from alignlab.rewards.verifiers import numbers_in

Scorer = Callable[[list[str], list[str]], list[float]]
"""``scorer(premises, hypotheses)``: one alignment probability in [0, 1] per (premise, hypothesis) pair."""

CHUNK_WORDS = 350
"""The authors' chunk size (whitespace-separated words of the context per chunk)."""

SUMMARY_PROMPT = ("Summarise the following text in one or two sentences, using only facts it states.\n\n"
                  "Text: {context}\n\nSummary:")
ANSWER_PROMPT = ("Answer the question using only facts stated in the text.\n\nText: {context}\n\n"
                 "Question: {question}\n\nAnswer:")

ABBREVIATIONS = frozenset({"mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "inc", "ltd",
                           "co", "corp", "fig", "vol", "approx", "jan", "feb", "mar", "apr", "jun", "jul", "aug",
                           "sep", "sept", "oct", "nov", "dec", "u.s", "u.k"})
"""Words whose final period does not end a sentence (lower case, without that period)."""

STOP_WORDS = frozenset({
    "a", "about", "above", "after", "again", "against", "all", "am", "an", "and", "any", "are", "as", "at", "be",
    "because", "been", "before", "being", "below", "between", "both", "but", "by", "can", "could", "did", "do",
    "does", "doing", "down", "during", "each", "few", "for", "from", "further", "had", "has", "have", "having",
    "he", "her", "here", "hers", "herself", "him", "himself", "his", "how", "i", "if", "in", "into", "is", "it",
    "its", "itself", "just", "me", "more", "most", "my", "myself", "of", "off", "on", "once", "only", "or", "other",
    "our", "ours", "ourselves", "out", "over", "own", "same", "she", "should", "so", "some", "such", "than", "that",
    "the", "their", "theirs", "them", "themselves", "then", "there", "these", "they", "this", "those", "through",
    "to", "too", "under", "until", "up", "very", "was", "we", "were", "what", "when", "where", "which", "while",
    "who", "whom", "why", "will", "with", "would", "you", "your", "yours", "yourself", "yourselves", "also",
})
"""English function words the lexical scorer ignores; negations are deliberately not among them."""

NEGATIONS = frozenset({"not", "no", "never", "none", "nobody", "nothing", "neither", "nor", "cannot", "without"})


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text``: a break after ., ! or ? (and closing quotes or brackets) followed by
    whitespace and a character that is not lower case; not after an abbreviation or an initial."""
    text = text.strip()
    if not text:
        return []
    sentences, start = [], 0
    for match in re.finditer(r"[.!?]+[\"'”’)\]]*(\s+)", text):
        following = text[match.end():match.end() + 1]
        if not following or following.islower():
            continue
        if match.group().startswith("."):
            word = re.search(r"(\S+)$", text[start:match.start()])
            token = word.group(1).lower().lstrip("\"'“‘([") if word else ""
            if token in ABBREVIATIONS or (len(token) == 1 and token.isalpha()):
                continue
        sentences.append(text[start:match.start(1)].strip())
        start = match.end()
    last = text[start:].strip()
    if last:
        sentences.append(last)
    return sentences


def context_chunks(context: str, chunk_words: int = CHUNK_WORDS) -> list[str]:
    """The context's chunks by the authors' rule (module docstring): consecutive sentences, joined by spaces."""
    if chunk_words < 1:
        raise ValueError(f"chunk_words must be ≥ 1, got {chunk_words}")
    sentences = split_sentences(context) or [""]
    wanted = len(context.split()) // chunk_words + 1
    per_chunk = max(len(sentences) // wanted, 1)
    return [" ".join(sentences[i:i + per_chunk]) for i in range(0, len(sentences), per_chunk)]


@dataclass(frozen=True)
class Alignment:
    """One claim against one context: the chunks, the claim's sentences, every pair's score."""

    chunks: tuple[str, ...]
    sentences: tuple[str, ...]
    matrix: tuple[tuple[float, ...], ...]
    """``matrix[i][j]``: the scorer's value for chunk i and claim sentence j."""

    @property
    def sentence_scores(self) -> list[float]:
        """Each claim sentence's best support: the max over chunks."""
        return [max(row[j] for row in self.matrix) for j in range(len(self.sentences))]

    @property
    def score(self) -> float | None:
        """The mean of :attr:`sentence_scores`; None for a claim without a sentence."""
        best = self.sentence_scores
        return sum(best) / len(best) if best else None


def align(context: str, claim: str, scorer: Scorer, chunk_words: int = CHUNK_WORDS) -> Alignment:
    """Score every (chunk, claim sentence) pair with one call of ``scorer`` (chunk-major order)."""
    chunks, sentences = context_chunks(context, chunk_words), split_sentences(claim)
    if not sentences:
        return Alignment(tuple(chunks), (), ())
    premises = [c for c in chunks for _ in sentences]
    hypotheses = [s for _ in chunks for s in sentences]
    values = list(scorer(premises, hypotheses))
    if len(values) != len(premises):
        raise ValueError(f"the consistency scorer returned {len(values)} values for {len(premises)} pairs")
    for value in values:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= float(value) <= 1:
            raise ValueError(f"the consistency scorer must return probabilities in [0, 1], got {value!r}")
    width = len(sentences)
    matrix = tuple(tuple(float(v) for v in values[i * width:(i + 1) * width]) for i in range(len(chunks)))
    return Alignment(tuple(chunks), tuple(sentences), matrix)


def alignment_score(context: str, claim: str, scorer: Scorer, chunk_words: int = CHUNK_WORDS) -> float | None:
    """Mean over the claim's sentences of the max over the context's chunks of ``scorer`` (None: no sentence)."""
    return align(context, claim, scorer, chunk_words).score


def _words(text: str) -> list[str]:
    text = re.sub(r"n[’']t\b", " not", text.lower())
    return [w for w in re.findall(r"[^\W\d_]+", text) if len(w) > 1]


def lexical_alignment(premise: str, hypothesis: str, penalty: float = 0.5) -> float:
    """The lexical baseline's value for one pair (module docstring)."""
    premise_words = set(_words(premise))
    words = [w for w in _words(hypothesis) if w not in STOP_WORDS]
    premise_numbers = numbers_in(premise)
    numbers = numbers_in(hypothesis)
    if not words and not numbers:
        return 1.0
    found_numbers = [any(math.isclose(n, p, rel_tol=1e-9, abs_tol=1e-12) for p in premise_numbers) for n in numbers]
    found_words = [w in premise_words for w in words]
    coverage = (sum(found_words) + sum(found_numbers)) / (len(words) + len(numbers))
    mismatches = found_numbers.count(False) + sum(1 for w, f in zip(words, found_words, strict=True)
                                                  if w in NEGATIONS and not f)
    return coverage * penalty ** mismatches


def lexical_scorer(premises: list[str], hypotheses: list[str]) -> list[float]:
    """:func:`lexical_alignment` for each (premise, hypothesis) pair: the always-available scorer."""
    return [lexical_alignment(p, h) for p, h in zip(premises, hypotheses, strict=True)]


class NLIScorer:
    """An NLI cross-encoder (``AutoModelForSequenceClassification``) as the alignment function: the
    softmax probability of its entailment label for (premise, hypothesis), premise truncated first.

    The entailment label is the one whose name (``config.id2label``) starts with "entail", or
    ``entailment_label`` (a label name or index). The model is read with ``from_pretrained`` from
    a local folder or the Hugging Face cache (``local_files_only=True`` forbids a download)."""

    def __init__(self, model: str, *, device: str | None = None, batch_size: int = 16, max_length: int = 512,
                 entailment_label: str | int | None = None, local_files_only: bool = False) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.name, self.batch_size, self.max_length = model, batch_size, max_length
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(model, local_files_only=local_files_only)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            model, local_files_only=local_files_only).to(self.device).eval()
        labels = {int(i): str(n) for i, n in self.model.config.id2label.items()}
        if isinstance(entailment_label, int):
            if entailment_label not in labels:
                raise ConfigError(f"NLI model {model!r} has no label index {entailment_label}; its labels: {labels}")
            self.entailment = entailment_label
        else:
            wanted = [i for i, n in labels.items() if (n.lower() == entailment_label.lower() if entailment_label
                                                       else n.lower().startswith("entail"))]
            if len(wanted) != 1:
                raise ConfigError(f"NLI model {model!r}: cannot tell its entailment label among {labels}\n  hint: "
                                  "pass entailment_label (the label's name or index)")
            self.entailment = wanted[0]

    def __call__(self, premises: list[str], hypotheses: list[str]) -> list[float]:
        import torch

        out: list[float] = []
        for start in range(0, len(premises), self.batch_size):
            batch = self.tokenizer(premises[start:start + self.batch_size], hypotheses[start:start + self.batch_size],
                                   truncation="only_first", max_length=self.max_length, padding=True,
                                   return_tensors="pt").to(self.device)
            with torch.no_grad():
                logits = self.model(**batch).logits.float()
            out += torch.softmax(logits, dim=-1)[:, self.entailment].tolist()
        return out


def build_scorer(spec: str | Scorer) -> tuple[Scorer, str]:
    """``"lexical"``, a model name or path (an :class:`NLIScorer`), or a callable; with its name."""
    if callable(spec):
        return spec, getattr(spec, "name", getattr(spec, "__name__", type(spec).__name__))
    if spec == "lexical":
        return lexical_scorer, "lexical"
    return NLIScorer(spec), f"nli:{spec}"


def rank_auc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """AUC by the rank formula (average ranks for ties); None unless both labels occur."""
    positives = sum(1 for y in labels if y)
    negatives = len(labels) - positives
    if not positives or not negatives:
        return None
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    positive_ranks = sum(r for r, y in zip(ranks, labels, strict=True) if y)
    return (positive_ranks - positives * (positives + 1) / 2) / (positives * negatives)


def auc_stderr(auc: float, positives: int, negatives: int) -> float:
    """Hanley and McNeil's (1982) standard error of an AUC from n₊ positives and n₋ negatives."""
    q1, q2 = auc / (2 - auc), 2 * auc ** 2 / (1 + auc)
    variance = (auc * (1 - auc) + (positives - 1) * (q1 - auc ** 2) + (negatives - 1) * (q2 - auc ** 2))
    return math.sqrt(max(variance, 0.0) / (positives * negatives))


def agreement_metrics(scores: Sequence[float], labels: Sequence[bool], threshold: float = 0.5) -> list[Metric]:
    """``scorer_auc`` and ``scorer_accuracy`` of claim scores against consistency labels."""
    auc = rank_auc(scores, labels)
    positives = sum(1 for y in labels if y)
    stderr = None if auc is None else auc_stderr(auc, positives, len(labels) - positives)
    accuracy, accuracy_se = proportion((s >= threshold) == bool(y) for s, y in zip(scores, labels, strict=True))
    return [
        Metric("scorer_auc", auc, "P(a consistent claim scores above an inconsistent one) + ½ P(tie), by the rank "
               "formula (R₊ − n₊(n₊+1)/2)/(n₊n₋) over the labelled items; s.e. by Hanley–McNeil (None unless both "
               "labels occur)", stderr),
        Metric("scorer_accuracy", accuracy, f"share of labelled claims where (score ≥ {threshold}) equals the label",
               accuracy_se),
    ]


def response_metrics(scores: Sequence[float | None], threshold: float = 0.5) -> list[Metric]:
    """``response_consistency`` (mean score, s.e. = s.d./√n) and ``response_consistent_share`` over the
    scored responses (None, an empty response, is left out)."""
    scored = [s for s in scores if s is not None]
    mean = sum(scored) / len(scored) if scored else None
    stderr = None
    if len(scored) > 1 and mean is not None:
        stderr = math.sqrt(sum((s - mean) ** 2 for s in scored) / (len(scored) - 1) / len(scored))
    share, share_se = proportion(s >= threshold for s in scored)
    return [
        Metric("response_consistency", mean, "mean over the model's responses (with at least one sentence) of "
               "mean over response sentences of max over context chunks of the scorer's alignment probability "
               "(AlignScore's aggregation)", stderr),
        Metric("response_consistent_share", share, f"share of scored responses with consistency ≥ {threshold}",
               share_se),
    ]


@dataclass(frozen=True)
class ConsistencyItem:
    context: str
    claim: str | None = None
    label: bool | None = None
    """True: the claim is consistent with the context; None: unlabelled."""
    question: str | None = None
    id: str = ""


@register_suite
class Consistency(Suite):
    name = "consistency"
    summary = ("factual consistency of responses with their context, AlignScore's chunk/sentence aggregation "
               "(Zha et al. 2023, arXiv 2305.16739)")
    item_format = ('{"context": str, "claim": str (optional unless label is given), "label": 0|1 or bool '
                   '(optional: 1/true = the claim is consistent with the context), "question": str (optional: '
                   'the model answers it from the context instead of summarising), "id": str (optional)}')

    def embedded_items(self) -> list[dict]:
        eiffel = ("The Eiffel Tower was built for the 1889 World's Fair in Paris. It was designed by the company of "
                  "Gustave Eiffel. At 330 metres, it was the tallest man-made structure in the world until 1930.")
        bees = ("Honey bees live in colonies with a single queen. Worker bees are female and do not reproduce. "
                "A strong colony can hold around 50,000 bees in summer.")
        river = ("The Danube flows through ten countries, more than any other river in the world. It rises in "
                 "Germany and empties into the Black Sea.")
        library = ("The town library moved to a new building in 2015. It now opens at 8 in the morning and closes "
                   "at 9 in the evening, Monday to Saturday. It is closed on Sundays.")
        return [
            {"id": "eiffel-built", "context": eiffel, "claim": "The Eiffel Tower was built for the 1889 World's Fair.",
             "label": 1},
            {"id": "eiffel-year", "context": eiffel, "claim": "The Eiffel Tower was built for the 1925 World's Fair.",
             "label": 0},
            {"id": "eiffel-height", "context": eiffel, "question": "How tall is the Eiffel Tower?",
             "claim": "It is 330 metres tall.", "label": 1},
            {"id": "eiffel-designer", "context": eiffel, "claim": "It was designed by Thomas Edison.", "label": 0},
            {"id": "bees-queen", "context": bees, "claim": "A honey bee colony has a single queen.", "label": 1},
            {"id": "bees-workers", "context": bees, "claim": "Worker bees are male.", "label": 0},
            {"id": "bees-size", "context": bees, "question": "How many bees can a strong colony hold?",
             "claim": "Around 50,000 bees in summer.", "label": 1},
            {"id": "bees-reproduce", "context": bees, "claim": "Worker bees reproduce.", "label": 0},
            {"id": "danube-countries", "context": river, "claim": "The Danube flows through ten countries.",
             "label": 1},
            {"id": "danube-mouth", "context": river, "claim": "The Danube empties into the North Sea.", "label": 0},
            {"id": "library-hours", "context": library, "question": "When does the library open?",
             "claim": "It opens at 8 in the morning.", "label": 1},
            {"id": "library-sunday", "context": library, "claim": "The library is open on Sundays.", "label": 0},
        ]

    def parse_item(self, row: Mapping, where: Location) -> ConsistencyItem:
        hint = f"consistency items: {self.item_format}"
        context = require(row, "context", where, hint=hint)
        claim = row.get("claim")
        if claim is not None:
            claim = require(row, "claim", where, hint=hint)
        question = row.get("question")
        if question is not None:
            question = require(row, "question", where, hint=hint)
        label = row.get("label")
        if label is not None:
            if not isinstance(label, (bool, int)) or label not in (0, 1):
                raise where.error(f"'label' must be 0, 1, true or false, got {label!r}", field="label", hint=hint)
            if claim is None:
                raise where.error("a labelled item needs the 'claim' its label judges", field="claim", hint=hint)
            label = bool(label)
        item_id = row.get("id", str(where))
        if not isinstance(item_id, (str, int)) or isinstance(item_id, bool):
            raise where.error(f"'id' must be a string, got {type(item_id).__name__}", field="id", hint=hint)
        return ConsistencyItem(context, claim, label, question, str(item_id))

    def run(self, items: Sequence[ConsistencyItem], responder, reference=None, *, scorer: str | Scorer = "lexical",
            chunk_words: int = CHUNK_WORDS, threshold: float = 0.5, score_responses: bool = True,
            **_: object) -> SuiteResult:
        score_fn, scorer_name = build_scorer(scorer)
        rows: list[dict[str, Any]] = [{"id": i.id, "context": i.context, "question": i.question} for i in items]
        metrics: list[Metric] = []
        notes = [f"alignment function: {scorer_name}" + (
            " (a lexical baseline: content-word and number overlap, not the paper's trained alignment model; its "
            "values are not AlignScore numbers)" if scorer_name == "lexical" else ""),
            "sentences are split by punctuation rules, an approximation of the NLTK Punkt splitter AlignScore uses"]
        if score_responses:
            prompts = [ANSWER_PROMPT.format(context=i.context, question=i.question) if i.question
                       else SUMMARY_PROMPT.format(context=i.context) for i in items]
            responses = [r[0] for r in responder.respond(prompts)]
            scores = []
            for row, item, response in zip(rows, items, responses, strict=True):
                found = align(item.context, response, score_fn, chunk_words)
                scores.append(found.score)
                row.update({"response": response, "response_score": found.score,
                            "response_sentence_scores": found.sentence_scores, "chunks": len(found.chunks)})
            metrics += response_metrics(scores, threshold)
            empty = sum(s is None for s in scores)
            if empty:
                notes.append(f"{empty} of {len(scores)} responses have no sentence and are not scored")
        labelled = [(row, item) for row, item in zip(rows, items, strict=True) if item.label is not None]
        tables: dict[str, list[dict[str, Any]]] = {}
        if labelled:
            claim_scores = []
            for row, item in labelled:
                found = align(item.context, item.claim or "", score_fn, chunk_words)
                score = found.score if found.score is not None else 0.0
                claim_scores.append(score)
                row.update({"claim": item.claim, "label": item.label, "claim_score": score,
                            "claim_sentence_scores": found.sentence_scores, "predicted": score >= threshold})
            labels = [bool(item.label) for _, item in labelled]
            metrics += agreement_metrics(claim_scores, labels, threshold)
            tables["claim scores by label"] = [
                {"label": "consistent" if y else "inconsistent", "claims": sum(1 for v in labels if v == y),
                 "mean score": _mean([s for s, v in zip(claim_scores, labels, strict=True) if v == y]),
                 f"predicted consistent (≥ {threshold})": sum(1 for s, v in zip(claim_scores, labels, strict=True)
                                                            if v == y and s >= threshold)}
                for y in (True, False)]
            if len(labelled) < len(items):
                notes.append(f"scorer agreement is measured on the {len(labelled)} labelled items of {len(items)}")
        elif not score_responses:
            raise ValueError("nothing to evaluate: no item carries a label and score_responses is off")
        result = SuiteResult(self.name, metrics, rows, tables, notes)
        result.inputs.update({"scorer": scorer_name, "chunk_words": chunk_words, "threshold": threshold})
        return result


def _mean(values: Sequence[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None
