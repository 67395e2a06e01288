"""Steerability (Chang, Schnabel, Swaminathan, Wiens 2025, "A Course Correction in Steerability
Evaluation: Revealing Miscalibration and Side Effects in LLMs", arXiv 2505.23816; code at
github.com/MLD3/steerability): does a rewrite move the text where it was asked to, by the amount
asked, and nowhere else?

Example: ``alignlab eval --suite steerability --model runs/sft/model --items my_rewrites.jsonl --out runs/eval``

**Goal space.** A text is mapped to z ∈ [0, 1]^4, one coordinate per rule-based attribute (the
authors' default goals, in their order):

- ``reading_difficulty``: Flesch–Kincaid grade 0.39·(words/sentences) + 11.8·(syllables/words) −
  15.59 (:func:`flesch_kincaid_grade`). The authors use ``textstat``; here words are runs of
  letters (with inner apostrophes), sentences end at ``.``, ``!`` or ``?``, and syllables are
  counted by a heuristic (:func:`syllables`: vowel groups, a silent final *e* and *-ed*/*-es*
  adjusted), so grades differ from textstat's by a little on most texts;
- ``textual_diversity``: MTLD (McCarthy & Jarvis 2010; :func:`mtld`): the mean of a forward and a
  backward pass, each the number of tokens over the number of *factors* (stretches whose
  type–token ratio falls to 0.72, plus a partial factor for the remainder). The authors compute it
  with ``taaled`` on ``pylats``-normalised (lemmatised) tokens; here tokens are lower-cased words,
  not lemmatised. A text whose words are all distinct has no factor: its MTLD is infinite (1 once
  normalised); an empty text has 0, as the authors set;
- ``text_length``: the number of tokens as NLTK's ``word_tokenize`` counts them, punctuation
  marks included (the authors' measure; :func:`tokens` approximates it and does not split
  contractions);
- ``formality``: the Heylighen–Dewaele F-score F = (noun + adjective + preposition + article −
  pronoun − verb − adverb − interjection + 100)/2, frequencies in % of the alphabetic tokens.
  The authors tag parts of speech with spaCy; alignlab needs no tagger, so :func:`formality`
  **approximates** that POS-based score with closed-class word lists (articles, prepositions,
  pronouns, interjections, auxiliaries and common verbs and adverbs), suffix rules and the
  previous word (a word after a pronoun, an auxiliary or infinitive *to* is a verb; otherwise an
  unknown word is a noun); capitalised words inside a sentence are proper nouns (not counted, as
  spaCy's PROPN). Expect it to track, not equal, the tagger's score: it was not compared with
  spaCy's tags here, and unknown words default to nouns, which pushes scores up.

Each raw value is min-max normalised with the authors' ranges (the middle 95% of their seed data:
:data:`RANGES`) and clipped to [0, 1].

**Protocol.** An item is a source text and a request: changes (deltas in normalised units, e.g.
``"text_length": "+0.2"``) or target values for some goals. The model is asked, with the authors'
direct prompt, to rewrite the source ("Please rewrite the following, but make it much longer,
easier to read, and slightly more formal. Respond with only the rewritten text ..."; "much" for
|δ| > 0.5, "slightly" for |δ| < 0.2; the authors shuffle the phrases, alignlab keeps the goal
order). z0 is the source's position, z* = z0 + δ the target (goals not requested keep their
source value), ẑ the response's position (after dropping a first line such as "Here is the
rewritten text:", as the authors' cleaner does).

**Metrics**, per item, then the mean (s.e. = s.d./√n) and the median (s.e. from 1000 seeded
bootstrap resamples of the items) over items:

- ``steering_error`` = ‖ẑ − z*‖₂;
- ``miscalibration`` = |(ẑ − z*)·(z* − z0)| / ‖z* − z0‖²: the over- or undershoot along the
  requested direction, as a fraction of the requested move;
- ``orthogonality`` (side effects) = ‖rej_{z*−z0}(ẑ − z*)‖ / ‖ẑ − z0‖ clipped to [0, 1], which is
  sin∠(ẑ − z0, z* − z0): the share of the actual movement that goes in unrequested directions
  (0 for a response that does not move at all, as the authors' ε-guard gives).

This is the **continuous** form. The authors' code by default **bins** the coordinates: deltas
from the source are cut at {−1, −0.5, −0.2, −0.1, 0.1, 0.2, 0.5, 1} (7 bins, the middle one "no
change") and distances are counted in bins / 7. ``run(..., binned=True)`` computes that form as
their code does (targets and responses binned against cut points shifted to the source and
clipped to [0, 1], the requested move binned from the delta; a requested delta inside the
no-change bin leaves miscalibration undefined, and is left out of it); in their binned form a
source at the top of a range (z0 = 1) counts as moved even when the text is unchanged. The
authors also filter rewrites by an LLM judge of groundedness first; alignlab calls no judge.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from alignlab.data.readers import Location
from alignlab.eval.suites.base import Metric, Suite, SuiteResult, register_suite, require
from alignlab.registry import suggest

GOALS = ("reading_difficulty", "textual_diversity", "text_length", "formality")
RANGES: dict[str, tuple[float, float]] = {
    "reading_difficulty": (2.8, 12.9),
    "textual_diversity": (44.84394871794872, 128.54409583333333),
    "text_length": (78.0, 1509.0),
    "formality": (40.37, 69.121634),
}
"""The authors' normalisation ranges (min, max) of the raw goal values."""

MORE = {"reading_difficulty": "harder to read", "textual_diversity": "use more diverse language",
        "text_length": "longer", "formality": "more formal"}
LESS = {"reading_difficulty": "easier to read", "textual_diversity": "use less diverse language",
        "text_length": "shorter", "formality": "more informal"}
BASE = "Please rewrite the following, but make it "
NO_EXPLAIN = " Respond with only the rewritten text and do not explain your response."
CUT_POINTS = (-1.0, -0.5, -0.2, -0.1, 0.1, 0.2, 0.5, 1.0)
"""The authors' bin edges for deltas (binned form)."""

# ---- goals -----------------------------------------------------------------------------------

LETTER_WORD = re.compile(r"[A-Za-z]+(?:['’][A-Za-z]+)*")


def syllables(word: str) -> int:
    """A heuristic syllable count: groups of vowels (a e i o u y), less a silent final *e* (not
    *-le*, *-ee*, *-ye*), a silent *-ed* (not *-ted*, *-ded*) and a silent *-es* (not after s, x, z,
    ch, sh, c, g); at least 1 for a word with letters."""
    w = re.sub(r"[^a-z]", "", word.lower())
    if not w:
        return 0
    n = len(re.findall(r"[aeiouy]+", w))
    silent = (w.endswith("e") and not w.endswith(("le", "ee", "ye"))
              or w.endswith("ed") and not w.endswith(("ted", "ded", "eed"))
              or w.endswith("es") and not w.endswith(("ses", "xes", "zes", "ches", "shes", "ces", "ges")))
    return max(1, n - (n > 1 and silent))


def sentence_count(text: str) -> int:
    """Pieces between ``.``, ``!`` and ``?`` that hold a letter; at least 1 for text with words."""
    return max(1, sum(1 for s in re.split(r"[.!?]+", text) if re.search(r"[A-Za-z]", s)))


def flesch_kincaid_grade(text: str) -> float:
    """0.39·(words/sentences) + 11.8·(syllables/words) − 15.59; 0 for a text without words."""
    words = LETTER_WORD.findall(text)
    if not words:
        return 0.0
    return 0.39 * len(words) / sentence_count(text) + 11.8 * sum(map(syllables, words)) / len(words) - 15.59


TOKEN = re.compile(r"\w+(?:[-'’]\w+)*|\.\.\.|[^\w\s]")


def tokens(text: str) -> list[str]:
    """Word and punctuation tokens, close to NLTK's ``word_tokenize`` (contractions kept whole)."""
    return TOKEN.findall(text)


def _mtld_pass(words: Sequence[str], threshold: float) -> float:
    factors, types, count, ttr = 0.0, set(), 0, 1.0
    for w in words:
        count += 1
        types.add(w)
        ttr = len(types) / count
        if ttr <= threshold:
            factors, types, count, ttr = factors + 1, set(), 0, 1.0
    factors += (1 - ttr) / (1 - threshold)
    return len(words) / factors if factors > 0 else math.inf


def mtld(text: str, threshold: float = 0.72) -> float:
    """MTLD (McCarthy & Jarvis 2010) of the lower-cased words: the mean of the forward and backward
    passes; 0 for no words, infinite when no factor completes or starts (all words distinct)."""
    words = [w.lower() for w in LETTER_WORD.findall(text)]
    if not words:
        return 0.0
    return (_mtld_pass(words, threshold) + _mtld_pass(words[::-1], threshold)) / 2


def text_length(text: str) -> float:
    return float(len(tokens(text)))


def _wordset(text: str) -> frozenset[str]:
    return frozenset(text.split())


ARTICLES = _wordset("a an the")
PREPOSITIONS = _wordset("""about above across after against along amid among amongst around as at before behind
below beneath beside besides between beyond by despite down during except for from in inside into like near of off
on onto out outside over past per since than through throughout till toward towards under underneath unlike until
up upon via with within without""")
PRONOUNS = _wordset("""i me my mine myself you your yours yourself yourselves he him his himself she her hers
herself it its itself we us our ours ourselves they them their theirs themselves who whom whose what someone somebody
something anyone anybody anything everyone everybody everything noone nobody nothing one's""")
SUBJECTS = _wordset("i you he she it we they who")
INTERJECTIONS = _wordset("""oh ah aha wow hey hi hello yeah yep nope yes ok okay oops uh um umm hmm alas ouch yay
huh bye goodbye please thanks""")
AUXILIARIES = _wordset("""be am is are was were been being will would shall should can could may might must ought
ca wo""")
MODALS = _wordset("will would shall should can could may might must ought ca wo")
HAVE_DO = _wordset("have has had having do does did")
NAMES = _wordset("""monday tuesday wednesday thursday friday saturday sunday january february march april june july
august september october november december""")
"""Day and month names: proper nouns (not counted), even at the start of a sentence."""
NEUTRAL = _wordset("""and or but nor so yet because although though while whereas if unless whether that this these
those which some any each every all both either neither no another such many several not one two three four five six seven
eight nine ten hundred thousand million billion""")
"""Determiners other than articles, conjunctions, particles, numerals: counted in the total only."""
ADVERBS = _wordset("""also just very too quite rather really then now here there when where why how always never
often sometimes usually ever still already soon again almost even only perhaps maybe however therefore thus instead
indeed once twice away back ahead today tomorrow yesterday tonight anyway else enough later well more most less
least somewhat much""")
ADJECTIVES = _wordset("""good new first last long great little own other old right big high different small large
next early young important few public bad same able best better low late hard real major sure free true whole clear
full special easy strong certain simple likely recent possible happy nice red white black blue green dark deep short
fine ready common poor wrong open hot cold warm local social national political economic human general natural various
main similar final serious difficult formal informal quick slow huge tiny safe modern legal private entire basic
current significant excellent efficient necessary available beautiful wonderful friendly lovely lonely ugly silly
elderly costly deadly lively orderly timely daily weekly monthly yearly popular regular
particular familiar quiet wooden golden online tall busy pretty heavy ready""")
_VERB_BASES = _wordset("""say make go take get know think see come want look use find give tell work call try ask need feel
become leave put mean keep let begin seem help talk turn start show hear play run move like live believe hold bring
happen write provide sit stand lose pay meet include continue set learn change lead understand watch follow stop
create speak read allow add spend grow open walk win offer remember love consider appear buy wait serve die send
expect build stay fall cut reach kill remain suggest raise pass sell require report decide pull explain hope develop
carry break receive agree support hit produce eat cover catch draw choose cause point listen realize place close
involve increase describe apply rely imply supply reply fly approve discuss indicate contain reduce improve ensure
prefer plan visit enjoy finish return share save travel sing drive wear sleep sound matter mind miss thank
arrive lend borrow join count promise respond decline submit specify attend review end remain intend""")
IRREGULAR = _wordset("""said made went gone took taken got gotten knew known thought saw seen came gave given told
found felt became left meant kept began begun seemed held brought wrote written sat stood lost paid met ran led
understood spoke spoken grew grown won bought built fell fallen sent spent chose chosen broke broken drove driven ate
eaten drew drawn threw thrown forgot forgotten hid hidden rode ridden rose risen shook shaken stole stolen swam wore
worn woke woken caught taught fought sought sold struck slept flew flown sang sung""")


def _verb_forms(base: str) -> set[str]:
    stem = base[:-1] if base.endswith("e") else base
    third = base + ("es" if base.endswith(("s", "x", "z", "ch", "sh", "o")) else "s")
    if base.endswith("y") and base[-2:-1] not in "aeiou":
        third, past = base[:-1] + "ies", base[:-1] + "ied"
    else:
        past = base + "d" if base.endswith("e") else base + "ed"
    return {base, third, past, stem + "ing"}


VERBS = frozenset(set().union(*(_verb_forms(b) for b in _VERB_BASES)) | IRREGULAR)
NOT_ING_VERBS = _wordset("""morning evening building meeting wedding ceiling spring string king ring wing thing
during nothing something anything everything painting feeling""")
NOUN_SUFFIXES = ("tion", "sion", "ment", "ness", "ity", "ism", "ance", "ence", "ship", "hood", "ist", "dom", "ure",
                 "age", "er", "or", "ery")
ADJECTIVE_SUFFIXES = ("ous", "ful", "ive", "able", "ible", "ical", "less", "ish", "al")
VERB_SUFFIXES = ("ize", "ise", "ify", "ized", "ised", "ified", "izes", "ises", "ifies")
CONTRACTIONS = re.compile(r"(?:n't|n’t|'s|’s|'re|’re|'ve|’ve|'ll|’ll|'d|’d|'m|’m)$", re.I)


def _formality_tokens(text: str) -> list[tuple[str, bool]]:
    """Alphabetic tokens as a tagger sees them (contraction endings dropped: they are not
    alphabetic; hyphenated words split), each with whether it is capitalised inside a sentence."""
    out: list[tuple[str, bool]] = []
    sentence_start = True
    for piece in re.findall(r"[^\W\d_]+(?:['’-][^\W\d_]+)*|[.!?]|\S", text):
        if piece in ".!?":
            sentence_start = True
            continue
        if not piece[0].isalpha():
            continue
        low = piece.lower()
        word = {"can't": "ca", "won't": "wo", "can’t": "ca", "won’t": "wo"}.get(low) or CONTRACTIONS.sub("", piece)
        for part in re.split(r"[-'’]", word):
            if part:
                proper = not sentence_start and part[0].isupper() and part.lower() != "i"
                out.append((part.lower(), proper))
                sentence_start = False
    return out


def pos_class(word: str, previous: str | None, following: str | None, proper: bool = False) -> str | None:
    """The F-score class of a word by the rules in the module docstring: NOUN, ADJ, ADP, ARTICLE, PRON,
    VERB, ADV, INTJ, or None (counted in the total only: auxiliaries, determiners, conjunctions,
    particles, numerals, proper nouns)."""
    if proper or word in NAMES:
        return None
    if word in ARTICLES:
        return "ARTICLE"
    if word == "to":
        return None if following in VERBS else "ADP"  # infinitive "to" is a particle
    if word in PREPOSITIONS:
        return "ADP"
    if word in PRONOUNS:
        return "PRON"
    if word in INTERJECTIONS:
        return "INTJ"
    if word in AUXILIARIES:
        return None
    if word in HAVE_DO:
        return None if following in VERBS or following in {"not", "n't", "never"} or (
            following or "").endswith(("ed", "en")) else "VERB"
    if word in NEUTRAL:
        return None
    if word in ADVERBS:
        return "ADV"
    if word in ADJECTIVES:
        return "ADJ"
    after_verb_slot = previous in SUBJECTS or previous in MODALS or previous == "to"
    after_noun_slot = previous in ARTICLES or previous in PRONOUNS - SUBJECTS or previous in ADJECTIVES
    if word in VERBS:
        if not after_noun_slot:
            return "VERB"
        if word in IRREGULAR or word.endswith("ed"):
            return "ADJ"  # a participle before a noun ("the written request")
    if word.endswith("ly") and len(word) > 4:
        return "ADV"
    if word.endswith(VERB_SUFFIXES):
        return "VERB"
    if word.endswith("ing") and word not in NOT_ING_VERBS and len(word) > 5 and not after_noun_slot:
        return "VERB"
    if word.endswith("ed") and len(word) > 4:
        return "ADJ" if after_noun_slot else "VERB"
    if word.endswith(("er", "est")) and (word[:-2] in ADJECTIVES or word[:-3] in ADJECTIVES):
        return "ADJ"
    if word.endswith(NOUN_SUFFIXES):
        return "NOUN"
    if word.endswith(ADJECTIVE_SUFFIXES) and len(word) > 4:
        return "ADJ"
    if after_verb_slot:
        return "VERB"
    return "NOUN"


def formality(text: str) -> float:
    """The Heylighen–Dewaele F-score by :func:`pos_class` (an approximation of the authors'
    spaCy-tagged score); 50 for a text without alphabetic tokens (all frequencies 0), as theirs."""
    toks = _formality_tokens(text)
    if not toks:
        return 50.0
    counts: dict[str, int] = {}
    words = [t[0] for t in toks]
    for i, (word, proper) in enumerate(toks):
        tag = pos_class(word, words[i - 1] if i else None, words[i + 1] if i + 1 < len(words) else None, proper)
        if tag:
            counts[tag] = counts.get(tag, 0) + 1
    share = {k: 100 * v / len(toks) for k, v in counts.items()}
    deictic = sum(share.get(k, 0.0) for k in ("NOUN", "ADJ", "ADP", "ARTICLE"))
    non_deictic = sum(share.get(k, 0.0) for k in ("PRON", "VERB", "ADV", "INTJ"))
    return (deictic - non_deictic + 100) / 2


GOAL_FUNCTIONS = {"reading_difficulty": flesch_kincaid_grade, "textual_diversity": mtld,
                  "text_length": text_length, "formality": formality}


def raw_goals(text: str) -> dict[str, float]:
    """The four raw goal values of a text (module docstring)."""
    return {g: GOAL_FUNCTIONS[g](text) for g in GOALS}


def normalize(goal: str, value: float) -> float:
    low, high = RANGES[goal]
    return min(1.0, max(0.0, (value - low) / (high - low)))


def position(text: str) -> tuple[float, ...]:
    """z ∈ [0, 1]^4: the normalised, clipped goal values, in :data:`GOALS` order."""
    raw = raw_goals(text)
    return tuple(normalize(g, raw[g]) for g in GOALS)


# ---- metrics ---------------------------------------------------------------------------------


def _dot(a: Sequence[float], b: Sequence[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def _norm(a: Sequence[float]) -> float:
    return math.sqrt(_dot(a, a))


def _geometry(error: Sequence[float], requested: Sequence[float], moved: Sequence[float]) -> dict[str, float | None]:
    requested_sq = _dot(requested, requested)
    along = _dot(error, requested) / requested_sq if requested_sq else 0.0
    rejection = _norm([e - along * r for e, r in zip(error, requested, strict=True)])
    moved_norm = _norm(moved)
    return {"steering_error": _norm(error), "miscalibration": abs(along) if requested_sq else None,
            "orthogonality": 0.0 if moved_norm == 0 else min(1.0, max(0.0, rejection / moved_norm))}


def steering_metrics(z0: Sequence[float], target: Sequence[float], output: Sequence[float]) -> dict[str, float | None]:
    """Continuous steering error, miscalibration and orthogonality of one rewrite (module docstring).

    ``steering_metrics((.2, .2), (.6, .2), (.5, .5))`` gives miscalibration 0.25 and orthogonality
    sin 45° ≈ 0.7071."""
    error = [o - t for o, t in zip(output, target, strict=True)]
    requested = [t - s for t, s in zip(target, z0, strict=True)]
    moved = [o - s for o, s in zip(output, z0, strict=True)]
    return _geometry(error, requested, moved)


def _bin(value: float, source: float) -> int:
    edges = [min(1.0, max(0.0, source + c)) for c in CUT_POINTS]
    return sum(value >= e for e in edges) - 1


def binned_metrics(z0: Sequence[float], target: Sequence[float], output: Sequence[float],
                   delta: Sequence[float] | None = None) -> dict[str, float | None]:
    """The same metrics in the authors' default binned coordinates (module docstring), in bins / 7.

    ``delta`` is the requested change as the item states it (default z* − z0); the requested
    move is binned from it, as the authors bin their stored deltas (z* − z0 recomputed in floating
    point can fall just across a bin edge)."""
    width, middle = len(CUT_POINTS) - 1, (len(CUT_POINTS) - 2) // 2
    if delta is None:
        delta = [t - s for t, s in zip(target, z0, strict=True)]
    error = [(_bin(o, s) - _bin(t, s)) / width for o, t, s in zip(output, target, z0, strict=True)]
    moved = [(_bin(o, s) - middle) / width for o, s in zip(output, z0, strict=True)]
    requested = [(sum(d >= c for c in CUT_POINTS) - 1 - middle) / width for d in delta]
    return _geometry(error, requested, moved)


METRIC_DEFINITIONS = {
    "steering_error": "‖ẑ − z*‖₂: distance of the rewrite from the target in the normalised goal space",
    "miscalibration": "|(ẑ − z*)·(z* − z0)| / ‖z* − z0‖²: over- or undershoot along the requested direction, as a "
                      "fraction of the requested move",
    "orthogonality": "‖rej_{z*−z0}(ẑ − z*)‖ / ‖ẑ − z0‖ clipped to [0, 1] = sin∠(ẑ − z0, z* − z0): share of the "
                     "movement in unrequested directions (side effects; 0 when ẑ = z0)",
}


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default) of sorted values."""
    position_ = (len(sorted_values) - 1) * q
    low = math.floor(position_)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position_ - low)


def median_stderr(values: Sequence[float], resamples: int = 1000, seed: int = 0) -> float | None:
    """Bootstrap standard error of the median (seeded); None for fewer than two values."""
    if len(values) < 2:
        return None
    rng = random.Random(seed)
    medians = [_quantile(sorted(rng.choices(values, k=len(values))), 0.5) for _ in range(resamples)]
    mean = sum(medians) / resamples
    return math.sqrt(sum((m - mean) ** 2 for m in medians) / (resamples - 1))


def aggregate(per_item: Sequence[Mapping[str, float | None]], binned: bool = False) -> tuple[list[Metric], list[dict]]:
    """Mean and median (with s.e.) of each metric over the items where it is defined, and a
    distribution table (mean, median, quartiles, IQR, min, max)."""
    metrics, table = [], []
    unit = " (binned: bins / 7)" if binned else ""
    for name, definition in METRIC_DEFINITIONS.items():
        values = [r[name] for r in per_item if r.get(name) is not None]
        if not values:
            metrics += [Metric(name, None, definition + unit), Metric(f"{name}_median", None, "median " + definition)]
            continue
        n, ordered = len(values), sorted(values)
        mean = sum(values) / n
        se = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n) if n > 1 else None
        median = _quantile(ordered, 0.5)
        metrics += [Metric(name, mean, f"mean over items of {definition}{unit}; s.e. = s.d./√n", se),
                    Metric(f"{name}_median", median, f"median over items of {name}{unit}; s.e. by 1000 seeded "
                           "bootstrap resamples", median_stderr(values))]
        q1, q3 = _quantile(ordered, 0.25), _quantile(ordered, 0.75)
        table.append({"metric": name, "items": n, "mean": round(mean, 4), "median": round(median, 4),
                      "q1": round(q1, 4), "q3": round(q3, 4), "iqr": round(q3 - q1, 4),
                      "min": round(ordered[0], 4), "max": round(ordered[-1], 4)})
    return metrics, table


# ---- items and the suite ---------------------------------------------------------------------


def instruction(deltas: Mapping[str, float]) -> str:
    """The authors' direct prompt for the requested deltas (goal order kept, not shuffled)."""
    intents = []
    for goal in GOALS:
        delta = deltas.get(goal, 0.0)
        if delta == 0:
            continue
        intent = MORE[goal] if delta > 0 else LESS[goal]
        modifier = "much " if abs(delta) > 0.5 else "slightly " if abs(delta) < 0.2 else ""
        if modifier:
            if not intent.startswith("more") and "more" in intent:
                intent = intent.replace("more", modifier + "more")
            elif not intent.startswith("less") and "less" in intent:
                intent = intent.replace("less", modifier + "less")
            else:
                intent = modifier + intent
        intents.append(intent)
    if not intents:
        listed = "as close to the original as possible."
    elif len(intents) == 1:
        listed = intents[0] + "."
    else:
        listed = ", ".join(intents[:-1]) + ", and " + intents[-1] + "."
    return BASE + listed + NO_EXPLAIN


def clean_response(text: str) -> str:
    """Drop a first line like "Here is the rewritten text:" (the authors' cleaner) from a multi-line response."""
    lines = text.split("\n")
    if len(lines) > 1 and "here" in lines[0].lower() and "rewritten" in lines[0].lower():
        return "\n".join(lines[1:])
    return text


@dataclass(frozen=True)
class SteerItem:
    source: str
    deltas: dict[str, float]
    """Requested changes in normalised units, by goal (only the requested goals)."""
    z0: tuple[float, ...]
    id: str = ""

    @property
    def target(self) -> tuple[float, ...]:
        """z* = z0 + δ (goals not requested keep their source value)."""
        return tuple(z + self.deltas.get(g, 0.0) for g, z in zip(GOALS, self.z0, strict=True))

    @property
    def prompt(self) -> str:
        return instruction(self.deltas) + "\n\n" + self.source


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _vector(z: Sequence[float]) -> dict[str, float]:
    return {g: round(v, 4) for g, v in zip(GOALS, z, strict=True)}


@register_suite
class Steerability(Suite):
    name = "steerability"
    summary = ("rewrite toward requested text attributes: steering error, miscalibration, side effects "
               "(Chang et al. 2025, arXiv 2505.23816)")
    item_format = ('{"source": str (the text to rewrite), "request": {GOAL: change, ...} (changes in normalised '
                   'units, numbers or strings like "+0.2") and/or "target": {GOAL: value in [0, 1], ...}, '
                   '"id": str (optional)}; GOAL: ' + ", ".join(GOALS))

    def embedded_items(self) -> list[dict]:
        return [
            {"id": "library-longer", "source": LIBRARY, "request": {"text_length": "+0.15"}},
            {"id": "library-simpler-plainer", "source": LIBRARY, "request": {"reading_difficulty": "-0.3",
                                                                             "textual_diversity": "-0.2"}},
            {"id": "trip-formal", "source": TRIP, "request": {"formality": "+0.15", "text_length": "+0.1"}},
            {"id": "trip-harder", "source": TRIP, "request": {"reading_difficulty": "+0.4"}},
            {"id": "policy-casual-simple", "source": POLICY, "request": {"formality": "-0.3",
                                                                          "reading_difficulty": "-0.4"}},
            {"id": "policy-less-diverse", "source": POLICY, "request": {"textual_diversity": "-0.3",
                                                                         "reading_difficulty": "-0.2"}},
        ]

    def parse_item(self, row: Mapping, where: Location) -> SteerItem:
        hint = f"steerability items: {self.item_format}"
        source = require(row, "source", where, hint=hint)
        unknown = sorted(set(row) - {"source", "request", "target", "id"})
        if unknown:
            raise where.error(f"unknown fields {unknown}", field=unknown[0], hint=hint)
        if row.get("request") is None and row.get("target") is None:
            raise where.error("an item needs a 'request' (changes) or a 'target' (values)", field="request", hint=hint)
        z0 = position(source)
        start = dict(zip(GOALS, z0, strict=True))
        deltas: dict[str, float] = {}
        for key in ("request", "target"):
            spec = row.get(key)
            if spec is None:
                continue
            if not isinstance(spec, Mapping) or not spec:
                raise where.error(f"'{key}' must be a non-empty object {{GOAL: number}}", field=key, hint=hint)
            for goal, raw in spec.items():
                at = f"{key}.{goal}"
                if goal not in GOALS:
                    raise where.error(f"unknown goal {goal!r}.{suggest(str(goal), GOALS)}", field=at,
                                      hint=f"known goals: {', '.join(GOALS)}")
                if goal in deltas:
                    raise where.error(f"goal {goal!r} is both requested and targeted", field=at, hint=hint)
                value = _number(raw)
                if value is None or not math.isfinite(value):
                    raise where.error(f"{at} must be a number (or a string like \"+0.2\"), got {raw!r}", field=at,
                                      hint=hint)
                if key == "target" and not 0 <= value <= 1:
                    raise where.error(f"a target is a normalised value in [0, 1], got {value}", field=at, hint=hint)
                delta = value if key == "request" else value - start[goal]
                if delta == 0:
                    raise where.error(f"no change requested for {goal!r} (leave unrequested goals out)", field=at,
                                      hint=hint)
                if not 0 <= start[goal] + delta <= 1:
                    raise where.error(f"the source's {goal} is {start[goal]:.3f} (normalised), so a change of "
                                      f"{delta:+.3f} leaves [0, 1]", field=at,
                                      hint=f"request a change between {-start[goal]:+.3f} and {1 - start[goal]:+.3f}")
                deltas[goal] = delta
        item_id = row.get("id")
        return SteerItem(source, deltas, z0, str(item_id) if item_id is not None else str(where))

    def run(self, items: Sequence[SteerItem], responder, reference=None, *, binned: bool = False,
            **_: object) -> SuiteResult:
        responses = [r[0] for r in responder.respond([i.prompt for i in items])]
        rows, per_item, outputs = [], [], []
        for item, response in zip(items, responses, strict=True):
            text = clean_response(response)
            output = position(text)
            scores = (binned_metrics(item.z0, item.target, output, [item.deltas.get(g, 0.0) for g in GOALS])
                      if binned else steering_metrics(item.z0, item.target, output))
            per_item.append(scores)
            outputs.append(output)
            rows.append({"id": item.id, "request": {g: round(d, 4) for g, d in item.deltas.items()},
                         "response": response, "z0": _vector(item.z0), "target": _vector(item.target),
                         "output": _vector(output),
                         "output_raw": {g: (round(v, 3) if math.isfinite(v) else "inf")
                                        for g, v in raw_goals(text).items()},
                         **{k: (None if v is None else round(v, 6)) for k, v in scores.items()}})
        metrics, distribution = aggregate(per_item, binned)
        per_goal = []
        for g, goal in enumerate(GOALS):
            asked = [abs(o[g] - i.target[g]) for i, o in zip(items, outputs, strict=True) if goal in i.deltas]
            side = [abs(o[g] - i.z0[g]) for i, o in zip(items, outputs, strict=True) if goal not in i.deltas]
            per_goal.append({"goal": goal, "requested in items": len(asked),
                             "mean |ẑ − z*| where requested": round(sum(asked) / len(asked), 4) if asked else None,
                             "mean |ẑ − z0| where not requested": round(sum(side) / len(side), 4) if side else None})
        notes = [("Binned form (the authors' default): " if binned else "Continuous form; the authors' code bins "
                  "deltas by default (run(..., binned=True)). ") + "Goals are rule-based: Flesch–Kincaid with a "
                 "syllable heuristic, MTLD on lower-cased words, NLTK-like token counts, and a word-list "
                 "approximation of the POS-based Heylighen–Dewaele formality score (no tagger).",
                 "No LLM judge of groundedness filters the rewrites (the authors optionally apply one)."]
        if binned:
            undefined = sum(1 for s in per_item if s["miscalibration"] is None)
            if undefined:
                notes.append(f"{undefined} item(s) request changes inside the no-change bin: miscalibration is "
                             "undefined for them and left out.")
        return SuiteResult(self.name, metrics, rows, {"distribution": distribution, "per_goal": per_goal}, notes,
                           inputs={"binned": binned})


LIBRARY = ("The city library opened a new reading room last spring. It has tall windows, long wooden tables and "
           "quiet corners where people can sit for hours. Students come in the afternoon to study for their exams, "
           "and older visitors often arrive early to read the morning papers. On Saturdays the staff run a story "
           "hour for children, which has become so popular that parents now book places weeks ahead. The room "
           "also lends laptops, so that people without a computer at home can apply for jobs, write letters or "
           "take online courses. Last month the library counted more visitors than in any month before, and the "
           "council has promised to keep the room open in the evenings from next year.")
TRIP = ("So we finally went to the coast last weekend and honestly it was great. We got there pretty late on "
        "Friday because the traffic was awful, but the little hotel we'd picked was right by the beach and the "
        "guy at the desk gave us a room with a view of the water. On Saturday we just walked around the old town, "
        "ate way too much fish and sat on the rocks watching the boats. It rained a bit in the afternoon so we "
        "hid in a tiny café and played cards for ages. Sunday was sunny again, and we took a boat out to the "
        "island, which was totally worth it. I really want to go back in the summer and stay longer next time.")
POLICY = ("Employees who intend to work remotely for more than two consecutive weeks must submit a written "
          "request to their line manager at least ten working days in advance. The request should specify the "
          "intended location, the expected duration and the arrangements for attending scheduled meetings. "
          "Managers are expected to respond within five working days and may decline a request where the "
          "nature of the role requires a physical presence on site. Approved arrangements are reviewed every "
          "three months, and either party may end them with two weeks of notice. Employees working remotely "
          "remain subject to all existing policies on information security, working hours and health and safety.")
