"""Online and iterative DPO, and OPA-DPO, on the loop with a tiny model: pair construction in
closed form, log 2 at the first step, learning, accumulation invariance, exact resume of a round,
OPA's on-policy reference.

Example: ``.venv/bin/pytest tests/train/test_online_pairs.py``
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from rich.console import Console

from alignlab.config import ModelConfig, RolloutConfig, TrainConfig
from alignlab.data.tokenize import RecordTokenizer, pad_id_of
from alignlab.errors import AlignlabError, ConfigError
from alignlab.forward import CompletionLogps, collate_sequences, frozen_logps
from alignlab.kinds import get_kind
from alignlab.losses import get_loss
from alignlab.models import load_policy, load_tokenizer
from alignlab.models.reference import CopyReference
from alignlab.models.tiny import init_tiny_model
from alignlab.train.loop import Trainer
from alignlab.train.online_pairs import (
    OnlinePairsPhase,
    online_pairs_reference_mode,
    opa_align,
    opa_data,
    opa_dpo,
    rank_pairs,
    run_opa_dpo,
)
from alignlab.train.order import ExampleOrder

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ROOT / "examples" / "data" / "prompts.jsonl"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return init_tiny_model(tmp_path_factory.mktemp("pairs") / "tiny", hidden_size=32, layers=2, heads=4,
                           intermediate=64)


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def e_count(prompts, completions, columns):
    return [float(c.count("e")) for c in completions]


def half_tied(prompts, completions, columns):
    """e_count for prompts with an even answer; a constant (every sample tied) for the others."""
    return [0.0 if int(a) % 2 else float(c.count("e")) for a, c in zip(columns["answer"], completions, strict=True)]


def odd_none(prompts, completions, columns):
    """Unscorable (None) for a completion of odd length, e_count otherwise."""
    return [None if len(c) % 2 else float(c.count("e")) for c in completions]


def rl(**changes):
    """The rl section, with the keys config.py does not have yet (``pairs``) as attributes."""
    pairs = changes.pop("pairs", "best_worst")
    changes = {"num_generations": 4, "max_new_tokens": 8, "rewards": ("e_count",), **changes}
    if "pairs" in {f.name for f in dataclasses.fields(RolloutConfig)}:  # once config.py has the key
        return RolloutConfig(**changes, pairs=pairs)
    return SimpleNamespace(**dataclasses.asdict(RolloutConfig(**changes)), pairs=pairs)


def train_settings(tmp_path: Path, name: str, **changes) -> TrainConfig:
    base = {"loss": "dpo", "lr": 1e-2, "batch_size": 4, "max_steps": 3, "schedule": "constant",
            "max_grad_norm": None, "seed": 0, "device": "cpu", "output_dir": str(tmp_path / name)}
    return TrainConfig(**{**base, **changes})


def load(tiny: Path):
    model = load_policy(ModelConfig(name_or_path=str(tiny)), "cpu")
    model.train()
    tokenizer = load_tokenizer(tiny)
    encoder = RecordTokenizer(tokenizer)
    records = get_kind("prompt").read(PROMPTS)
    prompts, _ = get_kind("prompt").tokenize(records, encoder)
    return model, tokenizer, encoder, prompts


def online_run(tiny: Path, tmp_path: Path, name: str, *, settings=None, reward=e_count, loss="dpo",
               loss_kwargs=None, reference="copy", **train):
    """An online-pairs run through the loop, wired as run.py will wire it."""
    model, tokenizer, encoder, prompts = load(tiny)
    settings = settings or rl()
    config = train_settings(tmp_path, name, loss=loss, **train)
    entry = get_loss(loss)
    forward = CompletionLogps(model)
    ref = CopyReference(model) if reference == "copy" and entry.contract.needs_ref else None
    phase = OnlinePairsPhase(settings, entry, loss_kwargs or {}, prompts, model, forward, ref, tokenizer,
                             pad_id_of(tokenizer), encoder.eos_id, seed=config.seed, rewards=[("e_count", reward)])
    order = ExampleOrder(len(prompts), config.batch_size, config.seed)
    trainer = Trainer(config, forward, phase, order, Path(config.output_dir), rollout=phase,
                      console=Console(quiet=True))
    trainer.fit()
    return trainer, phase, model


def records(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if json.loads(line)["split"] == "train"]


# ---- pairs in closed form -----------------------------------------------------------------------


def test_best_worst_pairs_the_first_argmax_with_the_first_argmin():
    assert rank_pairs([1.0, 3.0, 0.5, 3.0, 0.5], "best_worst") == ([(1, 2)], "paired")
    assert rank_pairs([2.0, 2.0, 2.0], "best_worst") == ([], "tied")
    assert rank_pairs([None, 1.0, None], "best_worst") == ([], "too_few")
    assert rank_pairs([None, 1.0, math.nan, 0.0], "best_worst") == ([(1, 3)], "paired")  # unscorable left out
    assert rank_pairs([None, 5.0, 1.0], "best_worst") == ([(1, 2)], "paired")


def test_all_pairs_are_every_strictly_ordered_pair_and_ties_are_never_paired():
    pairs, status = rank_pairs([1.0, 3.0, 1.0, 2.0], "all")
    assert status == "paired"
    assert pairs == [(1, 0), (1, 2), (1, 3), (3, 0), (3, 2)]  # 4·3/2 = 6 orderable, minus the 1 tie
    distinct = [0.3, 0.1, 0.7, 0.2, 0.9]
    assert len(rank_pairs(distinct, "all")[0]) == 5 * 4 // 2
    assert all(distinct[w] > distinct[lo] for w, lo in rank_pairs(distinct, "all")[0])
    assert rank_pairs([None, 2.0, 2.0, None], "all") == ([], "tied")
    with pytest.raises(ConfigError, match="rl.pairs"):
        rank_pairs([1.0, 2.0], "best_of_n")


def test_a_cache_reference_is_refused_with_the_reason():
    with pytest.raises(ConfigError, match="sampled anew"):
        online_pairs_reference_mode("cache", False, get_loss("dpo"))
    assert online_pairs_reference_mode("auto", False, get_loss("dpo")) == "copy"
    assert online_pairs_reference_mode("auto", True, get_loss("dpo")) == "adapters"
    assert online_pairs_reference_mode("auto", False, get_loss("simpo")) == "none"


def test_a_loss_on_other_data_is_refused(tiny):
    model, tokenizer, encoder, prompts = load(tiny)
    with pytest.raises(ConfigError, match="paired data"):
        OnlinePairsPhase(rl(), get_loss("grpo"), {}, prompts, model, CompletionLogps(model), None, tokenizer, 0,
                         encoder.eos_id, seed=0, rewards=[("e_count", e_count)])


# ---- the loop -----------------------------------------------------------------------------------


def test_first_step_dpo_loss_is_log_2_and_pairs_are_counted(tiny, tmp_path, one_thread):
    """Policy = reference at the first step: every pair's DPO loss is log 2. The logged pair
    counts agree with the ranking of the logged rewards (best-vs-worst: at most one per prompt)."""
    trainer, phase, _ = online_run(tiny, tmp_path, "log2", max_steps=2)
    lines = records(Path(trainer.run_dir))
    assert lines[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert lines[1]["loss"] != pytest.approx(math.log(2), abs=1e-4)  # the second round's policy has moved
    for line in lines:
        assert 0 < line["pairs"] <= 4
        assert line["pairs/per_prompt"] + line["pairs/tied_prompts"] + line["pairs/unrankable_prompts"] == \
            pytest.approx(1.0)
        assert line["pairs/reward_margin"] > 0
        assert {"reward", "reward_std", "rewards/unscorable", "rewards/e_count/mean", "rewards/margins",
                "rewards/accuracies", "ranking/accuracy"} <= set(line)
    assert all(p.chosen_reward > p.rejected_reward for p in phase.items if not math.isnan(p.chosen_reward))


def test_all_pairs_train_every_ordered_pair(tiny, tmp_path, one_thread):
    trainer, phase, _ = online_run(tiny, tmp_path, "all", settings=rl(pairs="all"), max_steps=1)
    line = records(Path(trainer.run_dir))[0]
    real = [p for p in phase.items if not math.isnan(p.chosen_reward)]
    assert line["pairs"] == len(real) and len(real) > 4  # more than one pair for some prompt
    assert line["loss"] == pytest.approx(math.log(2), abs=1e-6)


def test_unscorable_completions_are_counted_and_never_paired(tiny, tmp_path, one_thread):
    trainer, phase, _ = online_run(tiny, tmp_path, "odd", reward=odd_none, max_steps=1)
    line = records(Path(trainer.run_dir))[0]
    assert 0 < line["rewards/unscorable"] < 1
    real = [p for p in phase.items if not math.isnan(p.chosen_reward)]
    assert real and line["pairs"] == len(real)
    tokenizer = load_tokenizer(tiny)
    for p in real:
        for ids in (p.chosen_ids, p.rejected_ids):
            assert len(tokenizer.decode(list(ids), skip_special_tokens=True).strip()) % 2 == 0


def test_a_nan_reward_is_an_error_not_an_unscorable_completion(tiny, tmp_path, one_thread):
    with pytest.raises(AlignlabError, match="returned nan"):
        online_run(tiny, tmp_path, "nan", reward=lambda p, c, cols: [math.nan] * len(c), max_steps=1)


def test_online_dpo_raises_the_reward(tiny, tmp_path, one_thread):
    """30 rounds of best-vs-worst DPO on a reward counting the letter e (lr 1e-2, β = 0.1): the
    mean reward of the last five rounds is well above the first five's."""
    trainer, _, _ = online_run(tiny, tmp_path, "learn", max_steps=30)
    lines = records(Path(trainer.run_dir))
    first = sum(r["reward"] for r in lines[:5]) / 5
    last = sum(r["reward"] for r in lines[-5:]) / 5
    assert last > first + 2, (first, last, [round(r["reward"], 2) for r in lines])


def test_accumulation_split_does_not_change_the_gradient(tiny, tmp_path, monkeypatch, one_thread):
    """4 prompts × 1 micro-batch against 1 prompt × 4: the same samples (each prompt's stream is its
    place in the step) and the same gradient at every step (1e-6), as the denominator is the
    step's number of pairs, not each micro-batch's; a micro-batch with no pair still runs."""
    original = torch.optim.AdamW.step
    grads: dict[str, list[list[torch.Tensor]]] = {}
    for name, batch, accum in (("one", 4, 1), ("four", 1, 4)):
        steps: list[list[torch.Tensor]] = []

        def capture(self, *args, _steps=steps, **kwargs):
            _steps.append([p.grad.clone() for g in self.param_groups for p in g["params"]])
            return original(self, *args, **kwargs)

        monkeypatch.setattr(torch.optim.AdamW, "step", capture)
        trainer, _, _ = online_run(tiny, tmp_path, f"split-{name}", batch_size=batch, grad_accum=accum,
                                   max_steps=3, reward=half_tied)
        grads[name] = steps
        tied = [r["pairs/tied_prompts"] for r in records(Path(trainer.run_dir))]
        assert any(t > 0 for t in tied)  # some micro-batches of the 4 × 1 split have no pair
    assert len(grads["one"]) == 3
    for step_one, step_four in zip(grads["one"], grads["four"], strict=True):
        assert any(float(g.abs().max()) > 0 for g in step_one)
        for g1, g4 in zip(step_one, step_four, strict=True):
            torch.testing.assert_close(g1, g4, atol=1e-6, rtol=0)


def test_iterative_dpo_reuses_a_round_and_resumes_it_exactly(tiny, tmp_path, one_thread):
    """num_iterations = 2: a round's pairs serve two steps (samples, hence pair metrics, only at
    the round's first step) and a run stopped in the middle of a round resumes to the same weights."""
    settings = rl(num_iterations=2)
    whole, _, model = online_run(tiny, tmp_path, "whole", settings=settings, max_steps=4)
    lines = records(Path(whole.run_dir))
    assert "pairs" in lines[0] and "pairs" not in lines[1] and "pairs" in lines[2]
    online_run(tiny, tmp_path, "half", settings=settings, max_steps=3)
    # Resume "half" (stopped after step 3, inside the second round) to 4 steps.
    resumed, _, resumed_model = online_run(tiny, tmp_path, "half", settings=settings, max_steps=4)
    assert resumed.step == 4
    want = dict(model.named_parameters())
    for n, p in resumed_model.named_parameters():
        torch.testing.assert_close(p, want[n], atol=1e-6, rtol=0)


# ---- OPA-DPO ------------------------------------------------------------------------------------


def shout(prompt, completion, **columns):
    """A reviser: a fixed correction of every sample (the tiny model never writes it)."""
    return f"The answer is {columns.get('answer', 'yes')}."


def logp(model, rows):
    batch = collate_sequences(rows, 0)
    return frozen_logps(model, batch).sum


def test_opa_alignment_and_its_on_policy_reference(tiny, tmp_path, one_thread):
    """OPA alignment raises the log-likelihood of the revisions (π_OPA(y_r) > π_0(y_r)); DPO then
    starts from π_OPA with π_OPA as reference, so its first loss is log 2 and the reference holds
    π_OPA's weights (not π_0's)."""
    model, tokenizer, encoder, prompts = load(tiny)
    prompts = prompts[:8]
    settings = rl(num_generations=2)
    pad_id = pad_id_of(tokenizer)
    data = opa_data(prompts, model, tokenizer, encoder, shout, settings, seed=0, pad_id=pad_id,
                    ground_truth_column="answer")
    assert data.stats["revised"] == 16 and data.stats["ground_truth"] == 8
    assert len(data.pairs) == 32 and len(data.targets) == 24
    revised = [(t.prompt_ids, t.completion_ids) for t in data.targets if t.source == "revised"]
    before = logp(model, revised)
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    forward = CompletionLogps(model)
    opa_align(data, forward, train_settings(tmp_path, "opa", loss="nll", lr=1e-2, max_steps=6, batch_size=8),
              tmp_path / "opa", pad_id)
    after = logp(model, revised)
    assert bool((after > before).all()), (before, after)
    aligned = {n: p.detach().clone() for n, p in model.named_parameters()}
    _, reference = opa_dpo(data, model, forward, train_settings(tmp_path, "dpo", lr=1e-3, max_steps=2), tmp_path / "dpo",
                           pad_id)
    first = records(tmp_path / "dpo")[0]
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-6)
    ref_weights = dict(reference.model.named_parameters())
    for n, p in aligned.items():
        torch.testing.assert_close(ref_weights[n], p, atol=0, rtol=0)
    assert any(not torch.equal(ref_weights[n], initial[n]) for n in initial)
    torch.testing.assert_close(logp(reference.model, revised), after, atol=1e-5, rtol=0)


def test_run_opa_dpo_end_to_end_with_a_named_reviser(tiny, tmp_path, monkeypatch, one_thread):
    (tmp_path / "my_reviser.py").write_text(
        "def revise(prompt, completion, **columns):\n"
        "    return None if columns.get('answer') == '42' else completion + ' ' + columns.get('answer', '')\n",
        encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    model, tokenizer, encoder, prompts = load(tiny)
    prompts = prompts[:6]
    data, aligned, last, _ = run_opa_dpo(
        prompts, model, CompletionLogps(model), tokenizer, encoder, "my_reviser:revise", rl(num_generations=2),
        train_settings(tmp_path, "sft", loss="nll", max_steps=2), train_settings(tmp_path, "dpo", max_steps=2),
        tmp_path / "opa-dpo", pad_id=pad_id_of(tokenizer))
    assert data.stats["dropped"] == 2  # "What is 18 plus 24?" (answer 42): both samples' revisions dropped
    assert math.isfinite(aligned["loss"]) and math.isfinite(last["loss"])
    assert (tmp_path / "opa-dpo" / "opa" / "metrics.jsonl").is_file()
    assert (tmp_path / "opa-dpo" / "dpo" / "metrics.jsonl").is_file()
