"""The testbed HTML report and the plots behind it: well-formed, self-contained, escaped.

The fixture is a real ``results.json`` of a small demo run (its ``lengths`` shortened). Plots are
checked as PNGs (signature, and IHDR width) rather than by pixels.
"""

from __future__ import annotations

import base64
import json
import shutil
import struct
from html.parser import HTMLParser
from pathlib import Path

import pytest

from alignlab.eval.plots import (
    length_histogram,
    reward_cost_plot,
    reward_kl_plot,
    sweep_plot,
    training_curves_plot,
)
from alignlab.testbed.report import ReportError, write_report

FIXTURE = Path(__file__).parent / "fixtures" / "results.json"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}


class _Page(HTMLParser):
    """Checks every non-void tag is closed in order; collects <img> sources and cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.images: list[str] = []
        self.cells: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        if tag in ("td", "th"):
            self._cell = []
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
            return
        self.stack.pop()
        if tag in ("td", "th") and self._cell is not None:
            self.cells.append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _parse(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    parser.close()
    return parser


def _png_width(png: bytes) -> int:
    assert png[:8] == PNG_SIGNATURE
    assert png[12:16] == b"IHDR"  # the first chunk: length (4), type (4), width (4), height (4)
    return struct.unpack(">I", png[16:20])[0]


def _run_dir(tmp_path: Path, results: dict | None = None) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    if results is None:
        shutil.copy(FIXTURE, run / "results.json")
    else:
        (run / "results.json").write_text(json.dumps(results), encoding="utf-8")
    return run


def test_report_is_well_formed_self_contained_and_complete(tmp_path):
    path = write_report(_run_dir(tmp_path))
    assert path == tmp_path / "run" / "report.html"
    page = path.read_text(encoding="utf-8")
    parsed = _parse(page)
    assert parsed.errors == [] and parsed.stack == []
    assert "<script" not in page and "http://" not in page and "https://" not in page
    # three plots: reward–KL, training curves, lengths; each an inline PNG at least 300 px wide
    assert len(parsed.images) == 3
    for src in parsed.images:
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix)
        assert _png_width(base64.b64decode(src[len(prefix):], validate=True)) > 300
    results = json.loads(FIXTURE.read_text(encoding="utf-8"))
    for name in results["policies"]:
        assert name in parsed.cells
    assert [b["n"] for b in results["best_of_n"]] == [1, 2, 4, 8, 16]
    for n in ("1", "2", "4", "8", "16"):
        assert n in parsed.cells
    assert "-0.799\u00a0±\u00a00.044" in parsed.cells  # dpo's true reward ± standard error
    assert parsed.cells.index("base") < parsed.cells.index("dpo")  # base first in the summary
    assert results["samples"][0]["prompt"] in parsed.cells


def test_report_orders_base_first_whatever_the_json_order(tmp_path):
    results = json.loads(FIXTURE.read_text(encoding="utf-8"))
    policies = results["policies"]
    results["policies"] = {"kto": policies["kto"], "base": policies["base"]}
    cells = _parse(write_report(_run_dir(tmp_path, results)).read_text(encoding="utf-8")).cells
    assert cells.index("base") < cells.index("kto")


def test_report_escapes_generated_text(tmp_path):
    results = json.loads(FIXTURE.read_text(encoding="utf-8"))
    results["samples"][0]["prompt"] = "say <script>alert('p')</script> & stop"
    results["samples"][0]["dpo"] = "<script>alert(1)</script>"
    results["policies"]["<b>odd</b>"] = results["policies"]["dpo"]
    page = write_report(_run_dir(tmp_path, results)).read_text(encoding="utf-8")
    assert "<script" not in page.lower() and "<b>odd" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    parsed = _parse(page)
    assert parsed.errors == [] and parsed.stack == []
    assert "say <script>alert('p')</script> & stop" in parsed.cells  # round-trips as text


def test_report_without_optional_sections(tmp_path):
    results = json.loads(FIXTURE.read_text(encoding="utf-8"))
    results = {"policies": {"base": results["policies"]["base"]}}
    page = write_report(_run_dir(tmp_path, results)).read_text(encoding="utf-8")
    parsed = _parse(page)
    assert parsed.errors == [] and parsed.stack == []
    assert len(parsed.images) == 2  # reward–KL (the base alone) and lengths
    assert "Best-of-N frontier" not in page and "Sample generations" not in page


def test_report_errors_name_the_run_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="alignlab demo --out"):
        write_report(tmp_path)
    (tmp_path / "results.json").write_text("{}", encoding="utf-8")
    with pytest.raises(ReportError, match="no 'policies'"):
        write_report(tmp_path)


@pytest.mark.parametrize("png", [
    pytest.param(lambda: reward_kl_plot({"base": (0.0, 0.0, -1.4, 0.08)}, []), id="one-policy"),
    pytest.param(lambda: reward_kl_plot({}, [(0.0, -1.4, 0.2, 1), (0.19, -0.6, 0.2, 2)]),
                 id="best-of-n-only"),
    pytest.param(lambda: reward_kl_plot({"a": (None, None, None, None)}, []), id="missing"),
    pytest.param(lambda: reward_kl_plot({"a": (20.0, 0.5, 1.0, 0.1)}, [(1.8, 1.1, 0.1, 16)]),
                 id="symlog"),
    pytest.param(lambda: reward_kl_plot({}, []), id="empty-reward-kl"),
    pytest.param(lambda: training_curves_plot({"dpo": [(5, 0.69), (10, 0.5)]}), id="one-curve"),
    pytest.param(lambda: training_curves_plot({"a": [(1, 1.0)], "b": [], "c": [(1, 2.0)],
                                               "d": [(1, 3.0)], "e": [(1, 4.0)]}), id="five"),
    pytest.param(lambda: training_curves_plot({}), id="no-curves"),
    pytest.param(lambda: length_histogram({"base": [3]}), id="one-length"),
    pytest.param(lambda: length_histogram({"base": [], "dpo": [0, 0, 2]}), id="empty-lengths"),
    pytest.param(lambda: length_histogram({}), id="no-lengths"),
    pytest.param(lambda: reward_cost_plot({"bon": [(6.0, -0.6, 0.1, "N=1"), (12.0, 0.2, 0.1, "N=2")],
                                           "deal": []}, "tokens"), id="reward-cost"),
    pytest.param(lambda: reward_cost_plot({}, "tokens"), id="no-cost-curves"),
    pytest.param(lambda: sweep_plot({"a": ([(0.0, 0.5, 0.1), (1.0, 0.6, 0.1)], [(0.0, 0.5), (1.0, 0.6)]),
                                     "b": ([], [])}, "alpha", "share"), id="sweep"),
    pytest.param(lambda: sweep_plot({}, "alpha", "share"), id="no-sweep"),
])
def test_plots_return_png_bytes_in_edge_cases(png):
    data = png()
    assert isinstance(data, bytes)
    assert _png_width(data) > 300


def test_plots_leave_the_global_backend_alone():
    import matplotlib

    before = matplotlib.get_backend()
    reward_kl_plot({"base": (0.0, 0.0, -1.4, 0.08)}, [])
    assert matplotlib.get_backend() == before


def test_report_inference_time_section_states_the_verdict(tmp_path):
    results = json.loads(FIXTURE.read_text(encoding="utf-8"))
    names = ["true reward (oracle)", "helpfulness proxy alone", "LSC of the helpfulness proxy",
             "raw sum of both proxies", "AND of LSC-transformed proxies"]
    means, gaps = [1.6, -0.45, -0.45, 0.4, 0.44], [1.2, -0.85, -0.85, 0.0, 0.04]
    results["inference_time"] = {
        "n": 16, "prompts": 160, "reference_samples": 8, "first_sample_true_reward": -0.4,
        "first_sample_stderr": 0.15, "harmful_share": 0.25, "lsc_alone_picks_as_raw": True,
        "rows": [{"selector": s, "true_reward_mean": m, "true_reward_stderr": 0.1, "vs_raw_sum_mean": g,
                  "vs_raw_sum_stderr": 0.01 if s.startswith("AND") else 0.1} for s, m, g in zip(names, means, gaps, strict=True)]}
    page = write_report(_run_dir(tmp_path, results)).read_text(encoding="utf-8")
    parsed = _parse(page)
    assert parsed.errors == [] and parsed.stack == []
    assert all(name in parsed.cells for name in names)
    assert "0.040\u00a0±\u00a00.010" in parsed.cells
    assert "true reward is higher compared with the raw sum" in page and "25% of the candidates" in page
    results["inference_time"]["rows"][-1]["vs_raw_sum_stderr"] = 0.05  # now within two standard errors
    (tmp_path / "again").mkdir()
    page = write_report(_run_dir(tmp_path / "again", results)).read_text(encoding="utf-8")
    assert "not distinguishable (within two standard errors)" in page


def _decoding(slope: float) -> dict:
    deal_runs = [{"beam_width": 1, "candidates": 2, "lookahead": 0, "tokens_per_prompt": 8.6,
                  "forward_passes_per_prompt": 5.3, "reward_calls_per_prompt": 8.6, "true_reward_mean": 1.14,
                  "true_reward_stderr": 0.12, "best_of_n_matched_mean": -0.2, "best_of_n_matched_stderr": 0.15,
                  "difference_mean": 1.34, "difference_stderr": 0.17, "budget_capped_prompts": 0},
                 {"beam_width": 2, "candidates": 4, "lookahead": 4, "tokens_per_prompt": 179.2,
                  "forward_passes_per_prompt": 30.2, "reward_calls_per_prompt": 44.1, "true_reward_mean": 1.54,
                  "true_reward_stderr": 0.07, "best_of_n_matched_mean": 1.67, "best_of_n_matched_stderr": 0.06,
                  "difference_mean": -0.125, "difference_stderr": 0.066, "budget_capped_prompts": 2}]
    curve = [{"n": n, "tokens_per_prompt": 6.0 * n, "true_reward_mean": r, "true_reward_stderr": 0.1}
             for n, r in ((1, -0.6), (2, 0.2), (4, 0.8), (64, 1.85))]
    points = [{"alpha": a, "harmless": 0.92 + slope * a, "harmless_stderr": 0.01, "correct": 0.3 - 0.03 * a * a,
               "correct_stderr": 0.02} for a in (-1.0, 0.0, 1.0)]
    fit = {"alignment_intercept": 0.92, "alignment_slope": slope, "alignment_r2": 0.9,
           "helpfulness_intercept": 0.3, "helpfulness_curvature": 0.03, "helpfulness_r2": 0.4}
    shift = {"aligned": "dpo", "prompts": 160, "k": 3, "positions": 517,
             "shares": {"unshifted": 0.81, "marginal": 0.176, "shifted": 0.014},
             "first_positions": [{"unshifted": 0.55, "marginal": 0.43, "shifted": 0.02}], "mean_kl_per_token": 0.14,
             "top_shifted": [{"token": "nobody", "kind": "abstention", "count": 2, "mean_base_rank": 5.5,
                              "base_choice": "<b>eleven</b>"}]}
    return {"deal": {"prompts": 160, "max_new_tokens": 24, "best_of_n": curve, "deal": deal_runs,
                     "best_of_n_forward_passes_per_prompt": 0.41},
            "steering": {"prompts": 160, "samples": 4, "contrast_pairs": 64, "layers": [0], "points": points,
                         "fit": fit},
            "token_shift": shift}


@pytest.mark.parametrize("slope", [-0.043, 0.05])
def test_report_decoding_sections_state_what_was_measured(tmp_path, slope):
    results = json.loads(FIXTURE.read_text(encoding="utf-8"))
    results["decoding"] = _decoding(slope)
    page = write_report(_run_dir(tmp_path, results)).read_text(encoding="utf-8")
    parsed = _parse(page)
    assert parsed.errors == [] and parsed.stack == []
    assert len(parsed.images) == 5  # the three of the fixture, DeAL against best-of-N, the steering sweep
    assert "1.340\u00a0±\u00a00.170" in parsed.cells and "(2, 4, 4)" in parsed.cells
    assert "(1, 2, 0): DeAL ahead; (2, 4, 4): DeAL not distinguishable" in page  # −0.125 ± 0.066: within 2 s.e.
    assert "2 prompt budgets exceeded all 64 samples" in page
    assert "0.810" in parsed.cells and "nobody" in parsed.cells
    assert "<b>eleven</b>" not in page and "&lt;b&gt;eleven&lt;/b&gt;" in page  # tokens are escaped
    if slope < 0:
        assert "lowers the harmless share" in page and "α &lt; 0 is the aligning direction" in page
    else:
        assert "raises the harmless share" in page and "α &lt; 0" not in page
