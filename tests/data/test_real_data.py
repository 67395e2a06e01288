"""Five published human-preference data sets (HH-RLHF harmless test, PandaLM test, FineGrainedRLHF
QA feedback dev, HHH alignment, LLMBar), read as published, against their normalised pairs.

Each raw source in the real-data sample's ``raw/`` loaded with default options must give exactly
the normalised pairs of its ``pairs/`` (same rows, same order), with the report accounting for
every dropped row. Skipped where the sample is absent (``ALIGNLAB_REAL_DATA`` names its folder).
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from alignlab.data import RankedResponses, load_records
from alignlab.data.load import LoadResult
from conftest import REAL_DATA_MISSING, real_data_dir

REAL_DATA = real_data_dir()

if not REAL_DATA.is_dir():
    pytest.skip(REAL_DATA_MISSING, allow_module_level=True)

RAW = REAL_DATA / "raw"
PAIRS = REAL_DATA / "pairs"

# raw source -> normalised pairs, and the report numbers loading the raw source must give:
# rows read, records kept, rows dropped by the format's rule, warnings (kept as published)
SOURCES = {
    "hh": (
        "hh-rlhf_harmless-base_test.jsonl.gz",
        "hh_rlhf_harmless_test.jsonl",
        2312,
        2312,
        {},
        {"empty completion": 4},
    ),
    "pandalm": (
        "pandalm_testset-v1.json",
        "pandalm_test.jsonl",
        999,
        894,
        {"tie between raters": 105},
        {"empty completion": 52, "non-string response read as text": 6},
    ),
    "finegrained": (
        "finegrainedrlhf_qa_feedback_dev_feedback.json",
        "finegrained_qa_feedback_dev.jsonl",
        500,
        2616,
        {"no preference": 384},
        {},
    ),
    "hhh": ("prometheus_hhh_alignment_eval.json", "hhh_alignment.jsonl", 221, 221, {}, {}),
    "llmbar": (
        "llmbar",
        "llmbar_all.jsonl",
        885,
        885,
        {},
        {"identical chosen and rejected": 1, "empty completion": 1},
    ),
}

_loaded: dict[str, LoadResult] = {}


def load(name: str) -> LoadResult:
    """Load a raw source once per session (the files are read-only)."""
    if name not in _loaded:
        _loaded[name] = load_records(RAW / SOURCES[name][0])
    return _loaded[name]


def expected_pairs(name: str) -> list[dict[str, str]]:
    with open(PAIRS / SOURCES[name][1], encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


@pytest.mark.parametrize("name", list(SOURCES))
def test_raw_source_gives_the_normalised_pairs_exactly(name):
    records = load(name).records
    expected = expected_pairs(name)
    assert len(records) == len(expected)
    got = [(r.prompt, r.chosen, r.rejected) for r in records]
    want = [(e["prompt"], e["chosen"], e["rejected"]) for e in expected]
    mismatches = [i for i, (a, b) in enumerate(zip(got, want, strict=True)) if a != b]
    assert mismatches == [], f"first differing pair: {mismatches[0]}"


@pytest.mark.parametrize("name", list(SOURCES))
def test_report_accounts_for_every_row(name):
    _, _, rows, records, dropped, warnings = SOURCES[name]
    report = load(name).report
    assert (report.rows, report.records) == (rows, records)
    assert report.dropped == dropped
    assert report.warnings == warnings
    assert report.skipped == {}


def test_llmbar_folder_reads_files_in_name_order_with_their_stems_as_source():
    sources = [r.source for r in load("llmbar").records]
    assert ["LLMBar/" + s for s in sources] == [e["source"] for e in expected_pairs("llmbar")]
    files = sorted(p.name.split(".")[0] for p in (RAW / "llmbar").iterdir())
    assert list(dict.fromkeys(sources)) == files


def test_hhh_categories_follow_the_source_column():
    got = [r.source.split("/")[-1] for r in load("hhh").records]
    want = [e["source"].split("/")[-1] for e in expected_pairs("hhh")]
    assert got == want
    assert set(got) == {"harmless", "helpful", "honest", "other"}


def test_pandalm_rater_shares_are_majorities_of_three():
    """With 3 raters and ties dropped: 2 of 3 (2/3), 2 plus a tie ((2 + 0.5)/3 = 5/6), or all 3."""
    shares = Counter(r.rater_share for r in load("pandalm").records)
    assert shares == {1.0: 794, 2 / 3: 69, 5 / 6: 31}


def test_finegrained_as_ranked_gives_one_record_per_question():
    result = load_records(RAW / SOURCES["finegrained"][0], kind="ranked")
    # 12 questions have six "no preference" votes: they rank nothing and are dropped, counted
    assert len(result.records) == 488
    assert result.report.dropped == {"no preference": 12}
    assert all(isinstance(r, RankedResponses) and len(r.responses) == 4 for r in result.records)
    # Copeland scores count pairwise wins: over all questions they sum to the decided votes,
    # 6 * 500 - 384 "no preference" = 2616, the number of pairs of the paired reading
    assert sum(sum(r.scores) for r in result.records) == 2616
    with open(RAW / SOURCES["finegrained"][0], encoding="utf-8") as handle:
        raw = json.load(handle)
    assert [r.prompt for r in result.records] == [
        row["question"] for row in raw if any(row["preference"])
    ]
    # the 12 undecided questions have no pair in the paired reading either
    undecided = [row["question"] for row in raw if not any(row["preference"])]
    assert len(undecided) == 12
    assert set(undecided).isdisjoint(p["prompt"] for p in expected_pairs("finegrained"))
