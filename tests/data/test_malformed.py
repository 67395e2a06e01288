"""Malformed inputs: each must raise a DataError naming the file, the line (or row) and field.

Every case is a file written by the test, and the exact location, field and reason key the loader
must report. Then: skipping bad rows with ``on_error="skip"``, and the content policies for empty
completions and identical pairs.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from alignlab.data import load_records
from alignlab.errors import DataError

# ---- helpers -----------------------------------------------------------------------------------

GOOD = {"prompt": "2+2?", "chosen": "4", "rejected": "5"}


def jsonl(*rows: Any) -> str:
    """JSONL text; a ``str`` row is written verbatim (for lines that are not valid JSON)."""
    return "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows)


def good_then(bad: Any, before: int = 1) -> str:
    """``before`` good lines, then the bad one: the bad row sits on line ``before + 1``."""
    return jsonl(*[GOOD] * before, bad)


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def pandalm(**changes: Any) -> dict[str, Any]:
    row = {
        "idx": 0,
        "instruction": "Add.",
        "input": "2 and 3",
        "response1": "5",
        "response2": "6",
        "annotator1": 1,
        "annotator2": 1,
        "annotator3": 2,
    }
    return {**row, **changes}


def finegrained(**changes: Any) -> dict[str, Any]:
    row = {
        "question": "Who wrote Hamlet?",
        "prediction 1": "Shakespeare.",
        "prediction 2": "Marlowe.",
        "prediction 3": "Bacon.",
        "prediction 4": "Nobody.",
        "preference": [1, 1, 1, 1, 1, 1],
    }
    return {**row, **changes}


def judge_prompt(instruction: str, response: str) -> str:
    return (
        f"###The instruction to evaluate:\n{instruction}\n\n###Response to evaluate:\n{response}"
        "\n\n###Score Rubrics:\n[Helpful?]\n"
    )


@dataclass(frozen=True)
class Case:
    """One malformed input and the exact error it must give."""

    id: str
    content: str | bytes | list[dict[str, Any]] | None
    """File text or bytes; a list of rows for .parquet; None: the file does not exist."""
    line: int | None
    field: str | None
    reason: str | re.Pattern[str]
    hint: str | None = None
    """A substring the "hint:" line must contain, where the error should carry a hint."""
    suffix: str = ".jsonl"
    row: int | None = None
    options: dict[str, Any] = field(default_factory=dict)


def bad_pair(**changes: Any) -> str:
    """A good line, then GOOD with ``changes`` on line 2."""
    return good_then({**GOOD, **changes})


VOTE_ORDER = "1v2 1v3 1v4 2v3 2v4 3v4"
TRUNCATED_ARRAY = (
    '[\n  {"prompt": "2+2?", "chosen": "4", "rejected": "5"},\n  {"prompt": "3+3?", "chosen"'
)
NOT_OBJECT_ARRAY = '[\n  {"prompt": "2+2?", "chosen": "4", "rejected": "5"},\n  "2+2? 4 5"\n]\n'
LATIN1_LINE = b'{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}\n'
MAPPING = {"prompt": "question", "chosen": "response_a", "rejected": "response_b"}
BOT_TURN = [user("hi"), {"role": "bot", "content": "x"}, user("ok")]
LLMBAR_3 = {"input": "Capital?", "output_1": "Paris", "output_2": "Lyon", "label": 3}
UNWRAPPED = {"chosen_instruction": "Rate this.", "rejected_instruction": judge_prompt("a", "b")}
HH_NO_TURN = {"chosen": "\n\nHuman: Hi", "rejected": "\n\nHuman: Ho"}

# fmt: off
CASES = [
    # ---- unreadable files and lines
    Case("malformed_json_line", jsonl(GOOD, GOOD, '{"prompt": "3+3?", "chosen": "6",', GOOD),
         3, None, "malformed JSON", hint="complete JSON object"),
    Case("truncated_json_array", TRUNCATED_ARRAY,
         3, None, "malformed JSON", hint="json.tool", suffix=".json"),
    Case("unclosed_json_object", "{", 1, None, "malformed JSON", suffix=".json"),
    Case("non_utf8_line_2", jsonl(GOOD).encode() + LATIN1_LINE,
         2, None, "non-UTF-8 bytes", hint="iconv"),
    Case("non_utf8_csv_line_3", b"prompt,chosen,rejected\n2+2?,4,5\ncaf\xe9,a,b\n",
         3, None, "non-UTF-8 bytes", hint="iconv", suffix=".csv"),
    # file-level errors have stable reasons too
    Case("not_gzip", jsonl(GOOD), None, None, "not gzip", hint="decompress", suffix=".jsonl.gz"),
    Case("unknown_suffix", jsonl(GOOD), None, None, "unknown file type",
         hint=".jsonl", suffix=".txt"),
    Case("missing_file", None, None, None, "file not found", hint="check the path"),
    Case("csv_too_many_cells", "prompt,chosen,rejected\n2+2?,4,5\n3+3?,6,7,8\n",
         3, None, "malformed CSV", hint="quote", suffix=".csv", row=1),
    # ---- rows that are not rows
    Case("row_is_list", good_then(["2+2?", "4", "5"]), 2, None, "row not an object"),
    Case("json_element_not_object", NOT_OBJECT_ARRAY,
         3, None, "row not an object", suffix=".json", row=1),
    Case("unknown_columns", good_then({"question": "2+2?", "answer": "4"}),
         2, None, "unknown format", hint="mapping"),
    # prompt and chosen without rejected are a near miss of the preference format: the
    # missing column is named
    Case("missing_rejected", good_then({"prompt": "2+2?", "chosen": "4"}),
         2, "rejected", "missing field", hint="mapping"),
    Case("unrelated_columns", good_then({"question": "2+2?", "answer": "4"}),
         2, None, "unknown format", hint="known formats: "),
    Case("missing_rejected_forced_format", good_then({"prompt": "2+2?", "chosen": "4"}),
         2, "rejected", "missing field", options={"format": "preference"}),
    Case("mapping_to_missing_column", jsonl({"question": "2+2?", "response_a": "4"}),
         1, "response_b", "missing field", hint="the row has columns",
         options={"mapping": MAPPING}),
    # ---- texts
    Case("chosen_is_number", bad_pair(chosen=4), 2, "chosen", "mistyped field"),
    Case("rejected_is_null", bad_pair(rejected=None), 2, "rejected", "missing field"),
    Case("empty_prompt", bad_pair(prompt=""),
         2, "prompt", "empty text", hint="fill in the text"),
    Case("whitespace_prompt", bad_pair(prompt=" \n\t "),
         2, "prompt", "empty text", hint="fill in the text"),
    Case("empty_message_list", bad_pair(prompt=[]),
         2, "prompt", "empty text", hint="at least one message"),
    Case("message_without_content", bad_pair(prompt=[{"role": "user"}]),
         2, "prompt[0]", "invalid chat message", hint='{"role": "user", "content": "..."}'),
    Case("chat_role_bot", bad_pair(prompt=BOT_TURN),
         2, "prompt[1].role", "invalid chat role", hint="system, user, assistant, tool"),
    Case("content_not_string", bad_pair(prompt=[{"role": "user", "content": ["hi"]}]),
         2, "prompt[0].content", "mistyped field", hint="multimodal"),
    Case("chat_prompt_ends_with_assistant", bad_pair(prompt=[user("hi"), assistant("yo")]),
         2, "prompt", "prompt ends with assistant turn", hint="move the final assistant turn"),
    Case("chat_completion_with_user_turn", bad_pair(prompt=[user("hi")], chosen=[user("hello")]),
         2, "chosen", "invalid chat role", hint="put user/system turns in the prompt"),
    Case("string_prompt_chat_completion", bad_pair(rejected=[assistant("5")]),
         2, "rejected", "mixed string and chat", hint="give the prompt as messages"),
    Case("implicit_mixed_string_and_chat", jsonl({"chosen": "hi there", "rejected": [user("hi")]}),
         1, "chosen", "mixed string and chat"),
    Case("implicit_no_shared_prompt", jsonl({"chosen": "Yes.", "rejected": "No."}),
         1, "chosen", "missing field", hint="add a 'prompt' column"),
    Case("identical_chosen_rejected", good_then({**GOOD, "rejected": "4"}, before=2),
         3, "rejected", "identical chosen and rejected", hint="identical_pairs='skip'"),
    Case("sft_messages_without_assistant_end", jsonl({"messages": [user("hi")]}),
         1, "messages", "no completion"),
    Case("judgment_empty_string", jsonl({"instruction": "Add.", "response": "5", "judgment": " "}),
         1, "judgment", "empty text", hint="use null"),
    # ---- labels and numbers
    Case("label_int", jsonl({"prompt": "2+2?", "completion": "4", "label": 1}),
         1, "label", "label not boolean", hint="use true"),
    Case("label_yes", jsonl({"prompt": "2+2?", "completion": "4", "label": "yes"}),
         1, "label", "label not boolean", hint="use true"),
    Case("rater_share_above_1", bad_pair(rater_share=1.5), 2, "rater_share", "number out of range"),
    Case("margin_nan", good_then(json.dumps(GOOD)[:-1] + ', "margin": NaN}'),
         2, "margin", "number out of range"),
    Case("margin_text", bad_pair(margin="big"), 2, "margin", "mistyped field"),
    Case("negative_token_weight", bad_pair(chosen_token_weights=[0.5, -1.0]),
         2, "chosen_token_weights[1]", "number out of range"),
    Case("rank_zero", jsonl({"prompt": "p", "responses": ["a", "b"], "ranks": [1, 0]}),
         1, "ranks[1]", "mistyped field"),
    Case("scores_length_mismatch", jsonl({"prompt": "p", "responses": ["a", "b"], "scores": [1]}),
         1, "scores", "length mismatch"),
    Case("one_response", jsonl({"prompt": "p", "responses": ["a"], "scores": [1]}),
         1, "responses", "too few responses"),
    # ---- published formats
    Case("pandalm_vote_3", jsonl(pandalm(), pandalm(annotator2=3)),
         2, "annotator2", "invalid label"),
    Case("finegrained_five_votes", jsonl(finegrained(preference=[1, 1, 1, 1, 1])),
         1, "preference", "mistyped field", hint=VOTE_ORDER),
    Case("finegrained_vote_3", jsonl(finegrained(preference=[1, 1, 3, 1, 1, 1])),
         1, "preference", "invalid label"),
    Case("llmbar_label_3", jsonl(LLMBAR_3),
         1, "label", "invalid label", hint="1 = output_1 is better"),
    Case("hh_without_assistant_turn", jsonl(HH_NO_TURN), 1, "chosen", "malformed transcript"),
    Case("prometheus_without_markers", jsonl(UNWRAPPED),
         1, "chosen_instruction", "malformed judge prompt"),
    Case("prometheus_instructions_differ",
         jsonl({"chosen_instruction": judge_prompt("Hi", "Hello"),
                "rejected_instruction": judge_prompt("Hey", "Go away")}),
         1, "rejected_instruction", "prompt mismatch"),
    # ---- parquet: no lines, the row index locates it
    Case("parquet_empty_prompt", [GOOD, GOOD, {**GOOD, "prompt": " "}],
         None, "prompt", "empty text", suffix=".parquet", row=2),
]
# fmt: on


def write_case(path: Path, case: Case) -> None:
    content = case.content
    if content is None:
        return
    if isinstance(content, list):
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(content), path)
        return
    path.write_bytes(content.encode() if isinstance(content, str) else content)


def test_corpus_is_large_and_distinct():
    assert len(CASES) >= 25
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_malformed_input_raises_located_data_error(tmp_path, case):
    path = tmp_path / f"bad{case.suffix}"
    write_case(path, case)
    with pytest.raises(DataError) as info:
        load_records(path, **case.options)
    error = info.value
    assert error.file == str(path)
    assert (error.line, error.row, error.field) == (case.line, case.row, case.field)
    if isinstance(case.reason, re.Pattern):
        assert case.reason.fullmatch(error.reason), error.reason
    else:
        assert error.reason == case.reason
    # the message starts with where the problem is
    assert str(error).startswith(error.where + ": ")
    if case.hint is not None:
        hint_lines = [line for line in str(error).splitlines() if line.strip().startswith("hint:")]
        assert len(hint_lines) == 1 and case.hint in hint_lines[0], str(error)


# ---- skipping bad rows -------------------------------------------------------------------------


def test_skip_keeps_good_rows_and_counts_each_bad_row_by_reason(tmp_path):
    lines = [GOOD] * 10
    lines[2] = '{"prompt": "2+2?", "chosen": "4"'  # line 3: malformed JSON
    lines[5] = {**GOOD, "prompt": ""}  # line 6: empty text
    lines[8] = {**GOOD, "chosen": 4}  # line 9: mistyped field
    for i in (0, 1, 3, 4, 6, 7, 9):
        lines[i] = {**GOOD, "id": f"ok{i + 1}"}
    path = tmp_path / "mixed.jsonl"
    path.write_text(jsonl(*lines), encoding="utf-8")

    result = load_records(path, on_error="skip")
    assert [r.id for r in result.records] == ["ok1", "ok2", "ok4", "ok5", "ok7", "ok8", "ok10"]
    report = result.report
    assert report.skipped == {"malformed JSON": 1, "empty text": 1, "mistyped field": 1}
    assert (report.rows, report.records) == (10, 7)
    assert len(report.examples["malformed JSON"]) == 1
    assert report.examples["malformed JSON"][0].startswith(f"{path}:3: malformed JSON")
    assert report.examples["empty text"] == [f"{path}:6, field 'prompt': empty text"]
    assert report.examples["mistyped field"][0].startswith(f"{path}:9, field 'chosen': ")
    assert not report.clean

    with pytest.raises(DataError) as info:
        load_records(path)  # the default raises at the first bad row
    assert info.value.line == 3


# ---- content policies --------------------------------------------------------------------------

EMPTY_COMPLETION = jsonl(
    GOOD, {**GOOD, "chosen": ""}, {"prompt": "p", "completion": " ", "label": True}
)


def test_empty_completions_are_kept_and_reported_by_default(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text(EMPTY_COMPLETION, encoding="utf-8")
    result = load_records(path)
    assert len(result.records) == 3
    assert result.records[1].chosen == ""
    assert result.report.warnings == {"empty completion": 2}
    assert result.report.examples["empty completion"] == [
        f"{path}:2, field 'chosen': empty completion",
        f"{path}:3, field 'completion': empty completion",
    ]


def test_empty_completions_error_policy_raises_at_first(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text(EMPTY_COMPLETION, encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_records(path, empty_completions="error")
    error = info.value
    assert (error.line, error.field, error.reason) == (2, "chosen", "empty completion")
    assert "hint: " in str(error)


def test_empty_completions_skip_policy_drops_and_counts(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text(EMPTY_COMPLETION, encoding="utf-8")
    result = load_records(path, empty_completions="skip")
    assert [(r.prompt, r.chosen) for r in result.records] == [("2+2?", "4")]
    assert result.report.skipped == {"empty completion": 2}
    assert result.report.warnings == {}


IDENTICAL = jsonl(
    GOOD, {**GOOD, "rejected": "4"}, {"prompt": "3+3?", "chosen": "6", "rejected": "6"}
)


@pytest.mark.parametrize(
    ("policy", "kept", "skipped", "warnings"),
    [
        ("skip", 1, {"identical chosen and rejected": 2}, {}),
        ("keep", 3, {}, {"identical chosen and rejected": 2}),
    ],
)
def test_identical_pairs_policy(tmp_path, policy, kept, skipped, warnings):
    path = tmp_path / "same.jsonl"
    path.write_text(IDENTICAL, encoding="utf-8")
    result = load_records(path, identical_pairs=policy)
    assert len(result.records) == kept
    assert (result.report.skipped, result.report.warnings) == (skipped, warnings)


def test_identical_pairs_are_kept_and_reported_in_published_benchmarks(tmp_path):
    path = tmp_path / "llmbar.jsonl"
    rows = [{"input": "Capital?", "output_1": "Paris", "output_2": "Paris", "label": 1}]
    path.write_text(jsonl(*rows), encoding="utf-8")
    result = load_records(path)
    assert [(r.chosen, r.rejected) for r in result.records] == [("Paris", "Paris")]
    assert result.report.warnings == {"identical chosen and rejected": 1}
    with pytest.raises(DataError) as info:
        load_records(path, identical_pairs="error")
    assert (info.value.line, info.value.field) == (1, "rejected")


# ---- regressions of bugs found by these tests --------------------------------------------------------


@pytest.mark.parametrize("line", ["5", "null", '"prompt chosen"'])
def test_forced_format_non_object_row_is_a_data_error(tmp_path, line):
    path = tmp_path / "rows.jsonl"
    path.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_records(path, format="preference")
    assert (info.value.line, info.value.field, info.value.reason) == (1, None, "row not an object")


def test_wrapped_json_array_after_a_bracket_in_a_string(tmp_path):
    path = tmp_path / "wrapped.json"
    path.write_text(json.dumps({"note": "see [1]", "data": [GOOD, GOOD]}), encoding="utf-8")
    result = load_records(path)
    assert (result.report.rows, len(result.records)) == (2, 2)


def test_csv_line_numbers_count_blank_lines(tmp_path):
    path = tmp_path / "blank.csv"
    path.write_text("prompt,chosen,rejected\n2+2?,4,5\n\n3+3?,6,6\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_records(path)
    assert (info.value.line, info.value.row, info.value.field) == (4, 1, "rejected")
