"""Report cells and sections: "mean ± se", fixed digits, a dash for a missing value; a figure.

Example: ``pm(0.5, 0.02)`` is ``"0.500 ± 0.020"`` (no-break spaces, so the cell never wraps)
"""

from __future__ import annotations

import html
import math
from typing import Any

from alignlab.eval.plots import html_figure


def num(value: Any) -> float:
    """A float, NaN for None."""
    return math.nan if value is None else float(value)


def val(value: Any, digits: int = 3) -> str:
    """``value`` to ``digits`` decimals; "–" when missing or not finite."""
    return "–" if value is None or not math.isfinite(float(value)) else f"{float(value):.{digits}f}"


def pm(mean: Any, stderr: Any, digits: int = 3) -> str:
    """"mean ± stderr"; just the mean when the error is missing."""
    if stderr is None or not math.isfinite(float(stderr)):
        return val(mean, digits)
    return f"{val(mean, digits)}\u00a0±\u00a0{float(stderr):.{digits}f}"


def verdict(mean: float, stderr: float, higher: str = "higher", lower: str = "lower") -> str:
    """Whether a difference is beyond two standard errors, and which way."""
    if mean > 2 * stderr:
        return higher
    if mean < -2 * stderr:
        return lower
    return "not distinguishable (within two standard errors)"


def figure_section(title: str, png: bytes, alt: str, caption: str) -> str:
    """A report section of one captioned figure."""
    return f"<section><h2>{html.escape(title)}</h2>\n{html_figure(png, alt, caption)}</section>"
