"""SFT packing into fixed-length rows (train.pack_length) through the real SFT step and the loop.

The packed step's NLL and gradients equal the unpacked step's on the same examples (the real
tokenizer, loss and step function); a run logs exactly that loss at step 1; an epoch reads every
example once, in rows of at most pack_length tokens; what cannot be packed is refused before any
model loads.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from rich.console import Console

import alignlab
from alignlab.data.load import load_records
from alignlab.data.tokenize import RecordTokenizer, TokenizeOptions, pad_id_of
from alignlab.errors import ConfigError
from alignlab.forward import CompletionLogps
from alignlab.forward.rows import best_fit_decreasing
from alignlab.kinds import get_kind
from alignlab.losses.contract import get_loss
from alignlab.models.loading import load_tokenizer
from alignlab.models.tiny import init_tiny_model
from alignlab.train.order import PackedOrder
from alignlab.train.steps import make_step

ROOT = Path(__file__).resolve().parents[2]
SFT = ROOT / "examples" / "data" / "sft.jsonl"
CAPACITY = 64


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return init_tiny_model(tmp_path_factory.mktemp("pack") / "tiny", hidden_size=32, layers=2, heads=4,
                           intermediate=64)


@pytest.fixture(scope="module")
def items(tiny):
    tokenizer = load_tokenizer(tiny)
    records = load_records(SFT).records
    items, _ = get_kind("sft").tokenize(records, RecordTokenizer(tokenizer, TokenizeOptions()))
    return items, pad_id_of(tokenizer)


def load_policy_from_path(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def lengths(items) -> list[int]:
    return [len(i.prompt_ids) + len(i.completion_ids) for i in items]


def test_packed_step_equals_the_unpacked_step_on_the_same_examples(tiny, items):
    items, pad_id = items
    order = PackedOrder(best_fit_decreasing(lengths(items), CAPACITY), batch_size=3, seed=0)
    indices = order.batch(0, 0)
    assert len(indices) > 3  # three rows hold more than three examples
    entry = get_loss("nll")
    results = []
    for row_of in (None, order.row_of):
        model = load_policy_from_path(tiny)
        step = make_step(entry, {}, get_kind("sft"), items, CompletionLogps(model, packing=False), None, pad_id,
                         row_of=row_of)
        result = step(indices)
        result.loss_sum.backward()
        results.append((result, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (plain, plain_grads), (packed, packed_grads) = results
    torch.testing.assert_close(packed.loss_sum, plain.loss_sum, atol=1e-5, rtol=1e-5)
    assert packed.examples == plain.examples == len(indices)
    assert packed.tokens == plain.tokens
    assert plain_grads.keys() == packed_grads.keys()
    for name, grad in plain_grads.items():
        torch.testing.assert_close(packed_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_packed_order_reads_every_example_once_per_epoch_in_rows_that_fit(items):
    items, _ = items
    sizes = lengths(items)
    bins = best_fit_decreasing(sizes, CAPACITY)
    for world in (1, 2):
        orders = [PackedOrder(bins, batch_size=2, seed=3, rank=r, world_size=world) for r in range(world)]
        for epoch in (0, 1):
            seen = [i for o in orders for b in range(o.batches_per_epoch()) for i in o.batch(epoch, b)]
            assert sorted(seen) == list(range(len(items)))
            for b in range(orders[0].batches_per_epoch()):
                assert orders[0].global_count(epoch, b) == sum(len(o.batch(epoch, b)) for o in orders)
    assert all(sum(sizes[i] for i in row) <= CAPACITY for row in bins)
    assert len(bins) < len(items) / 2  # short arithmetic answers: several to a row


def test_a_packed_run_logs_the_unpacked_loss_of_its_first_step(tiny, items, tmp_path):
    items, pad_id = items
    config = {"data": {"path": str(SFT)}, "model": {"name_or_path": str(tiny)},
              "train": {"loss": "nll", "pack_length": CAPACITY, "batch_size": 2, "max_steps": 3, "lr": 1e-3,
                        "seed": 5, "precision": "fp32", "device": "cpu", "output_dir": str(tmp_path / "run")}}
    run = alignlab.train(config, console=Console(quiet=True))
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    first = next(r for r in logged if r["split"] == "train" and r["step"] == 1)
    order = PackedOrder(best_fit_decreasing(lengths(items), CAPACITY), batch_size=2, seed=5)
    indices = order.batch(0, 0)
    model = load_policy_from_path(tiny)
    step = make_step(get_loss("nll"), {}, get_kind("sft"), items, CompletionLogps(model, packing=False), None, pad_id)
    with torch.no_grad():
        expected = step(indices)
    assert first["loss"] == pytest.approx(float(expected.loss_sum) / len(indices), abs=1e-5)
    assert first["tokens"] == expected.tokens
    assert (run / "model" / "model.safetensors").is_file()


def test_what_cannot_be_packed_is_refused_before_the_model_loads(tiny, tmp_path, monkeypatch):
    import alignlab.train.run as run_module

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(run_module, "load_policy", no_loading)
    base = {"data": {"path": str(SFT)}, "model": {"name_or_path": str(tiny)},
            "train": {"loss": "nll", "pack_length": 8, "device": "cpu", "output_dir": str(tmp_path / "a")}}
    with pytest.raises(ConfigError, match=r"(?s)train.pack_length=8: 32 examples are longer .*hint: raise "
                                          r"train.pack_length to at least \d+"):
        alignlab.train(base, console=Console(quiet=True))
    pairs = {"data": {"path": str(ROOT / "examples" / "data" / "pairs.jsonl")}, "model": {"name_or_path": str(tiny)},
             "train": {"loss": "dpo", "pack_length": 256, "device": "cpu", "output_dir": str(tmp_path / "b")}}
    with pytest.raises(ConfigError, match="packs SFT examples, but loss 'dpo' trains on paired data"):
        alignlab.train(pairs, console=Console(quiet=True))
    with pytest.raises(ConfigError, match="pack_length"):
        alignlab.train({**base, "train": {**base["train"], "pack_length": 0}}, console=Console(quiet=True))


def test_the_doctor_refuses_packing_a_paired_loss(tiny):
    from alignlab.train.api import resolve_config as config_from_dict
    from alignlab.train.doctor import diagnose

    report = diagnose(config_from_dict({"data": {"path": str(ROOT / "examples" / "data" / "pairs.jsonl")},
                                        "model": {"name_or_path": str(tiny)},
                                        "train": {"loss": "dpo", "pack_length": 256}}))
    batch = next(c for c in report.checks if c.name == "batch")
    assert not report.ok and not batch.ok and "packs SFT examples" in batch.detail
    sft = diagnose(config_from_dict({"data": {"path": str(SFT)}, "model": {"name_or_path": str(tiny)},
                                     "train": {"loss": "nll", "pack_length": 256}}))
    assert sft.ok, sft.checks
    assert "rows of <= 256 tokens" in next(c for c in sft.checks if c.name == "batch").detail
