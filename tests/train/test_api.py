"""`alignlab.train(...)` from Python: in-memory data (list of dicts, datasets.Dataset, records),
model and tokenizer objects, configs as objects, dicts or YAML, callbacks; early stopping and
keep_best; and the README's Python example run as a new user would, in a fresh interpreter.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from rich.console import Console

import alignlab
from alignlab.config import load_config
from alignlab.errors import AlignlabError, ConfigError, DataError
from alignlab.models.tiny import init_tiny_model

ROOT = Path(__file__).resolve().parents[2]
PAIRS = [json.loads(line) for line in (ROOT / "examples" / "data" / "pairs.jsonl").read_text().splitlines()]
EVAL = [json.loads(line) for line in (ROOT / "examples" / "data" / "pairs_eval.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return init_tiny_model(tmp_path_factory.mktemp("api") / "tiny", hidden_size=32, layers=2, heads=4, intermediate=64)


def objects(tiny: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny), AutoTokenizer.from_pretrained(tiny)


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []

    def on_step(self, trainer, record):
        self.events.append(("step", record["step"]))

    def on_evaluate(self, trainer, record):
        self.events.append(("evaluate", record["step"]))

    def on_save(self, trainer, path):
        self.events.append(("save", trainer.step))
        assert Path(path).is_dir()


def test_dpo_from_a_dataset_and_a_model_object_with_callbacks(tiny, tmp_path):
    import datasets

    model, tokenizer = objects(tiny)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    recorder = Recorder()
    config = {"train": {"loss": "dpo", "max_steps": 4, "batch_size": 4, "lr": 1e-3, "eval_every": 2,
                        "save_every": 2, "reference": "copy", "output_dir": str(tmp_path / "run")}}
    run = alignlab.train(config, train_data=datasets.Dataset.from_list(PAIRS), eval_data=EVAL, model=model,
                         tokenizer=tokenizer, callbacks=[recorder], console=Console(quiet=True))
    assert recorder.events == [("step", 1), ("step", 2), ("evaluate", 2), ("save", 2), ("step", 3), ("step", 4),
                               ("evaluate", 4), ("save", 4)]
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if r["split"] == "eval" and not r.get("final")] == [2, 4]
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters())  # the object itself trained
    assert (run / "model" / "model.safetensors").is_file()


def test_config_forms_and_overrides_agree(tiny, tmp_path):
    """A dict, a RunConfig and a YAML path (each with the same overrides) give the same weights."""
    from safetensors.torch import load_file

    base = {"data": {"path": str(ROOT / "examples" / "data" / "pairs.jsonl")}, "model": {"name_or_path": str(tiny)},
            "train": {"loss": "simpo", "loss_kwargs": {}, "batch_size": 4, "lr": 1e-3}}
    overrides = ["train.max_steps=2"]
    yaml_path = tmp_path / "run.yaml"
    import yaml

    yaml_path.write_text(yaml.safe_dump(base), encoding="utf-8")
    weights = []
    for k, form in enumerate([base, load_config(None, [f"data.path={base['data']['path']}", f"model.name_or_path={tiny}",
                                                      "train.loss=simpo", "train.loss_kwargs={}", "train.batch_size=4",
                                                      "train.lr=1e-3"]), yaml_path]):
        run = alignlab.train(form, overrides=[*overrides, f"train.output_dir={tmp_path / str(k)}"],
                             console=Console(quiet=True))
        assert json.loads((run / "summary.json").read_text())["steps"] == 2
        weights.append(load_file(run / "model" / "model.safetensors"))
    for other in weights[1:]:
        assert all(torch.equal(other[n], weights[0][n]) for n in weights[0])


def test_a_bad_row_in_memory_names_its_row(tiny, tmp_path):
    rows = [*PAIRS[:3], {"prompt": "no answers here"}, *PAIRS[3:]]
    with pytest.raises(DataError, match=r"train_data: row 4"):
        alignlab.train({"model": {"name_or_path": str(tiny)}, "train": {"output_dir": str(tmp_path / "bad")}},
                       train_data=rows, console=Console(quiet=True))
    with pytest.raises(ConfigError, match="data.path is not set"):
        alignlab.train({"model": {"name_or_path": str(tiny)}}, console=Console(quiet=True))


def test_records_and_prompt_rows_for_online_rl(tiny, tmp_path):
    from alignlab.data.records import PreferencePair

    records = [PreferencePair(r["prompt"], r["chosen"], r["rejected"]) for r in PAIRS]
    run = alignlab.train({"model": {"name_or_path": str(tiny)},
                          "train": {"loss": "simpo", "loss_kwargs": {}, "max_steps": 1, "batch_size": 4,
                                    "output_dir": str(tmp_path / "records")}},
                         train_data=records, console=Console(quiet=True))
    assert json.loads((run / "summary.json").read_text())["examples"] == len(records)
    prompts = [{"prompt": r["prompt"]} for r in PAIRS[:8]]
    run = alignlab.train({"model": {"name_or_path": str(tiny)},
                          "rl": {"num_generations": 2, "max_new_tokens": 4, "rewards": ["length_target(target=2)"]},
                          "train": {"loss": "grpo", "max_steps": 1, "batch_size": 2, "output_dir": str(tmp_path / "rl")}},
                         train_data=prompts, console=Console(quiet=True))
    assert json.loads((run / "summary.json").read_text())["steps"] == 1


def test_early_stopping_and_keep_best(tiny, tmp_path):
    """min_delta far above any change: the first evaluation is the best, the next ones are not
    improvements, so patience 2 stops the run at the third evaluation (step 3 of 10); the best
    model (step 1) is kept beside the last, and a resumed run stays stopped."""
    config = {"data": {"path": str(ROOT / "examples" / "data" / "pairs.jsonl"),
                       "eval_path": str(ROOT / "examples" / "data" / "pairs_eval.jsonl")},
              "model": {"name_or_path": str(tiny)},
              "train": {"loss": "dpo", "reference": "copy", "max_steps": 10, "batch_size": 4, "lr": 1e-3,
                        "eval_every": 1, "keep_best": True, "early_stopping_patience": 2,
                        "early_stopping_min_delta": 1e9, "output_dir": str(tmp_path / "early")}}
    run = alignlab.train(config, console=Console(quiet=True))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["best"] == {**summary["best"], "best_step": 1, "stale": 2, "stopped": True}
    best = json.loads((run / "best" / "best.json").read_text())
    assert best["step"] == 1 and best["metric"] == "loss"
    assert (run / "best" / "model.safetensors").is_file()
    again = alignlab.train(config, console=Console(quiet=True))
    assert json.loads((again / "summary.json").read_text())["steps"] == 3


def test_keep_best_without_evaluations_is_refused(tiny, tmp_path):
    with pytest.raises(ConfigError, match="keep_best compares evaluations"):
        alignlab.train({"data": {"path": str(ROOT / "examples" / "data" / "pairs.jsonl")},
                        "model": {"name_or_path": str(tiny)}, "train": {"keep_best": True}}, console=Console(quiet=True))
    with pytest.raises(AlignlabError, match="not among the eval metrics"):
        alignlab.train({"data": {"path": str(ROOT / "examples" / "data" / "pairs.jsonl"),
                                 "eval_path": str(ROOT / "examples" / "data" / "pairs_eval.jsonl")},
                        "model": {"name_or_path": str(tiny)},
                        "train": {"keep_best": True, "eval_every": 1, "max_steps": 1, "best_metric": "nope",
                                  "reference": "copy", "output_dir": str(tmp_path / "nope")}},
                       console=Console(quiet=True))


def test_the_readme_python_example_runs_in_a_fresh_interpreter(tmp_path):
    """The README's "Train from Python" block, pasted as is into a new interpreter, from a fresh directory."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Train from Python", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def test_fsdp_cpu_offload_is_refused_where_it_cannot_work(tiny, tmp_path):
    """FSDP2's CPU offload moves shards between an accelerator and the CPU: without FSDP, or on
    a CPU device, a clear error before anything loads (the GPU path is not testable here)."""
    base = {"data": {"path": str(ROOT / "examples" / "data" / "pairs.jsonl")}, "model": {"name_or_path": str(tiny)}}
    with pytest.raises(ConfigError, match="set train.distributed=fsdp"):
        alignlab.train({**base, "train": {"fsdp_cpu_offload": True}}, console=Console(quiet=True))
    with pytest.raises(ConfigError, match="needs GPUs"):
        alignlab.train({**base, "train": {"fsdp_cpu_offload": True, "distributed": "fsdp", "device": "cpu"}},
                       console=Console(quiet=True))
