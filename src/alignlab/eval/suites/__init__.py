"""Alignment evaluation suites: each a protocol of items, judging and metrics, with its paper.

Example: ``get_suite("honesty").evaluate(Responder(model, tokenizer)).metric("honesty").value``

``alignlab eval --suite NAME --model M [--ref R] [--items FILE] --out DIR`` runs one; each suite
ships an embedded item set and documents the format of a user's items (``item_format``).
"""

from alignlab.eval.suites import compliance_gap, consistency, constraints, honesty, poisoned_context, principal_agent, reliable_math, steerability  # noqa: F401, I001  (each module registers its suite)
from alignlab.eval.suites.base import (
    SUITES,
    FixedResponder,
    Metric,
    Responder,
    ResponseOptions,
    Suite,
    SuiteResult,
    get_suite,
    register_suite,
    suite_section,
)

__all__ = ["SUITES", "FixedResponder", "Metric", "Responder", "ResponseOptions", "Suite", "SuiteResult",
           "get_suite", "register_suite", "suite_section"]
