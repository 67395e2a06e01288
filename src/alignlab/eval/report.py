"""Show evaluation results: a terminal table, JSON, and a self-contained HTML report section.

Example: ``write_html(results, "runs/eval/report.html")``

The HTML is one file with inline CSS and no scripts or external assets, so it opens anywhere and
can be attached to a ticket. Later sections (training curves, reward–KL plots) append to it.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

STYLE = """body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:60rem;color:#222}
.wide{overflow-x:auto;margin:1rem 0}table{border-collapse:collapse}td,th{border:1px solid #ccc;
padding:.3rem .6rem;text-align:right;vertical-align:top}th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left}td.text{text-align:left;white-space:pre-wrap;
min-width:8rem;max-width:28rem;overflow-wrap:anywhere}
.note{color:#555;font-size:.9rem}h2{border-bottom:1px solid #ddd}"""
MISSING = "–"
"""How a missing value (None) is shown in tables."""


def _fmt(value: Any) -> str:
    if value is None:
        return MISSING
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _cell(value: Any) -> str:
    """A table cell: numbers right-aligned, text left-aligned and wrapped (line breaks kept)."""
    text = html.escape(_fmt(value))
    is_text = isinstance(value, str) and value != "" and not _numeric(value)
    return f'<td class="text">{text}</td>' if is_text else f"<td>{text}</td>"


def _numeric(text: str) -> bool:
    try:
        float(text.replace("±", "").split()[0])
    except (ValueError, IndexError):
        return False
    return True


def print_tables(results: Mapping[str, Any], console: Console) -> None:
    for title, rows in results["tables"].items():
        if not rows:
            continue
        table = Table(*rows[0].keys(), title=title, title_justify="left")
        for row in rows:
            table.add_row(*(_fmt(v) for v in row.values()))
        console.print(table)
    for line in results.get("notes", []):
        console.print(line, highlight=False)


def write_json(results: Mapping[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=float) + "\n", encoding="utf-8")
    return path


def html_section(title: str, results: Mapping[str, Any]) -> str:
    parts = [f"<section><h2>{html.escape(title)}</h2>"]
    for name, rows in results["tables"].items():
        if not rows:
            continue
        head = "".join(f"<th>{html.escape(str(k))}</th>" for k in rows[0])
        body = "".join("<tr>" + "".join(_cell(v) for v in row.values()) + "</tr>" for row in rows)
        parts.append(f'<h3>{html.escape(name)}</h3><div class="wide"><table><tr>{head}</tr>{body}</table></div>')
    parts.extend(f'<p class="note">{html.escape(line)}</p>' for line in results.get("notes", []))
    parts.append("</section>")
    return "\n".join(parts)


def write_html(sections: list[str], path: str | Path, title: str = "alignlab report") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>\n" + "\n".join(sections)
            + "\n</body></html>\n")
    path.write_text(page, encoding="utf-8")
    return path
