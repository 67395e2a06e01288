"""Process reward models: stepwise data (TRL's stepwise supervision), its tokenization, training
with prm_bce through the loop, and the ``prm`` reward that scores a solution's steps.

The training loss is recomputed from the model's own forward (the scalar head at each step's last
token, a hand-written BCE); the reward's step probabilities likewise; a PRM trained on a rule the
data follows learns it and re-ranks solutions by it.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from rich.console import Console

import alignlab
from alignlab.config import ModelConfig
from alignlab.data.load import load_records
from alignlab.data.records import StepwiseExample
from alignlab.data.tokenize import RecordTokenizer, TokenizeOptions
from alignlab.errors import AlignlabError, ConfigError
from alignlab.models import ScalarHeadModel, load_reward_model
from alignlab.models.tiny import init_tiny_model

ROOT = Path(__file__).resolve().parents[2]
STEPS = ROOT / "examples" / "data" / "steps.jsonl"
PROMPT = "Start from 9 and add the numbers step by step."


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return init_tiny_model(tmp_path_factory.mktemp("prm") / "tiny", hidden_size=32, layers=2, heads=4,
                           intermediate=64)


def test_the_example_file_loads_as_stepwise_records():
    records = load_records(STEPS).records
    assert len(records) == 48 and all(isinstance(r, StepwiseExample) for r in records)
    assert all(len(r.steps) == len(r.labels) and set(r.labels) <= {0.0, 1.0} for r in records)


@pytest.mark.parametrize(("row", "message"), [
    ({"completions": ["a", "b"], "labels": [True]}, "field 'labels': 1 labels for 2 steps"),
    ({"completions": "a", "labels": [True]}, "field 'completions': expected a non-empty list"),
    ({"completions": [], "labels": []}, "field 'completions': expected a non-empty list"),
    ({"completions": ["a", " "], "labels": [True, False]}, r"field 'completions\[1\]': empty step"),
    ({"completions": ["a", 3], "labels": [True, False]}, r"field 'completions\[1\]': expected a string"),
    ({"completions": ["a", "b"], "labels": [True, 1.5]}, r"field 'labels\[1\]': expected a finite number in"),
    ({"completions": ["a", "b"], "labels": "11"}, "field 'labels': expected a list"),
], ids=["count", "string", "empty", "blank-step", "number-step", "label-range", "label-string"])
def test_a_bad_stepwise_row_is_named_by_file_line_and_field(tmp_path, row, message):
    path = tmp_path / "steps.jsonl"
    good = {"prompt": PROMPT, "completions": ["9 + 3 = 12."], "labels": [0.75]}
    path.write_text("\n".join(json.dumps(r) for r in (good, {"prompt": PROMPT, **row})) + "\n", encoding="utf-8")
    with pytest.raises(AlignlabError, match=rf"steps\.jsonl:2.*{message}"):
        load_records(path)


def test_each_step_and_its_separator_tokenize_on_their_own(gpt2):
    record = StepwiseExample(PROMPT, ("9 + 3 = 12.", "12 + 8 = 20.", "# Answer\n\n20"), (True, False, False))
    item = RecordTokenizer(gpt2)(record)
    pieces = [gpt2(step + "\n\n")["input_ids"] for step in record.steps]
    assert list(item.prompt_ids) == gpt2(PROMPT)["input_ids"]
    assert list(item.completion_ids) == [t for piece in pieces for t in piece]
    ends = [sum(len(p) for p in pieces[:k + 1]) - 1 for k in range(3)]
    assert list(item.step_ends) == ends and item.labels == (1.0, 0.0, 0.0)
    assert gpt2.decode([item.completion_ids[e] for e in ends]).count("\n") == 6  # every end is a separator's

    short = RecordTokenizer(gpt2, TokenizeOptions(max_length=len(item.prompt_ids) + ends[1] + 2))
    cut = short(record)  # room for two steps and a bit of the third: the two whole steps are kept
    assert list(cut.step_ends) == ends[:2] and cut.labels == (1.0, 0.0) and short.stats["steps_truncated"] == 1
    assert RecordTokenizer(gpt2, TokenizeOptions(max_length=len(item.prompt_ids) + 2))(record) is None


def manual_bce(model: ScalarHeadModel, items, labels_of) -> float:
    """Mean over examples of the mean over steps of BCE(head at the step's last token, label)."""
    losses = []
    for item in items:
        ids = torch.tensor([list(item.prompt_ids) + list(item.completion_ids)])
        with torch.no_grad():
            hidden = model.lm.model(input_ids=ids).last_hidden_state[0]
            logits = model.head(hidden.float()).squeeze(-1)
        at = [len(item.prompt_ids) + end for end in item.step_ends]
        z, y = logits[at].double(), torch.tensor(labels_of(item), dtype=torch.float64)
        losses.append(float((torch.nn.functional.softplus(z) - y * z).mean()))
    return sum(losses) / len(losses)


def test_prm_bce_trains_on_the_head_at_each_steps_end(tiny, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny)
    model = load_reward_model(ModelConfig(name_or_path=str(tiny), reward_head="scalar_head"), "cpu", tokenizer)
    before = copy.deepcopy(model)
    rows = [json.loads(line) for line in STEPS.read_text().splitlines()[:4]]
    run = alignlab.train({"train": {"loss": "prm_bce", "max_steps": 1, "batch_size": 4, "lr": 1e-6,
                                    "output_dir": str(tmp_path / "run"), "device": "cpu"}},
                         train_data=rows, model=model, tokenizer=tokenizer, console=Console(quiet=True))
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    encoder = RecordTokenizer(tokenizer)
    items = [encoder(StepwiseExample(r["prompt"], r["completions"], r["labels"])) for r in rows]
    assert record["loss"] == pytest.approx(manual_bce(before, items, lambda i: i.labels), abs=1e-5)
    assert record["steps"] == pytest.approx(sum(len(i.step_ends) for i in items) / 4)
    assert (run / "model" / "scalar_head.safetensors").is_file()


def test_a_prm_needs_a_scalar_head_before_anything_loads(tiny, tmp_path, monkeypatch):
    import alignlab.train.run as run

    monkeypatch.setattr(run, "load_reward_model", lambda *a, **k: pytest.fail("a model was loaded"))
    with pytest.raises(ConfigError, match="(?s)process reward model.*model.reward_head=scalar_head"):
        alignlab.train({"data": {"path": str(STEPS)}, "model": {"name_or_path": str(tiny)},
                        "train": {"loss": "prm_bce", "max_steps": 1, "output_dir": str(tmp_path / "r")}},
                       console=Console(quiet=True))


def rule_data(n: int, seed: int) -> list[dict]:
    """Steps that are right ("fine") or wrong ("broken"); a label is whether the step and every
    step before it are right."""
    import random

    rng, rows = random.Random(seed), []
    for _ in range(n):
        words = [rng.random() < 0.7 for _ in range(rng.randint(1, 3))]
        steps = [f"this step is {'fine' if ok else 'broken'}." for ok in words]
        labels, good = [], True
        for ok in words:
            good = good and ok
            labels.append(good)
        rows.append({"prompt": "Check the steps.", "completions": steps, "labels": labels})
    return rows


def test_a_trained_prm_scores_steps_and_reranks_solutions(tiny, tmp_path):
    from alignlab.rewards import build_reward
    from alignlab.rewards.models import ProcessRewardModel

    run = alignlab.train({"model": {"name_or_path": str(tiny), "reward_head": "scalar_head"},
                          "train": {"loss": "prm_bce", "max_steps": 60, "batch_size": 16, "lr": 3e-3,
                                    "output_dir": str(tmp_path / "prm"), "device": "cpu", "schedule": "constant"}},
                         train_data=rule_data(320, 0), eval_data=rule_data(64, 1), console=Console(quiet=True))
    final = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()][-1]
    assert final["split"] == "eval" and final["accuracy"] > 0.9  # held-out steps, the rule learned

    reward = build_reward(f"prm(path='{run / 'model'}')")
    assert isinstance(reward, ProcessRewardModel)
    solutions = ["this step is fine.\n\nthis step is broken.", "this step is fine.\n\nthis step is fine.", ""]
    steps = reward.step_probabilities(["Check the steps."] * 3, solutions)
    assert steps[2] is None and len(steps[0]) == len(steps[1]) == 2  # no step: unscorable, not 0
    assert steps[0][1] < 0.5 < steps[1][1]
    scores = reward(["Check the steps."] * 3, solutions, {})
    assert scores == [min(steps[0]), min(steps[1]), None]

    model = reward.model  # the probabilities recomputed from the model's own forward
    item = RecordTokenizer(reward.tokenizer)(StepwiseExample("Check the steps.", ("this step is fine.",
                                                                                 "this step is broken."), (1, 0)))
    ids = torch.tensor([list(item.prompt_ids) + list(item.completion_ids)])
    with torch.no_grad():
        logits = model.head(model.lm.model(input_ids=ids).last_hidden_state[0].float()).squeeze(-1)
    expected = torch.sigmoid(logits[[len(item.prompt_ids) + e for e in item.step_ends]]).tolist()
    assert steps[0] == pytest.approx(expected, abs=1e-6)

    from alignlab.decode.voting import rerank

    assert rerank([steps[0], steps[1], None]).index == 1
    product = build_reward(f"prm(path='{run / 'model'}', aggregate='prod')")
    assert product(["Check the steps."], [solutions[1]], {})[0] == pytest.approx(math.prod(steps[1]), abs=1e-9)


def test_the_doctor_names_the_missing_scalar_head(tiny):
    from alignlab.config import load_config
    from alignlab.train.doctor import diagnose

    common = [f"data.path={STEPS}", f"model.name_or_path={tiny}", "train.loss=prm_bce"]
    assert diagnose(load_config(None, [*common, "model.reward_head=scalar_head"])).ok
    failed = [c for c in diagnose(load_config(None, common)).checks if not c.ok]
    assert [c.name for c in failed] == ["batch"] and "scalar head" in failed[0].detail


def test_stepwise_records_round_trip_through_the_jsonl_writer(tmp_path):
    from alignlab.data.convert import write_jsonl

    records = load_records(STEPS).records
    write_jsonl(records, tmp_path / "out.jsonl")
    first = json.loads((tmp_path / "out.jsonl").read_text().splitlines()[0])
    assert set(first) >= {"prompt", "completions", "labels"}  # the stepwise format's columns
    again = load_records(tmp_path / "out.jsonl").records
    assert [(r.prompt, r.steps, r.labels) for r in again] == [(r.prompt, r.steps, r.labels) for r in records]
