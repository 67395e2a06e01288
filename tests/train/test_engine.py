"""The engine end to end on a tiny model built in the test: learning, the reference staying put,
accumulation invariance with a real loss, evaluation against the true reference, the examples."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alignlab.config import load_config
from alignlab.data.load import load_records
from alignlab.data.tokenize import RecordTokenizer
from alignlab.forward import CompletionLogps
from alignlab.kinds import get_kind
from alignlab.losses import LOSSES, get_loss
from alignlab.models import frozen_copy, load_tokenizer
from alignlab.models.reference import CopyReference
from alignlab.models.tiny import init_tiny_model
from alignlab.train.loop import Trainer
from alignlab.train.order import ExampleOrder
from alignlab.train.run import run_training
from alignlab.train.steps import make_step

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return init_tiny_model(tmp_path_factory.mktemp("tiny") / "model", hidden_size=32, layers=2, heads=4,
                           intermediate=64)


def config(tmp_path: Path, tiny: Path, *overrides: str):
    base = [f"data.path={EXAMPLES / 'data' / 'pairs.jsonl'}", f"model.name_or_path={tiny}",
            f"train.output_dir={tmp_path / 'run'}", "train.lr=1e-3", "train.max_steps=4",
            "train.batch_size=4", "train.max_grad_norm=null"]
    return load_config(None, [*base, *overrides])


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "model" / "model.safetensors")


def test_dpo_learns_and_the_reference_does_not_move(tiny, tmp_path):
    tokenizer = load_tokenizer(tiny)
    records = load_records(EXAMPLES / "data" / "pairs.jsonl").records
    items = RecordTokenizer(tokenizer).map(records).items
    from alignlab.models import load_policy

    cfg = config(tmp_path, tiny, "train.max_steps=10")
    model = load_policy(cfg.model, "cpu")
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    reference = CopyReference(frozen_copy(model), copy=False)
    entry = get_loss("dpo")
    step = make_step(entry, {"beta": 0.1}, get_kind("paired"), items, CompletionLogps(model), reference,
                     tokenizer.pad_token_id)
    trainer = Trainer(cfg.train, model, step, ExampleOrder(len(items), 4, seed=0), tmp_path / "run")
    trainer.fit()
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["loss"] == pytest.approx(0.6931, abs=1e-3)  # log 2: policy = reference at step 1
    assert lines[-1]["loss"] < 0.6
    assert any(not torch.equal(start[n], p) for n, p in model.named_parameters())
    assert all(torch.equal(start[n], p) for n, p in reference.model.named_parameters())


def test_accumulation_invariance_with_dpo(tiny, tmp_path, monkeypatch):
    """8 pairs × 1 and 2 pairs × 4 per optimizer step: the gradient each optimizer step applies
    agrees within 1e-6 (fp32, CPU), and so do the weights after 3 steps up to Adam's rescaling
    of near-zero gradient entries (float noise there is divided by its own tiny magnitude)."""
    original = torch.optim.AdamW.step
    grads: dict[str, list[list[torch.Tensor]]] = {}
    for name, batch, accum in (("one", 8, 1), ("four", 2, 4)):
        steps: list[list[torch.Tensor]] = []

        def capture(self, *args, _steps=steps, **kwargs):
            _steps.append([p.grad.clone() for g in self.param_groups for p in g["params"]])
            return original(self, *args, **kwargs)

        monkeypatch.setattr(torch.optim.AdamW, "step", capture)
        run_training(config(tmp_path / name, tiny, f"train.batch_size={batch}",
                            f"train.grad_accum={accum}", "train.max_steps=3"))
        grads[name] = steps
    for step_one, step_four in zip(grads["one"], grads["four"], strict=True):
        for g1, g4 in zip(step_one, step_four, strict=True):
            torch.testing.assert_close(g1, g4, atol=1e-6, rtol=0)
    a, b = final_weights(tmp_path / "one" / "run"), final_weights(tmp_path / "four" / "run")
    start = load_file(tiny / "model.safetensors")
    assert any(not torch.equal(a[k], start[k]) for k in a)
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=0)


def test_evaluation_uses_the_true_reference(tiny, tmp_path):
    """After training, eval rewards β(log π − log π_ref) are non-zero: were the trained policy
    used as its own reference (TRL #6443), every implicit reward would be exactly 0. The cache
    (the default) must give the eval set's own reference numbers: its rows are numbered from 0
    like the train set's, so a cache keyed by index alone would hand eval pair 2 the reference
    of train pair 2."""
    finals = {}
    for mode in ("auto", "copy"):
        run = run_training(config(tmp_path / mode, tiny, f"data.eval_path={EXAMPLES / 'data' / 'pairs_eval.jsonl'}",
                                  f"train.reference={mode}"))
        summary = json.loads((run / "summary.json").read_text())
        assert summary["reference"] == ("cache" if mode == "auto" else mode)
        assert abs(summary["final_eval"]["rewards/margins"]) > 1e-3
        assert summary["final_eval"]["rewards/accuracies"] > 0.5
        evals = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"eval"' in x]
        assert evals and evals[-1]["final"] is True
        finals[mode] = summary["final_eval"]
    for name in ("loss", "rewards/margins", "rewards/chosen", "rewards/rejected"):
        assert finals["auto"][name] == pytest.approx(finals["copy"][name], rel=1e-4, abs=1e-6), name


@pytest.mark.parametrize("name", ["sft", "dpo", "simpo", "kto", "reward_model", "grpo", "rloo", "ppo", "online_dpo"])
def test_examples_run_and_save_a_loadable_model(name, tiny, tmp_path):
    from transformers import AutoModelForCausalLM

    data = tmp_path / "examples" / "data"
    shutil.copytree(EXAMPLES / "data", data)
    cfg = load_config(EXAMPLES / f"{name}.yaml", [
        f"model.name_or_path={tiny}", f"train.output_dir={tmp_path / 'run'}", "train.max_steps=2",
        f"data.path={data / Path(load_config(EXAMPLES / f'{name}.yaml').data.path).name}",
    ])
    first_line = (EXAMPLES / f"{name}.yaml").read_text().splitlines()[0]
    assert first_line.startswith("# alignlab init-tiny-model") and f"examples/{name}.yaml" in first_line
    run = run_training(cfg)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 2
    model = AutoModelForCausalLM.from_pretrained(run / "model")
    assert model.config.vocab_size == load_tokenizer(tiny).__len__()


def _ranked_and_judged(folder: Path) -> dict[str, Path]:
    ranked = [{"prompt": f"What is {i} plus 2?", "responses": [f"{i + 2}.", f"{i + 3}.", "No idea."],
               "scores": [2, 0, 1]} for i in range(8)]
    judged = [{"instruction": f"What is {i} plus 2?", "response": f"{i + 3}.",
               "judgment": None if i % 2 else f"Wrong: it is {i + 2}."} for i in range(8)]
    out = {}
    for name, rows in (("ranked", ranked), ("judged", judged)):
        out[name] = folder / f"{name}.jsonl"
        out[name].write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return out


UNSUPPORTED = {"poft": "aligned_scores"}


@pytest.mark.parametrize("loss", [e.name for e in LOSSES.entries()])
def test_every_registered_loss_trains_from_its_contract(loss, tiny, tmp_path):
    """One step of each loss through `alignlab train`, data chosen by the contract's data kind only;
    a loss whose inputs the engine cannot provide fails at start with a clear ConfigError."""
    from alignlab.errors import ConfigError

    entry = get_loss(loss)
    extra = _ranked_and_judged(tmp_path)
    data = {"paired": EXAMPLES / "data" / "pairs.jsonl", "reward": EXAMPLES / "data" / "pairs.jsonl",
            "unpaired": EXAMPLES / "data" / "pairs.jsonl", "sft": EXAMPLES / "data" / "sft.jsonl",
            "ranked": extra["ranked"], "judged": extra["judged"], "prm": EXAMPLES / "data" / "steps.jsonl",
            "prompt": EXAMPLES / "data" / "prompts.jsonl"}
    overrides = [f"data.path={data[entry.contract.data]}", f"train.loss={loss}", "train.max_steps=1"]
    if entry.contract.data == "unpaired":
        overrides.append("data.kind=unpaired")
    if entry.contract.data in ("reward", "prm"):
        overrides.append("model.reward_head=scalar_head")
    if entry.contract.data == "prompt":  # a reward every completion gets, and that varies within a group
        overrides += ['rl.rewards=["length_target(target=3)"]', "rl.num_generations=4", "rl.max_new_tokens=8"]
    cfg = config(tmp_path, tiny, *overrides)
    if loss in UNSUPPORTED:
        with pytest.raises(ConfigError, match=UNSUPPORTED[loss]):
            run_training(cfg)
        return
    run = run_training(cfg)
    line = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert line["step"] == 1 and math.isfinite(line["loss"]) and line["grad_norm"] > 0


def test_a_loss_state_counts_the_steps_of_a_warm_up(tiny, tmp_path):
    """bradley_terry_confidence reads the optimizer steps taken from its state: α = 0.5 · s/2 at
    steps 1, 2, 3 (s = 0, 1, 2 taken before), and the count is checkpointed for a resume."""
    from alignlab.train.checkpoint import load_latest

    run = run_training(config(tmp_path, tiny, f"data.path={EXAMPLES / 'data' / 'pairs.jsonl'}",
                              "train.loss=bradley_terry_confidence", "train.loss_kwargs={warmup_steps: 2}",
                              "model.reward_head=scalar_head", "train.max_steps=3", "train.save_every=3"))
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["aux_coef"] for x in lines if x["split"] == "train"] == [0.0, 0.25, 0.5]
    assert load_latest(run / "checkpoints").loss_state == {"steps": 3}


def test_ranking_accuracy_is_logged_during_training(tiny, tmp_path):
    """Beside implicit-reward accuracy, the policy's own ranking accuracy (summed and normalised)
    and the reference's, in train and eval records; at step 1 policy = reference."""
    run = run_training(config(tmp_path, tiny, f"data.eval_path={EXAMPLES / 'data' / 'pairs_eval.jsonl'}",
                              "train.max_steps=2"))
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    first = lines[0]
    assert {"ranking/accuracy", "ranking/accuracy_normalised", "ranking/reference_accuracy"} <= set(first)
    assert first["ranking/accuracy"] == first["ranking/reference_accuracy"]
    assert first["rewards/accuracies"] == 0.0  # TRL's rule (margin > 0) at margin 0: wrong
    assert any(x["split"] == "eval" and "ranking/accuracy" in x for x in lines)


@pytest.mark.parametrize("loss", ["dpo", "grpo"])
def test_gradient_checkpointing_trains_the_same_weights(loss, tiny, tmp_path):
    """train.gradient_checkpointing recomputes each decoder layer in the backward (packed, lean):
    3 steps land on the weights of the run without it (1e-6, fp32 CPU), offline and online."""
    overrides = [f"train.loss={loss}", "train.max_steps=3", "train.schedule=constant", "train.save_every=null"]
    if loss == "grpo":
        overrides += [f"data.path={EXAMPLES / 'data' / 'prompts.jsonl'}", 'rl.rewards=["length_target(target=3)"]',
                      "rl.num_generations=4", "rl.max_new_tokens=8", "train.loss_kwargs={}"]
    runs = {}
    for flag in ("false", "true"):
        runs[flag] = run_training(config(tmp_path / flag, tiny, *overrides, f"train.gradient_checkpointing={flag}"))
    a, b = final_weights(runs["true"]), final_weights(runs["false"])
    start = load_file(tiny / "model.safetensors")
    assert any(not torch.equal(a[k], start[k]) for k in a)
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=0)
