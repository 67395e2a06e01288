"""`alignlab data tour`: the data pipeline end to end on embedded data, offline, in seconds.

Example: ``run_demo(Console(), out="runs/data-tour")``

Embedded preference data in three formats, a tokenizer trained on the spot, validation with
located errors, the data doctor, exact prompt/completion boundaries, and a few DPO steps.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from alignlab.config import load_config
from alignlab.data.convert import write_jsonl
from alignlab.data.load import load_records
from alignlab.data.records import PreferencePair, is_chat
from alignlab.data.tokenize import RecordTokenizer, TokenizeOptions
from alignlab.errors import DataError
from alignlab.eval.doctor import check_data
from alignlab.eval.doctor_view import render
from alignlab.models.tiny import init_tiny_model
from alignlab.models.tokenizers import train_bpe_tokenizer
from alignlab.train.run import run_training

CAPITALS = {"France": "Paris", "Japan": "Tokyo", "Kenya": "Nairobi", "Peru": "Lima", "Norway": "Oslo",
            "Egypt": "Cairo", "Canada": "Ottawa", "Chile": "Santiago"}


def demo_rows(seed: int = 0) -> dict[str, list[dict]]:
    """Embedded data: arithmetic and capitals, as TRL standard, conversational and unpaired rows."""
    rng = random.Random(seed)
    standard, chats, unpaired = [], [], []
    for _ in range(40):
        a, b = rng.randint(2, 49), rng.randint(2, 49)
        wrong = a + b + rng.choice([-2, -1, 1, 10])
        standard.append({"prompt": f"What is {a} plus {b}?", "chosen": f"{a} plus {b} is {a + b}.",
                         "rejected": f"{a} plus {b} is {wrong}, I think."})
    for country, city in CAPITALS.items():
        other = rng.choice([c for c in CAPITALS.values() if c != city])
        prompt = [{"role": "system", "content": "Answer briefly."},
                  {"role": "user", "content": f"What is the capital of {country}?"}]
        chats.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": f"{city}."}],
                      "rejected": [{"role": "assistant", "content": f"It is {other}."}]})
        unpaired.append({"prompt": prompt[1:], "completion": f"The capital is {city}.", "label": True})
        unpaired.append({"prompt": prompt[1:], "completion": f"The capital is {other}.", "label": False})
    return {"pairs.jsonl": standard, "chat_pairs.jsonl": chats, "feedback.jsonl": unpaired}


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _broken_copy(path: Path, rows: list[dict]) -> None:
    """The same pairs with three typical mistakes, to show located errors and counted skips."""
    lines = [json.dumps(r) for r in rows[:10]]
    lines[3] = lines[3][:-5]  # a line cut off mid-write
    lines[5] = json.dumps({**rows[5], "chosen": ""})
    lines[7] = json.dumps({**rows[7], "rejected": rows[7]["chosen"]})
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def run_demo(console: Console, out: str | Path = "runs/demo") -> int:
    run = Path(out)
    data_dir = run / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    rows = demo_rows()
    for name, file_rows in rows.items():
        _write(data_dir / name, file_rows)
    console.rule("[bold]1. embedded data, read as-is")
    records = {}
    for name in rows:
        result = load_records(data_dir / name)
        records[name] = result.records
        console.print(f"{name}: {result.report.rows} rows → {result.report.records} "
                      f"{type(result.records[0]).__name__} records (format: {next(iter(result.report.formats))})")

    console.rule("[bold]2. bad rows are named, never silently lost")
    broken = data_dir / "broken.jsonl"
    _broken_copy(broken, rows["pairs.jsonl"])
    try:
        load_records(broken)
    except DataError as error:
        console.print(f"[red]DataError[/] {escape(str(error))}", highlight=False)
    skipped = load_records(broken, on_error="skip", empty_completions="skip")
    console.print(f'on_error="skip": {skipped.report.records} of {skipped.report.rows} rows kept; skipped by reason: '
                  f"{dict(skipped.report.skipped)}")

    console.rule("[bold]3. a byte-level BPE tokenizer trained here (no download)")
    texts = [json.dumps(r) for file_rows in rows.values() for r in file_rows]
    tokenizer = train_bpe_tokenizer(texts, vocab_size=600, min_frequency=1)
    tokenizer.save_pretrained(run / "tokenizer")
    console.print(f"vocabulary {len(tokenizer)}, saved to {run / 'tokenizer'}")

    console.rule("[bold]4. exact prompt/completion boundaries, EOS exactly once")
    encoder = RecordTokenizer(tokenizer, TokenizeOptions(max_length=64))
    for name in ("pairs.jsonl", "chat_pairs.jsonl"):
        pair = records[name][0]
        assert isinstance(pair, PreferencePair)
        item = encoder(pair)
        prompt_view = tokenizer.decode(item.prompt_ids)
        kind = "chat" if is_chat(pair.prompt) else "string"
        console.print(f"[bold]{kind}[/] prompt  {len(item.prompt_ids)} tokens: {escape(repr(prompt_view))}")
        console.print(f"       chosen  {len(item.chosen_ids)} tokens: "
                      f"{escape(repr(tokenizer.decode(item.chosen_ids)))} "
                      f"(EOS count {item.chosen_ids.count(tokenizer.eos_token_id)})")

    console.rule("[bold]5. the data doctor")
    report = check_data(str(broken), tokenizer=tokenizer, max_length=24)
    render(report, console)

    console.rule("[bold]6. normalised output")
    every = [r for name in rows for r in records[name]]
    count = write_jsonl(every, run / "normalised.jsonl")

    console.rule("[bold]7. DPO on a tiny model (the training engine)")
    training = _train_tiny_dpo(run, data_dir / "pairs.jsonl", console)
    summary = {"records": count, "skipped_in_broken_copy": dict(skipped.report.skipped),
               "doctor_exit_code": report.exit_code, "dpo": training}
    (run / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    console.print(f"{count} records written to {run / 'normalised.jsonl'}; summary in {run / 'summary.json'}")
    return 0


def _train_tiny_dpo(run: Path, pairs: Path, console: Console) -> dict[str, float]:
    """A few DPO steps from a random tiny model: the loss starts at log 2 (policy = reference)
    and falls; the eval margins are measured against the untouched reference."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # weight-loading bars of a 100 kB model are noise here
    model_dir = init_tiny_model(run / "tiny-model", hidden_size=32, intermediate=64)
    shutil.rmtree(run / "dpo", ignore_errors=True)  # the demo starts fresh each time
    config = load_config(None, [f"data.path={pairs}", f"data.eval_path={pairs}", f"model.name_or_path={model_dir}",
                                f"train.output_dir={run / 'dpo'}", "train.loss=dpo", "train.lr=1e-3",
                                "train.batch_size=8", "train.max_steps=10", "train.max_grad_norm=null"])
    run_training(config, console)
    lines = [json.loads(x) for x in (run / "dpo" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    train = [x for x in lines if x["split"] == "train"]
    final = [x for x in lines if x["split"] == "eval"][-1]
    result = {"first_loss": train[0]["loss"], "last_loss": train[-1]["loss"],
              "eval_reward_accuracy": final["rewards/accuracies"], "eval_margin": final["rewards/margins"]}
    console.print(f"DPO loss {result['first_loss']:.4f} (log 2 = 0.6931) → {result['last_loss']:.4f}; "
                  f"implicit-reward accuracy {result['eval_reward_accuracy']:.0%}, "
                  f"mean margin {result['eval_margin']:+.3f}")
    return result
