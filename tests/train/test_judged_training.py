"""CUT's judged data: both contexts tokenized with identical completions, rows aligned token by
token, the positive/negative rule, and a short training run."""

from __future__ import annotations

import json

import torch

from alignlab.config import load_config
from alignlab.data.records import Judged
from alignlab.data.tokenize import RecordTokenizer
from alignlab.kinds.judged import (
    PLAIN,
    WITH_JUDGMENT,
    completion_rows,
    is_negative,
    tokenize_judged,
)
from alignlab.models.tiny import init_tiny_model
from alignlab.train.run import run_training


def test_positive_rule():
    """Positive: no judgment, or a score of at least 7 (the paper's rule)."""
    assert not is_negative(Judged("q?", "a", None))
    assert is_negative(Judged("q?", "a", "wrong"))
    assert not is_negative(Judged("q?", "a", "fine", score=7.0))
    assert is_negative(Judged("q?", "a", "meh", score=6.5))


def test_both_contexts_share_the_completion(bpe_tokenizer):
    items = tokenize_judged([Judged("What is 2 plus 3?", "2 plus 3 is 6.", "Wrong: it is 5."),
                             Judged("What is 2 times 2?", "4.", None)], RecordTokenizer(bpe_tokenizer))
    negative, positive = items
    assert negative.negative and not positive.negative and positive.judged is None
    assert negative.judged.completion_ids == negative.plain.completion_ids
    assert bpe_tokenizer.decode(negative.judged.prompt_ids).endswith(
        WITH_JUDGMENT.format(instruction="What is 2 plus 3?", judgment="Wrong: it is 5."))
    assert bpe_tokenizer.decode(negative.plain.prompt_ids).endswith(PLAIN.format(instruction="What is 2 plus 3?"))


def test_completion_rows_left_align_each_rows_completion():
    """Row 0 has completion positions 2,3; row 1 positions 4,5,6: values land left-aligned."""
    tokens = torch.arange(14, dtype=torch.float32).view(2, 7)
    mask = torch.zeros(2, 7, dtype=torch.bool)
    mask[0, 2:4] = True
    mask[1, 4:7] = True
    rows, row_mask = completion_rows(tokens, mask)
    assert rows.tolist() == [[2.0, 3.0, 0.0], [11.0, 12.0, 13.0]]
    assert row_mask.tolist() == [[True, True, False], [True, True, True]]


def test_cut_trains_end_to_end(tmp_path):
    tiny = init_tiny_model(tmp_path / "tiny", hidden_size=32, intermediate=64)
    rows = []
    for i in range(8):
        rows.append({"instruction": f"What is {i} plus 2?", "response": f"{i} plus 2 is {i + 3}.",
                     "judgment": f"Wrong: {i} plus 2 is {i + 2}."})
        rows.append({"instruction": f"What is {i} times 1?", "response": f"{i}.", "judgment": None})
    data = tmp_path / "judged.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    config = load_config(None, [f"data.path={data}", f"model.name_or_path={tiny}", "train.loss=cut",
                                f"train.output_dir={tmp_path / 'run'}", "train.lr=1e-3",
                                "train.batch_size=4", "train.max_steps=3"])
    run = run_training(config)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and all(x["unlikelihood"] > 0 for x in lines)
    assert lines[-1]["nll"] < lines[0]["nll"]
    assert json.loads((run / "summary.json").read_text())["reference"] == "none"

