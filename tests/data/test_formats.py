"""Format adapters and file readers on small fixtures written by the tests themselves.

Each test writes a tiny file under ``tmp_path``, loads it with :func:`load_records` and checks the
exact records and report numbers that come out.
"""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from alignlab.data import (
    Feedback,
    Judged,
    PreferencePair,
    RankedResponses,
    SFTExample,
    load_records,
)
from alignlab.data.load import LoadResult
from alignlab.errors import DataError

# ---- helpers -----------------------------------------------------------------------------------


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def system(text: str) -> dict[str, str]:
    return {"role": "system", "content": text}


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def load_rows(
    tmp_path: Path, rows: list[Any], name: str = "data.jsonl", **options: Any
) -> LoadResult:
    """Write ``rows`` as JSONL and load them; records get ``source="data"`` (the file stem)."""
    return load_records(write_jsonl(tmp_path / name, rows), **options)


def triples(records: list[Any]) -> list[tuple[Any, Any, Any]]:
    return [(r.prompt, r.chosen, r.rejected) for r in records]


def pair(prompt: Any, chosen: Any, rejected: Any, **extra: Any) -> PreferencePair:
    return PreferencePair(prompt, chosen, rejected, **{"source": "data", **extra})


# ---- TRL preference format, explicit prompt ----------------------------------------------------


def test_standard_explicit_prompt_keeps_strings_and_optional_fields(tmp_path):
    rows = [
        {
            "prompt": "2+2?",
            "chosen": "4",
            "rejected": "5",
            "margin": 1.5,
            "rater_share": 0.75,
            "id": 7,
        },
        {"prompt": "Capital of France?", "chosen": " Paris", "rejected": " Lyon"},
    ]
    result = load_rows(tmp_path, rows)
    assert result.records == [
        pair("2+2?", "4", "5", margin=1.5, rater_share=0.75, id="7"),
        pair("Capital of France?", " Paris", " Lyon"),
    ]
    assert result.report.formats == {"preference": 2}
    assert (result.report.rows, result.report.records) == (2, 2)
    assert result.report.clean


def test_conversational_explicit_prompt_wraps_string_completion_as_assistant_message(tmp_path):
    prompt = [system("Be brief."), user("Hi")]
    rows = [{"prompt": prompt, "chosen": [assistant("Hello!")], "rejected": "Go away."}]
    (record,) = load_rows(tmp_path, rows).records
    assert record.prompt == (system("Be brief."), user("Hi"))
    assert record.chosen == (assistant("Hello!"),)
    assert record.rejected == (assistant("Go away."),)


# ---- TRL preference format, implicit prompt ----------------------------------------------------


@pytest.mark.parametrize(
    ("chosen", "rejected", "expected"),
    [
        # the shared prefix ends in a space: it goes to the completions (BPE attaches it there)
        ("Q: 2+2? A: 4", "Q: 2+2? A: 5", ("Q: 2+2? A:", " 4", " 5")),
        ("The sky is blue.", "The sky is green.", ("The sky is", " blue.", " green.")),
        # as in TRL, the prefix is character-wise: it may end inside a word
        ("I like cats", "I like cars", ("I like ca", "ts", "rs")),
    ],
)
def test_implicit_prompt_strings_split_at_common_prefix(tmp_path, chosen, rejected, expected):
    result = load_rows(tmp_path, [{"chosen": chosen, "rejected": rejected}])
    assert triples(result.records) == [expected]
    assert result.report.formats == {"preference_implicit": 1}


def test_implicit_prompt_conversational_takes_common_leading_messages(tmp_path):
    history = [user("Hi"), assistant("Hello!"), user("Tell me a joke.")]
    rows = [
        {"chosen": [user("2+2?"), assistant("4")], "rejected": [user("2+2?"), assistant("5")]},
        {"chosen": [*history, assistant("Knock knock.")], "rejected": [*history, assistant("No.")]},
        # the shared leading assistant turn belongs to both completions, not to the prompt
        {
            "chosen": [user("Go"), assistant("A"), assistant("B")],
            "rejected": [user("Go"), assistant("A"), assistant("C")],
        },
    ]
    result = load_rows(tmp_path, rows)
    assert triples(result.records) == [
        ((user("2+2?"),), (assistant("4"),), (assistant("5"),)),
        (tuple(history), (assistant("Knock knock."),), (assistant("No."),)),
        ((user("Go"),), (assistant("A"), assistant("B")), (assistant("A"), assistant("C"))),
    ]
    assert result.report.formats == {"preference_implicit": 3}


# ---- unpaired, ranked, judged, sft -------------------------------------------------------------


def test_unpaired_prompt_completion_label(tmp_path):
    rows = [
        {"prompt": "2+2?", "completion": "4", "label": True},
        {"prompt": "2+2?", "completion": "5", "label": False},
    ]
    result = load_rows(tmp_path, rows)
    assert result.records == [
        Feedback("2+2?", "4", True, source="data"),
        Feedback("2+2?", "5", False, source="data"),
    ]
    assert result.report.formats == {"unpaired": 2}


def test_unpaired_from_csv_reads_true_false_text_labels(tmp_path):
    rows = [
        {"prompt": "2+2?", "completion": "4", "label": "true"},
        {"prompt": "2+2?", "completion": "5", "label": "false"},
        {"prompt": "3+3?", "completion": "6", "label": "True"},
    ]
    result = load_records(write_csv(tmp_path / "fb.csv", rows))
    assert result.records == [
        Feedback("2+2?", "4", True, source="fb"),
        Feedback("2+2?", "5", False, source="fb"),
        Feedback("3+3?", "6", True, source="fb"),
    ]


def test_ranked_with_scores_and_with_ranks(tmp_path):
    rows = [
        {"prompt": "p", "responses": ["a", "b", "c"], "scores": [1, 3.5, 2]},
        {"prompt": "q", "responses": ["x", "y", "z"], "ranks": [2, 1, 3]},
    ]
    by_scores, by_ranks = load_rows(tmp_path, rows).records
    assert by_scores == RankedResponses("p", ("a", "b", "c"), scores=(1.0, 3.5, 2.0), source="data")
    assert by_ranks == RankedResponses("q", ("x", "y", "z"), ranks=(2, 1, 3), source="data")
    # preference(i, j): +1 if i is better; scores are higher-better, ranks lower-better
    assert [by_scores.preference(i, j) for i, j in [(0, 1), (1, 2), (2, 2)]] == [-1, 1, 0]
    assert [by_ranks.preference(i, j) for i, j in [(0, 1), (0, 2), (1, 2)]] == [-1, 1, 1]


def test_judged_with_and_without_judgment(tmp_path):
    rows = [
        {
            "instruction": "Add 2 and 2.",
            "response": "5",
            "judgment": "Wrong: 2+2 is 4.",
            "score": 1,
        },
        {"instruction": "Add 2 and 2.", "response": "4", "judgment": None},
    ]
    result = load_rows(tmp_path, rows)
    assert result.records == [
        Judged("Add 2 and 2.", "5", "Wrong: 2+2 is 4.", score=1.0, source="data"),
        Judged("Add 2 and 2.", "4", None, source="data"),
    ]
    assert result.report.formats == {"judged": 2}


def test_sft_prompt_completion(tmp_path):
    result = load_rows(tmp_path, [{"prompt": "Say hi.", "completion": "Hi!", "id": "s1"}])
    assert result.records == [SFTExample("Say hi.", "Hi!", source="data", id="s1")]
    assert result.report.formats == {"sft": 1}


def test_sft_messages_keeps_the_conversation_from_the_first_assistant_turn(tmp_path):
    """The prompt is what comes before the first reply; the completion the rest (tokenization
    supervises its assistant turns only, tests/data/test_multiturn_sft.py)."""
    rows = [
        {"messages": [system("Be kind."), user("Hi"), assistant("Hello!")]},
        {
            "messages": [
                user("Hi"),
                assistant("Hello!"),
                user("Bye"),
                assistant("See"),
                assistant("you"),
            ]
        },
    ]
    result = load_rows(tmp_path, rows)
    assert [(r.prompt, r.completion) for r in result.records] == [
        ((system("Be kind."), user("Hi")), (assistant("Hello!"),)),
        ((user("Hi"),), (assistant("Hello!"), user("Bye"), assistant("See"), assistant("you"))),
    ]
    assert result.report.formats == {"sft_messages": 2}


# ---- published benchmarks ----------------------------------------------------------------------


def test_hh_transcript_prompt_ends_at_last_shared_assistant_turn(tmp_path):
    single = {
        "chosen": "\n\nHuman: Hi\n\nAssistant: Hello!",
        "rejected": "\n\nHuman: Hi\n\nAssistant: Go away.",
    }
    history = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a joke.\n\nAssistant:"
    # replies share their first word, so the common prefix runs past the last Assistant marker
    multi = {"chosen": history + " Sure, knock knock.", "rejected": history + " Sure, no."}
    result = load_rows(tmp_path, [single, multi])
    assert triples(result.records) == [
        ("\n\nHuman: Hi\n\nAssistant:", " Hello!", " Go away."),
        (history, " Sure, knock knock.", " Sure, no."),
    ]
    assert result.report.formats == {"hh": 2}


def pandalm_row(
    votes: tuple[int, int, int], idx: int, input_text: str = "2 and 3"
) -> dict[str, Any]:
    row = {
        "idx": idx,
        "instruction": "Add the numbers.",
        "input": input_text,
        "response1": "5",
        "response2": "6",
        "motivation_app": "math",
    }
    row.update({f"annotator{i}": vote for i, vote in enumerate(votes, start=1)})
    return row


# votes (annotator1..3) -> (chosen, rejected, rater_share), or None where the vote is a tie.
# rater_share = (votes for chosen + 0.5 * tie votes) / 3
PANDALM_VOTES = [
    ((1, 1, 1), ("5", "6", 1.0)),
    ((1, 1, 2), ("5", "6", 2 / 3)),
    ((2, 1, 2), ("6", "5", 2 / 3)),
    ((1, 0, 1), ("5", "6", 5 / 6)),  # (2 + 0.5) / 3
    ((0, 2, 2), ("6", "5", 5 / 6)),
    ((1, 2, 0), None),  # one vote each
    ((0, 0, 1), None),  # the majority says tie
    ((0, 0, 0), None),
]


def test_pandalm_majority_vote_and_rater_share(tmp_path):
    rows = [pandalm_row(votes, idx) for idx, (votes, _) in enumerate(PANDALM_VOTES)]
    result = load_rows(tmp_path, rows)
    expected = [
        pair("Add the numbers.\n\n2 and 3", chosen, rejected, rater_share=share, id=str(idx))
        for idx, (_, outcome) in enumerate(PANDALM_VOTES)
        if outcome is not None
        for chosen, rejected, share in [outcome]
    ]
    assert result.records == expected
    assert [r.rater_share for r in result.records] == [1.0, 2 / 3, 2 / 3, 5 / 6, 5 / 6]
    assert result.report.dropped == {"tie between raters": 3}
    assert (result.report.rows, result.report.records) == (8, 5)
    assert result.report.formats == {"pandalm": 8}
    assert result.report.ignored_columns == set()  # published schema: extra columns are expected


def test_pandalm_empty_input_and_literal_response(tmp_path):
    row = pandalm_row((2, 2, 1), 0, input_text="  ")
    row["response2"] = True  # PandaLM stores some one-word answers as JSON literals
    result = load_rows(tmp_path, [row])
    assert triples(result.records) == [("Add the numbers.", "True", "5")]
    assert result.report.warnings == {"non-string response read as text": 1}


FINEGRAINED_ROW = {
    "question": "Who wrote Hamlet?",
    "prediction 1": "Shakespeare.",
    "prediction 2": "William Shakespeare wrote it.",
    "prediction 3": "Marlowe.",
    "prediction 4": "Shakespeare, around 1600.",
    # order 1v2 1v3 1v4 2v3 2v4 3v4
    "preference": [1, 1, 2, 1, 0, 2],
    "feedback": {"errors": []},
}


def test_finegrained_six_votes_in_order_and_no_preference_dropped(tmp_path):
    result = load_rows(tmp_path, [FINEGRAINED_ROW])
    p = [FINEGRAINED_ROW[f"prediction {i}"] for i in range(1, 5)]
    q = FINEGRAINED_ROW["question"]
    assert triples(result.records) == [
        (q, p[0], p[1]),  # 1v2: 1
        (q, p[0], p[2]),  # 1v3: 1
        (q, p[3], p[0]),  # 1v4: 2
        (q, p[1], p[2]),  # 2v3: 1
        (q, p[3], p[2]),  # 3v4: 2
    ]
    assert result.report.dropped == {"no preference": 1}  # 2v4: 0
    assert (result.report.rows, result.report.records) == (1, 5)


def test_finegrained_as_ranked_scores_are_copeland_win_counts(tmp_path):
    result = load_rows(tmp_path, [FINEGRAINED_ROW], kind="ranked")
    p = tuple(FINEGRAINED_ROW[f"prediction {i}"] for i in range(1, 5))
    # wins: 1 beats 2 and 3; 2 beats 3; 4 beats 1 and 3; 3 beats nobody
    assert result.records == [
        RankedResponses("Who wrote Hamlet?", p, scores=(2.0, 1.0, 0.0, 2.0), source="data")
    ]


def test_finegrained_ranked_scores_count_wins_per_prediction_not_per_text(tmp_path):
    row = {
        **FINEGRAINED_ROW,
        "prediction 2": FINEGRAINED_ROW["prediction 1"],
        "preference": [1] * 6,
    }
    (record,) = load_rows(tmp_path, [row], kind="ranked").records
    assert record.scores == (3.0, 2.0, 1.0, 0.0)


@pytest.mark.parametrize(
    ("label", "chosen", "rejected"), [(1, "Paris", "Lyon"), (2, "Lyon", "Paris")]
)
def test_llmbar_label_names_better_output(tmp_path, label, chosen, rejected):
    rows = [
        {"input": "Capital of France?", "output_1": "Paris", "output_2": "Lyon", "label": label}
    ]
    result = load_rows(tmp_path, rows, name="LLMBar_Natural.jsonl")
    assert result.records == [
        PreferencePair("Capital of France?", chosen, rejected, source="LLMBar_Natural")
    ]
    assert result.report.formats == {"llmbar": 1}


def judge_prompt(instruction: str, response: str) -> str:
    return (
        "###Task Description:\nGrade the response.\n\n"
        f"###The instruction to evaluate:\n{instruction}\n\n"
        f"###Response to evaluate:\n{response}\n\n"
        "###Score Rubrics:\n[Is the response helpful?]\n\n###Feedback: "
    )


def test_prometheus_wrapped_hhh_pairs_unwrap_instruction_and_responses(tmp_path):
    rows = [
        {
            "chosen_instruction": judge_prompt("How do I boil an egg?", "Simmer it for 9 minutes."),
            "rejected_instruction": judge_prompt("How do I boil an egg?", "Eggs are overrated."),
            "source": "helpful",
        }
    ]
    result = load_rows(tmp_path, rows, name="hhh.jsonl")
    assert result.records == [
        PreferencePair(
            "How do I boil an egg?",
            "Simmer it for 9 minutes.",
            "Eggs are overrated.",
            source="hhh/helpful",
        )
    ]
    assert result.report.formats == {"prometheus_pairs": 1}


# ---- column mapping and forced format ----------------------------------------------------------


def test_mapping_renames_columns(tmp_path):
    rows = [{"question": "2+2?", "response_a": "4", "response_b": "5", "annotator": "ann-1"}]
    mapping = {"prompt": "question", "chosen": "response_a", "rejected": "response_b"}
    result = load_rows(tmp_path, rows, mapping=mapping)
    assert triples(result.records) == [("2+2?", "4", "5")]
    assert result.report.formats == {"preference": 1}
    assert result.report.ignored_columns == {"annotator"}


def test_mapping_can_swap_two_columns(tmp_path):
    rows = [{"prompt": "2+2?", "chosen": "5", "rejected": "4"}]
    result = load_rows(tmp_path, rows, mapping={"chosen": "rejected", "rejected": "chosen"})
    assert triples(result.records) == [("2+2?", "4", "5")]


def test_forced_format_overrides_detection(tmp_path):
    rows = [{"prompt": "Say hi.", "completion": "Hi!", "label": True}]
    assert load_rows(tmp_path, rows).records == [Feedback("Say hi.", "Hi!", True, source="data")]
    forced = load_rows(tmp_path, rows, format="sft")
    assert forced.records == [SFTExample("Say hi.", "Hi!", source="data")]
    assert forced.report.formats == {"sft": 1}
    assert forced.report.ignored_columns == {"label"}


def test_forced_format_names_its_missing_column(tmp_path):
    with pytest.raises(DataError) as info:
        load_rows(tmp_path, [{"prompt": "2+2?", "chosen": "4"}], format="preference")
    error = info.value
    assert (error.line, error.field, error.reason) == (1, "rejected", "missing field")


def test_ignored_columns_lists_unknown_extras_of_generic_formats(tmp_path):
    rows = [
        {
            "prompt": "2+2?",
            "chosen": "4",
            "rejected": "5",
            "margin": 1.0,
            "notes": "easy",
            "lang": "en",
        },
        {"prompt": "3+3?", "chosen": "6", "rejected": "7", "worker": "w9"},
    ]
    result = load_rows(tmp_path, rows)
    assert result.report.ignored_columns == {"notes", "lang", "worker"}


# ---- file kinds --------------------------------------------------------------------------------

ROWS = [
    {"prompt": "2+2?", "chosen": "4", "rejected": "5"},
    {"prompt": "Capital of France?", "chosen": "Paris", "rejected": "Lyon"},
    {"prompt": "Opposite of hot?", "chosen": "cold", "rejected": "warm"},
]
EXPECTED = [(r["prompt"], r["chosen"], r["rejected"]) for r in ROWS]


def as_jsonl(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "rows.jsonl", ROWS)


def as_jsonl_gz(tmp_path: Path) -> Path:
    path = tmp_path / "rows.jsonl.gz"
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in ROWS).encode()))
    return path


def as_json_array(tmp_path: Path) -> Path:
    path = tmp_path / "rows.json"
    path.write_text(json.dumps(ROWS, indent=2), encoding="utf-8")
    return path


def as_json_wrapped(tmp_path: Path) -> Path:
    path = tmp_path / "rows.json"
    path.write_text(json.dumps({"version": 2, "data": ROWS}), encoding="utf-8")
    return path


def as_csv(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "rows.csv", ROWS)


def as_parquet(tmp_path: Path) -> Path:
    return write_parquet(tmp_path / "rows.parquet", ROWS)


def as_dataset(tmp_path: Path) -> Path:
    import datasets

    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "rows"))
    return tmp_path / "rows"


def as_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "rows"
    folder.mkdir()
    # written out of order: the folder is read in name order (a < b < c)
    for name, row in [("c.json", ROWS[2]), ("a.json", ROWS[0]), ("b.json", ROWS[1])]:
        (folder / name).write_text(json.dumps([row]), encoding="utf-8")
    (folder / "README.md").write_text("not data", encoding="utf-8")
    return folder


WRITERS = [as_jsonl, as_jsonl_gz, as_json_array, as_json_wrapped, as_csv, as_parquet, as_dataset]


@pytest.mark.parametrize("write", [*WRITERS, as_folder])
def test_same_rows_from_every_file_kind(tmp_path, write):
    result = load_records(write(tmp_path))
    assert triples(result.records) == EXPECTED
    assert (result.report.rows, result.report.records) == (3, 3)
    assert result.report.formats == {"preference": 3}


def test_folder_records_carry_their_file_stem_as_source(tmp_path):
    result = load_records(as_folder(tmp_path))
    assert [r.source for r in result.records] == ["a", "b", "c"]


def test_dataset_dict_reads_the_requested_split(tmp_path):
    import datasets

    folder = tmp_path / "dd"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(ROWS[:2]),
            "test": datasets.Dataset.from_list(ROWS[2:]),
        }
    ).save_to_disk(str(folder))
    assert triples(load_records(folder).records) == EXPECTED[:2]
    assert triples(load_records(folder, split="test").records) == EXPECTED[2:]
    with pytest.raises(DataError, match="split 'validation' not in the dataset") as info:
        load_records(folder, split="validation")
    assert "hint: choose split= one of ['test', 'train']" in str(info.value)


def test_bad_row_in_pretty_printed_json_array_reports_line_where_element_starts(tmp_path):
    rows = [*ROWS[:2], {"prompt": "", "chosen": "a", "rejected": "b"}]
    path = tmp_path / "rows.json"
    path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    # "[" is line 1; each element spans 5 lines ("{", three keys, "}"): starts at 2, 7, 12
    assert path.read_text().splitlines()[11] == "  {"
    with pytest.raises(DataError) as info:
        load_records(path)
    assert (info.value.file, info.value.line, info.value.row) == (str(path), 12, 2)
    assert info.value.field == "prompt"


def test_parquet_error_is_located_by_row_index(tmp_path):
    rows = [*ROWS, {"prompt": "4+4?", "chosen": "8", "rejected": "8"}]
    path = write_parquet(tmp_path / "rows.parquet", rows)
    with pytest.raises(DataError) as info:
        load_records(path)
    assert (info.value.line, info.value.row, info.value.field) == (None, 3, "rejected")
    assert str(info.value).startswith(
        f"{path}: row 3, field 'rejected': identical chosen and rejected"
    )


def test_csv_reads_chat_message_cells_as_lists(tmp_path):
    rows = [{"prompt": json.dumps([user("Hi")]), "chosen": "Hello!", "rejected": "Go away."}]
    (record,) = load_records(write_csv(tmp_path / "chat.csv", rows)).records
    assert triples([record]) == [((user("Hi"),), (assistant("Hello!"),), (assistant("Go away."),))]


def test_csv_numeric_columns_are_read_as_numbers(tmp_path):
    rows = [
        {"prompt": "2+2?", "chosen": "4", "rejected": "5", "margin": "1.5", "rater_share": "0.75"}
    ]
    (record,) = load_records(write_csv(tmp_path / "m.csv", rows)).records
    assert (record.margin, record.rater_share) == (1.5, 0.75)


# ---- conversions between record kinds ----------------------------------------------------------


def test_kind_unpaired_splits_each_pair_into_thumbs_up_and_down(tmp_path):
    result = load_rows(tmp_path, ROWS[:2], kind="unpaired")
    assert result.records == [
        Feedback("2+2?", "4", True, source="data"),
        Feedback("2+2?", "5", False, source="data"),
        Feedback("Capital of France?", "Paris", True, source="data"),
        Feedback("Capital of France?", "Lyon", False, source="data"),
    ]
    assert (result.report.rows, result.report.records) == (2, 4)


def test_kind_paired_from_ranked_gives_strictly_ordered_pairs(tmp_path):
    rows = [
        # b and c tie: no pair between them
        {"prompt": "p", "responses": ["a", "b", "c", "d"], "scores": [1, 3, 3, 0], "id": "q1"},
        {"prompt": "q", "responses": ["x", "y", "z"], "ranks": [2, 1, 3]},
    ]
    result = load_rows(tmp_path, rows, kind="paired")
    assert triples(result.records) == [
        ("p", "b", "a"),
        ("p", "c", "a"),
        ("p", "a", "d"),
        ("p", "b", "d"),
        ("p", "c", "d"),
        ("q", "y", "x"),
        ("q", "x", "z"),
        ("q", "y", "z"),
    ]
    assert [r.id for r in result.records[:5]] == ["q1:1>0", "q1:2>0", "q1:0>3", "q1:1>3", "q1:2>3"]
    assert result.report.records == 8


def test_impossible_kind_conversion_is_an_error(tmp_path):
    rows = [{"prompt": "p", "responses": ["a", "b"], "scores": [1, 0]}]
    with pytest.raises(
        DataError, match="cannot turn RankedResponses records into 'unpaired' records"
    ):
        load_rows(tmp_path, rows, kind="unpaired")
