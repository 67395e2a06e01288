"""Every registered suite's HTML report section, rendered by headless Chromium: a screenshot and the DOM.

Example: ``pytest -m slow tests/eval/test_suite_sections_render.py`` (``make test-all`` runs it)

Skipped unless ``/usr/bin/chromium`` exists (Debian: ``apt-get install chromium``). Each suite
answers its embedded items through a :class:`~alignlab.eval.suites.FixedResponder` (short canned
answers, picked per prompt), or, for a suite that trains models itself, trains with the few steps
of :data:`QUICK_TRAINING`; its section (:func:`~alignlab.eval.suites.suite_section`) is written as
``alignlab eval`` writes report.html. Chromium then takes a 1280 × 2000 screenshot, which must be
a PNG of that size with text on it (dark pixels over a tall, wide area; without Pillow, a file
far larger than a blank page's), and dumps the DOM, which must hold the section's title, every
metric, every table with all its rows, and the notes. A second load with a measuring script
checks that the metric and breakdown tables fit in the window and hold no raw JSON objects.
The item table (nested values as JSON by design, as wide as its fields) is not held to that.
About 20 seconds on 2 CPU cores.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

import alignlab.testbed.weak_to_strong  # noqa: F401  (registers the suite that trains, as the CLI does)
from alignlab.eval.report import write_html
from alignlab.eval.suites import SUITES, FixedResponder, SuiteResult, get_suite, suite_section

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (apt-get install chromium)"),
]

WIDTH, HEIGHT = 1280, 2000
ITEMS_TABLE = "Items (first 50)"
ANSWERS = ("Paris is the capital of France.", "I don't know.", "The answer is \\boxed{40}.",
           "- apple\n- pear\n- plum", "I'm sorry, I can't help with that.", '{"name": "Ann", "age": 30}',
           "Choice: 1", "the library opened a new reading room. It has tall windows.")
QUICK_TRAINING: dict[str, dict[str, Any]] = {
    "weak_to_strong": {"seeds": 1, "pairs": 48, "steps": 4, "weak_sft_steps": 2, "strong_sft_steps": 4,
                       "resamples": 50},
}
"""Settings (fields of the suite's ``settings`` default) that make a training suite's run take seconds."""

MEASURE = """<script>
const view = document.documentElement.clientWidth;
const tables = [...document.querySelectorAll("h3")].map(h => {
  const next = h.nextElementSibling;
  const box = (next.querySelector("table") || next).getBoundingClientRect();
  return {title: h.textContent, left: box.left, right: box.right};
});
const out = document.createElement("pre");
out.id = "layout";
out.textContent = JSON.stringify({view: view, page: document.documentElement.scrollWidth, tables: tables});
document.body.appendChild(out);
</script>"""
"""Appended to a copy of the page: writes where each table lies into <pre id="layout">."""


def canned(prompt: Any) -> list[str]:
    """Four answers for any prompt, the first picked by the prompt's checksum (stable across runs)."""
    k = zlib.crc32(repr(prompt).encode("utf-8"))
    return [ANSWERS[(k + i) % len(ANSWERS)] for i in range(4)]


def quick_result(name: str, tmp_path: Path) -> SuiteResult:
    suite = get_suite(name)
    if not getattr(suite, "trains", False):
        return suite.evaluate(FixedResponder(canned, name="canned"), reference=FixedResponder(canned, name="ref"))
    from rich.console import Console

    train = getattr(suite, "train_and_evaluate", None)
    settings = inspect.signature(train).parameters.get("settings") if train else None
    if name not in QUICK_TRAINING or settings is None or not dataclasses.is_dataclass(settings.default):
        pytest.skip(f"{name} trains models and this file has no quick settings for it (QUICK_TRAINING)")
    quick = dataclasses.replace(settings.default, **QUICK_TRAINING[name])
    return train(None, tmp_path / "train", Console(quiet=True), settings=quick)


def chromium(page: Path, profile: Path, *flags: str) -> subprocess.CompletedProcess:
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", f"--window-size={WIDTH},{HEIGHT}", *flags, page.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"chromium failed ({done.returncode}): {done.stderr[-2000:]}"
    return done


def screenshot(page: Path, png: Path, profile: Path) -> str:
    """The page's screenshot into ``png``, and its rendered DOM."""
    dom = chromium(page, profile, f"--screenshot={png}", "--dump-dom").stdout
    assert png.is_file(), f"chromium wrote no screenshot of {page}"
    return dom


def png_size(png: Path) -> tuple[int, int]:
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{png} is not a PNG"
    return struct.unpack(">II", data[16:24])


def ink(png: Path) -> tuple[int, tuple[int, int, int, int] | None] | None:
    """(dark pixels, their bounding box) with Pillow, else None; the scroll bars are cut off first."""
    try:
        from PIL import Image
    except ImportError:
        return None
    with Image.open(png) as image:
        image.verify()
    with Image.open(png) as image:
        grey = image.convert("L").crop((0, 0, WIDTH - 20, HEIGHT - 20))
    dark = grey.point(lambda v: 255 if v < 110 else 0)
    return dark.histogram()[255], dark.getbbox()


class Dom(HTMLParser):
    """Headings, tables (rows of cell texts), notes and the layout report of a rendered page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.h2: list[str] = []
        self.h3: list[str] = []
        self.tables: list[list[list[str]]] = []
        self.notes: list[str] = []
        self.layout = ""
        self._text: list[str] | None = None
        self._into: str | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        if tag in ("h2", "h3", "td", "th") or (tag == "p" and attributes.get("class") == "note") or (
                tag == "pre" and attributes.get("id") == "layout"):
            self._text, self._into = [], tag

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag != self._into or self._text is None:
            return
        text = "".join(self._text)
        if tag in ("td", "th"):
            self.tables[-1][-1].append(text)
        elif tag == "p":
            self.notes.append(text)
        elif tag == "pre":
            self.layout = text
        else:
            getattr(self, tag).append(text)
        self._text = self._into = None


def raw_json(cell: str) -> bool:
    """Whether a cell shows a JSON object, or a list of anything but numbers (an interval is fine)."""
    if not cell.startswith(("{", "[")):
        return False
    try:
        value = json.loads(cell)
    except ValueError:
        return False
    return isinstance(value, dict) or isinstance(value, list) and not all(
        isinstance(v, (int, float)) for v in value)


@pytest.fixture(scope="module")
def blank(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A blank page's screenshot: what a page without content weighs."""
    folder = tmp_path_factory.mktemp("blank")
    page = folder / "blank.html"
    page.write_text("<!doctype html><html><head><meta charset='utf-8'></head><body></body></html>\n", encoding="utf-8")
    screenshot(page, folder / "blank.png", folder / "profile")
    return folder / "blank.png"


def test_a_blank_page_has_no_ink(blank: Path) -> None:
    assert png_size(blank) == (WIDTH, HEIGHT)
    found = ink(blank)
    assert found is None or found == (0, None)


@pytest.mark.parametrize("name", SUITES.names())
def test_section_renders(name: str, blank: Path, tmp_path: Path) -> None:
    result = quick_result(name, tmp_path)
    page = write_html([suite_section(result)], tmp_path / "report.html")
    png = tmp_path / f"{name}.png"
    dom = Dom(screenshot(page, png, tmp_path / "profile"))

    # the screenshot: a PNG of the window's size with the section's text on it
    assert png_size(png) == (WIDTH, HEIGHT)
    found = ink(png)
    if found is None:  # no Pillow: a page of tables compresses far worse than a blank one
        assert png.stat().st_size > 5 * blank.stat().st_size
    else:
        dark, box = found
        assert box is not None and dark > 0.005 * WIDTH * HEIGHT, f"{name}: {dark} dark pixels"
        left, top, right, bottom = box
        assert right - left > 0.4 * WIDTH and bottom - top > 400, f"{name}: text only in {box}"

    # the DOM: title, metrics, every table with all its rows, the notes
    assert len(dom.h2) == 1 and dom.h2[0].startswith(f"{name}: "), dom.h2
    tables = {title: rows for title, rows in zip(dom.h3, dom.tables, strict=True)}
    expected = ["Metrics", *(t for t, rows in result.tables.items() if rows)] + ([ITEMS_TABLE] if result.rows else [])
    assert dom.h3 == expected
    metrics = tables["Metrics"]
    assert metrics[0][:2] == ["metric", "value"]
    assert [row[0] for row in metrics[1:]] == [m.name for m in result.metrics]
    for row, m in zip(metrics[1:], result.metrics, strict=True):
        assert row[1] == "–" if m.value is None else float(row[1]) == pytest.approx(m.value, abs=5e-4)
        assert row[-1] == m.definition
    for title, rows in result.tables.items():
        if rows:
            assert tables[title][0] == [str(k) for k in rows[0]], f"{name}: header of {title!r}"
            assert len(tables[title]) == 1 + len(rows), f"{name}: rows of {title!r}"
    if result.rows:
        shown = tables[ITEMS_TABLE]
        assert len(shown) == 1 + min(50, len(result.rows))
        if "id" in result.rows[0]:
            assert [row[0] for row in shown[1:]] == [str(r["id"]) for r in result.rows[:50]]
    assert dom.notes == list(result.notes)
    if result.rows:  # lists and mappings flattened to lines, not dumped as JSON
        nested = {json.dumps(v) for r in result.rows[:50] for v in r.values() if isinstance(v, (list, dict))}
        dumped = [cell for row in tables[ITEMS_TABLE][1:] for cell in row if cell in nested]
        assert not dumped, f"{name}: the item table dumps nested values as JSON: {dumped[:3]}"
    for title in expected[:-1] if result.rows else expected:  # summaries: plain values, no JSON objects
        dumped = [cell for row in tables[title][1:] for cell in row if raw_json(cell)]
        assert not dumped, f"{name}: table {title!r} shows raw JSON: {dumped[:3]}"

    # the layout: the metric and breakdown tables fit in the window
    measured = tmp_path / "measured.html"
    measured.write_text(page.read_text(encoding="utf-8").replace("</body>", MEASURE + "</body>"), encoding="utf-8")
    layout = json.loads(Dom(chromium(measured, tmp_path / "profile", "--dump-dom").stdout).layout)
    assert [t["title"] for t in layout["tables"]] == expected
    for table in layout["tables"]:
        if table["title"] != ITEMS_TABLE:
            assert table["left"] >= 0 and table["right"] <= layout["view"], f"{name}: {table} overflows the window"
    # a wide item table scrolls inside its own box; the page itself never scrolls sideways
    assert layout["page"] <= layout["view"], f"{name}: the page is {layout['page']} px wide in {layout['view']}"

