"""`alignlab eval` end to end on a tiny model, and the pair diagnostics it reports."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

from alignlab.cli import main
from alignlab.data.load import load_records
from alignlab.eval.pairs import evaluate_pairs
from alignlab.eval.scoring import PairScores, score_pairs
from alignlab.models import load_tokenizer
from alignlab.models.tiny import init_tiny_model

ROOT = Path(__file__).resolve().parents[2]
PAIRS = ROOT / "examples" / "data" / "pairs_eval.jsonl"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return init_tiny_model(tmp_path_factory.mktemp("tiny") / "m", hidden_size=32, intermediate=64)


def test_model_equal_to_its_reference(tiny):
    """Policy = reference: every implicit reward is 0, so implicit-reward accuracy is exactly 0.5
    (ties count half), while the policy's ranking accuracy equals the reference's."""
    from transformers import AutoModelForCausalLM

    pairs = load_records(PAIRS).records
    model = AutoModelForCausalLM.from_pretrained(tiny)
    scores = score_pairs(model, load_tokenizer(tiny), pairs, batch_size=3)
    results = evaluate_pairs(pairs, scores, scores, beta=0.1)
    summary = results["summary"]
    assert summary["implicit_reward"]["accuracy"] == 0.5
    assert summary["ranking_accuracy"]["value"] == summary["reference_ranking_accuracy"]["value"]
    assert summary["alignment_gap"] == pytest.approx(
        summary["idealized_ranking_accuracy"]["value"] - summary["ranking_accuracy"]["value"])


def test_scores_match_one_pair_at_a_time(tiny):
    """Batched, length-sorted scoring returns each pair's numbers in input order."""
    from transformers import AutoModelForCausalLM

    pairs = load_records(PAIRS).records
    model = AutoModelForCausalLM.from_pretrained(tiny)
    tokenizer = load_tokenizer(tiny)
    batched = score_pairs(model, tokenizer, pairs, batch_size=4)
    for i in (0, len(pairs) - 1):
        alone = score_pairs(model, tokenizer, [pairs[i]], batch_size=1)
        assert batched.chosen_sum[i] == pytest.approx(float(alone.chosen_sum[0]), abs=1e-4)
        assert batched.rejected_mean[i] == pytest.approx(float(alone.rejected_mean[0]), abs=1e-5)


def test_rater_shares_drive_idealized_accuracy():
    """Pairs with rater shares use them (no assumed-α note); α = 1 with a reference already right
    gives idealized accuracy 1."""
    from alignlab.data.records import PreferencePair

    pairs = [PreferencePair("q?", "a", "b", rater_share=1.0), PreferencePair("r?", "c", "d", rater_share=1.0)]
    s = PairScores(*(torch.tensor(v, dtype=torch.float64) for v in
                     ([-1.0, -2.0], [-3.0, -1.0], [-1.0, -2.0], [-3.0, -1.0], [2.0, 2.0], [2.0, 2.0])),
                   kept=[0, 1])
    results = evaluate_pairs(pairs, s, s, beta=1.0)
    assert results["summary"]["idealized_ranking_accuracy"]["value"] == 1.0
    assert results["summary"]["ranking_accuracy"]["value"] == 0.5
    assert not any("assumes" in note for note in results["notes"])


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.tables = 0

    def handle_starttag(self, tag, attrs):
        if tag not in ("meta", "br"):
            self.stack.append(tag)
        self.tables += tag == "table"

    def handle_endtag(self, tag):
        assert self.stack.pop() == tag


def test_alignlab_eval_cli_writes_json_and_html(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    out = tmp_path / "eval"
    assert main(["eval", "--model", str(tiny), "--ref", str(tiny), "--data", str(PAIRS), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ranking accuracy" in printed and "alignment gap" in printed
    results = json.loads((out / "eval.json").read_text())
    assert results["summary"]["pairs"] == len(load_records(PAIRS).records)
    assert results["summary"]["implicit_reward"]["accuracy"] == 0.5
    parser = _Tags()
    parser.feed((out / "report.html").read_text())
    assert parser.stack == [] and parser.tables >= 3  # balanced tags, the tables are there
