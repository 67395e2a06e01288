"""Answer verifiers on hand-made completions: answers extracted in every style, SQuAD-normalised
exact match, numbers as written (commas, fractions, scientific), None where no answer is stated,
lists of acceptable answers, unreadable references as errors naming their row, math-verify.

Example: ``.venv/bin/pytest tests/rewards/test_verifiers.py``
"""

from __future__ import annotations

import sys

import pytest

from alignlab.errors import ConfigError
from alignlab.rewards import build_reward, unscorable
from alignlab.rewards.verifiers import (
    completion_number,
    extract_answer,
    normalize_answer,
    numbers_in,
)


def verify(spec: str, completions: list[str], answers: list[object]) -> list[float | None]:
    return build_reward(spec)(["question"] * len(completions), completions, {"answer": answers})


@pytest.mark.parametrize("text, style, expected", [
    (r"so \boxed{\frac{1}{2}} then \boxed{x^{2}+1}.", "boxed", "x^{2}+1"),
    (r"\fbox{ 7 }", "boxed", "7"),
    (r"cut off \boxed{\frac{1}{2}", "boxed", None),
    ("work\n#### 1,234\nmore", "gsm8k", "1,234"),
    ("<answer> Paris </answer> <ANSWER>Rome</ANSWER>", "tag", "Rome"),
    ("I think the answer is: 3.5. Sure.", "phrase", "3.5"),
    ("The Answer is Paris", "phrase", "Paris"),
    (r"The answer is 4 but \boxed{5}", "auto", "5"),   # boxed is tried first
    ("#### 9\nand the answer is 8", "auto", "9"),
    ("no marks here", "auto", None),
    ("  whole  ", "none", "whole"),
])
def test_extract_answer(text: str, style: str, expected: str | None) -> None:
    assert extract_answer(text, style) == expected  # type: ignore[arg-type]


def test_unknown_style_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown answer style 'latex'"):
        extract_answer("x", "latex")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="numeric_answer.*unknown answer style"):
        build_reward("numeric_answer(style='latex')")


def test_numbers_as_written() -> None:
    assert numbers_in(r"1,234,567 and 3/4, \frac{1}{8}, -2.5e3, .5 and 12") == [1234567.0, 0.75, 0.125, -2500.0, 0.5, 12.0]
    assert numbers_in("1/0 is no number") == []
    assert completion_number("Step 1: 3+4=7. Step 2: 7*6 = 42") == 42.0           # last number written
    assert completion_number("The answer is 41, not 42.") == 41.0                  # first of the marked answer
    assert completion_number("No idea.") is None
    assert completion_number(r"\boxed{no number}") is None


def test_numeric_answer_scores_and_keeps_none() -> None:
    completions = ["It is 42.", "No idea.", "The answer is 41, not 42.", "#### 1,000", r"\boxed{\frac{3}{4}}",
                   "about 42.0000001", "4.2e1"]
    scores = verify("numeric_answer", completions, ["42", "42", "42", 1000, "0.75", 42, "42"])
    assert scores == [1.0, None, 0.0, 1.0, 1.0, 1.0, 1.0]
    assert unscorable(scores) == 1
    assert verify("numeric_answer(rel_tol=0, abs_tol=0.5)", ["43", "42.4"], [42, 42]) == [0.0, 1.0]
    assert verify("numeric_answer", ["it is 8", "it is 9"], [["7", "8"], [7, 8]]) == [1.0, 0.0]
    # style='none': the last number of the whole completion, marks ignored
    assert verify("numeric_answer(style='none')", ["The answer is 41, not 42."], ["42"]) == [1.0]


@pytest.mark.parametrize("reference", ["forty-two", "42 apples", True, [], None])
def test_an_unreadable_numeric_reference_names_its_row(reference: object) -> None:
    with pytest.raises(ValueError, match=r"row 1: column 'answer'"):
        verify("numeric_answer", ["1", "2"], ["1", reference])


def test_exact_match_normalises_and_accepts_lists() -> None:
    assert normalize_answer("  The  Eiffel-Tower!! ") == "eiffeltower"
    completions = ["The answer is Paris.", "paris!", "<answer>The Rome</answer>", "London", "It is Paris"]
    answers = ["paris", ["Paris", "London"], "rome", ["Paris", "Lyon"], "Paris"]
    assert verify("exact_match", completions, answers) == [1.0, 1.0, 1.0, 0.0, 0.0]
    # Without a marked answer and fallback_whole=False the completion is unscorable.
    assert verify("exact_match(fallback_whole=False)", ["Paris", "#### Paris"], ["paris", "paris"]) == [None, 1.0]
    # A multiple-choice letter that is also an article is kept, not normalised away.
    assert normalize_answer("(A)") == "a" and normalize_answer("The") == "the"
    assert verify("exact_match", ["The answer is (A).", "#### B", "a"], ["A", "A", "an"]) == [1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match=r"row 0: column 'answer' holds '\?\?'"):
        verify("exact_match", ["x"], ["??"])


def test_a_verifier_needs_its_column() -> None:
    with pytest.raises(ConfigError, match=r"(?s)needs the column\(s\) \['gold'\].*hint"):
        build_reward("exact_match(column='gold')")(["q"], ["a"], {"answer": ["a"]})
    assert build_reward("exact_match(column='gold')")(["q"], ["a"], {"gold": ["A"]}) == [1.0]


def test_math_answer_without_the_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "math_verify", None)
    with pytest.raises(ConfigError, match=r"(?s)math-verify.*pip install 'alignlab\[math\]'"):
        build_reward("math_answer")


def test_math_answer_with_math_verify() -> None:
    pytest.importorskip("math_verify")
    completions = [r"so \boxed{\frac{1}{2}}", r"\boxed{0.5}", "No idea.", r"The answer is $\{1, 2\}$",
                   r"\boxed{3}", r"$x = 2\sqrt{2}$"]
    answers = ["0.5", r"\frac{1}{2}", "1", r"\{2, 1\}", ["4", "3"], r"\sqrt{8}"]
    assert verify("math_answer", completions, answers) == [1.0, 1.0, None, 1.0, 1.0, 1.0]
    assert verify("math_answer", [r"\boxed{3}"], ["4"]) == [0.0]
