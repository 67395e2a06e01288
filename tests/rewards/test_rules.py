"""Rule rewards against hand-computed values: length target and penalty (linear and DAPO's soft
overlong punishment), regex match, keyword and blocklist score; bad options are errors.

Example: ``.venv/bin/pytest tests/rewards/test_rules.py``
"""

from __future__ import annotations

import pytest

from alignlab.errors import ConfigError
from alignlab.rewards import build_reward


def score(spec: str, *completions: str) -> list[float | None]:
    return build_reward(spec)(["prompt"] * len(completions), list(completions))


def words(n: int) -> str:
    return " ".join(["w"] * n)


def test_length_target_is_minus_the_scaled_distance() -> None:
    assert score("length_target(target=20)", "4") == [-19.0]
    assert score("length_target(target=3, scale=0.5)", "a b c", "a", words(7)) == [0.0, -1.0, -2.0]
    assert score("length_target(target=5, unit='chars')", "abcde", "ab", "") == [0.0, -3.0, -5.0]


def test_length_penalty_linear_in_the_excess() -> None:
    assert score("length_penalty(max_length=4)", words(2), words(4), words(7)) == [0.0, 0.0, -3.0]
    assert score("length_penalty(max_length=4, scale=0.25)", words(8)) == [-1.0]


def test_length_penalty_soft_overlong_punishment() -> None:
    # DAPO Eq. 13 with L_max = 10, L_cache = 4: 0 up to 6, (6 - L)/4 up to 10, -1 beyond.
    got = score("length_penalty(max_length=10, buffer=4)", *(words(n) for n in (0, 6, 7, 8, 10, 11, 50)))
    assert got == [0.0, 0.0, -0.25, -0.5, -1.0, -1.0, -1.0]
    assert score("length_penalty(max_length=10, buffer=4, scale=2)", words(8)) == [-1.0]


def test_regex_match_search_full_and_flags() -> None:
    assert score(r"regex_match(pattern='\\d+')", "it is 42", "none") == [1.0, 0.0]
    assert score(r"regex_match(pattern='\\d+', full=True)", "42", "it is 42") == [1.0, 0.0]
    assert score("regex_match(pattern='^answer:', flags='im', score_match=2, score_miss=-1)",
                 "think\nANSWER: 4", "the answer: 4") == [2.0, -1.0]
    fmt = r"regex_match(pattern='<think>.*</think>\\s*<answer>.*</answer>', flags='s', full=True)"
    assert score(fmt, "<think>a\nb</think>\n<answer>4</answer>", "<answer>4</answer>") == [1.0, 0.0]


def test_keyword_score_counts_each_term_once_and_blocks() -> None:
    spec = "keyword_score(keywords=['please', 'thank you'], blocklist=['idiot', 'damn'], penalty=0.5)"
    assert score(spec, "Please, and THANK YOU.", "please please please", "please, you idiot. damn. damn.",
                 "nothing here") == [1.0, 0.5, 0.5 - 1.0, 0.0]
    # Whole words by default: "pleased" is not "please"; substrings count with whole_word=False.
    assert score("keyword_score(keywords=['please'])", "pleased") == [0.0]
    assert score("keyword_score(keywords=['please'], whole_word=False)", "pleased") == [1.0]
    assert score("keyword_score(keywords=['Please'], case_sensitive=True)", "please", "Please") == [0.0, 1.0]
    assert score("keyword_score(blocklist=['c++'])", "I like c++.", "I like c.") == [-1.0, 0.0]


@pytest.mark.parametrize("spec, message", [
    ("length_target(target=-1)", "target must be"),
    ("length_target(target=3, unit='tokens')", "unit must be 'words' or 'chars'"),
    ("length_penalty(max_length=0)", "max_length must be > 0"),
    ("length_penalty(max_length=5, buffer=6)", "buffer must be in"),
    ("regex_match(pattern='(')", "not a valid regular expression"),
    ("regex_match(pattern='a', flags='q')", "unknown regex flag"),
    ("keyword_score()", "give keywords, a blocklist or both"),
    ("keyword_score(keywords='please')", "lists of terms"),
    ("keyword_score(keywords=[''])", "empty keyword"),
])
def test_bad_options_are_config_errors_naming_the_reward(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"reward '\w+': .*{message}"):
        build_reward(spec)
