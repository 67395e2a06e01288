"""Prompts to generate from: every prompt-bearing field and format, extra fields as columns,
and a row without a prompt or an unreadable line named by file and line.

Example: ``pytest tests/data/test_prompts.py``
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignlab.data.prompts import load_prompts
from alignlab.errors import DataError


def write(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_each_prompt_field_and_the_columns(tmp_path: Path) -> None:
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]
    rows = [
        {"prompt": "What is 6 times 7?", "answer": "42"},
        {"messages": [*chat, {"role": "assistant", "content": "Hello."}], "answer": ["1", "one"]},
        {"question": "2 + 2?", "answer": 4, "meta": {"nested": True}},
        {"instruction": "Translate.", "input": "bonjour", "id": 7},
        {"query": "Capital of France?"},
        {"prompt": "P", "chosen": "good", "rejected": "bad", "margin": 1.5},
        {"chosen": "\n\nHuman: Why?\n\nAssistant: Because.", "rejected": "\n\nHuman: Why?\n\nAssistant: No."},
    ]
    prompts = load_prompts(write(tmp_path / "p.jsonl", rows))
    assert prompts.texts[0] == "What is 6 times 7?"
    assert [dict(m) for m in prompts.texts[1]] == chat  # the assistant's reply is not part of the prompt
    assert prompts.texts[2:5] == ("2 + 2?", "Translate.\n\nbonjour", "Capital of France?")
    assert prompts.texts[5] == "P"
    assert prompts.texts[6] == "\n\nHuman: Why?\n\nAssistant:"  # the HH format's shared prefix
    assert prompts.columns["answer"] == ("42", ["1", "one"], 4, None, None, None, None)
    assert prompts.columns["id"] == (None, None, None, 7, None, None, None)
    assert "meta" not in prompts.columns  # a nested object is no reward column
    assert [str(w) for w in prompts.locations][:2] == [f"{tmp_path / 'p.jsonl'}:1", f"{tmp_path / 'p.jsonl'}:2"]
    assert len(load_prompts(tmp_path / "p.jsonl", limit=2)) == 2


def test_a_named_prompt_field_and_csv(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("text,answer\nWhat is 1+1?,2\n", encoding="utf-8")
    prompts = load_prompts(path, prompt_field="text")
    assert prompts.texts == ("What is 1+1?",) and prompts.columns["answer"] == ("2",)
    with pytest.raises(DataError, match=r"p.csv:2 \(row 0\), field 'body': missing field"):
        load_prompts(path, prompt_field="body")


@pytest.mark.parametrize("lines, message", [
    (['{"prompt": "ok"}', '{"text": "no prompt"}'], r"q.jsonl:2: no prompt among the fields \['text'\]"),
    (['{"prompt": "ok"}', '{"prompt": 3}'], r"q.jsonl:2, field 'prompt'"),
    (['{"prompt": "ok"}', '["a list"]'], r"q.jsonl:2: a row must be an object"),
    (['{"prompt": "ok"}', '{"prompt": "x",'], r"q.jsonl:2"),
    (['{"messages": [{"role": "assistant", "content": "only me"}]}'], r"q.jsonl:1, field 'messages'"),
])
def test_bad_rows_name_file_line_and_field(tmp_path: Path, lines: list[str], message: str) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=message):
        load_prompts(path)


def test_an_empty_file_has_no_prompts(tmp_path: Path) -> None:
    (tmp_path / "e.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="no prompts"):
        load_prompts(tmp_path / "e.jsonl")
