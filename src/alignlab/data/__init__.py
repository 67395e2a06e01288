"""The data layer: typed records, format adapters, loading with validation, tokenization.

Example: ``from alignlab.data import load_records; pairs = load_records("pairs.jsonl").records``
"""

from alignlab.data.load import LoadOptions, LoadReport, LoadResult, load_records
from alignlab.data.records import (
    Feedback,
    Judged,
    PreferencePair,
    RankedResponses,
    Record,
    SFTExample,
    pairs_to_feedback,
    ranked_to_pairs,
)

__all__ = [
    "Feedback", "Judged", "LoadOptions", "LoadReport", "LoadResult", "PreferencePair",
    "RankedResponses", "Record", "SFTExample", "load_records", "pairs_to_feedback", "ranked_to_pairs",
]
