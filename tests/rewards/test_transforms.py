"""Reward transforms and combinations: closed forms of the LSC transform and the AND (Wang, Nagpal,
Berant, Eisenstein, D'Amour, Koyejo, Veitch 2024, arXiv 2402.00742), the quantile reference,
its file, None propagation, and the registered specs.

u(x, y) = log σ(r − r_ref(x)); the AND of K properties is Σ_k log σ(r_k − r_k^ref) = log Π_k σ(·).
Each test's docstring gives the derivation of the expected number.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import pytest
import torch

from alignlab.errors import ConfigError
from alignlab.registry import REWARDS, Entry
from alignlab.rewards import FunctionReward, Reward, RewardSpec, build_reward
from alignlab.rewards.reference import (
    MissingReference,
    ReferenceRewards,
    linear_quantile,
    prompt_key,
)
from alignlab.rewards.transforms import (
    AndCombination,
    LSCTransform,
    NormalizeThenSum,
    Stats,
    WeightedSum,
    Whiten,
    log_sigmoid,
    lsc_utility,
)

LOG_HALF = math.log(0.5)


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


class Counting(Reward):
    """float(completion) + shift, or None for "?"; counts its calls and the completions scored."""

    def __init__(self, shift: float = 0.0, name: str = "number") -> None:
        self.shift = shift
        self.name = name
        self.calls = 0
        self.scored = 0

    def score(self, prompts: Sequence, completions: Sequence[str], columns) -> list:
        self.calls += 1
        self.scored += len(completions)
        return [None if c == "?" else float(c) + self.shift for c in completions]


def length(p, c):
    return float(len(c))


def starts_with_a(p, c):
    return None if c == "9" else float(c.startswith("a"))


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two test-only rewards in the registry for the time of one test (the real rule rewards
    are another module's): ``_test_length(offset=0)`` and ``_test_prefix(prefix='a')``."""

    def _test_length(offset: float = 0.0) -> Reward:
        return FunctionReward(lambda p, c: len(c) + offset)

    def _test_prefix(prefix: str = "a") -> Reward:
        return FunctionReward(lambda p, c: None if c == "" else float(c.startswith(prefix)))

    for fn in (_test_length, _test_prefix):
        monkeypatch.setitem(REWARDS._entries, fn.__name__,
                            Entry(fn.__name__, fn, RewardSpec("test only", "rule")))


# ------------------------------------------------------------------------- closed forms


def test_log_sigmoid_matches_torch_and_is_stable():
    """log σ(z) against torch's float64 logsigmoid from −800 to 800; at ±1000 no overflow:
    log σ(−1000) = −1000 exactly, log σ(1000) = −e^−1000 = −0.0; log σ(40) = −log1p(e^−40) ≈ −e^−40
    (a naive log(1 + e^−40) would be 0)."""
    zs = [x / 4 for x in range(-3200, 3201, 7)]
    ours = torch.tensor([log_sigmoid(z) for z in zs], dtype=torch.float64)
    theirs = torch.nn.functional.logsigmoid(torch.tensor(zs, dtype=torch.float64))
    torch.testing.assert_close(ours, theirs, rtol=1e-14, atol=1e-300)
    assert log_sigmoid(-1000.0) == -1000.0
    assert log_sigmoid(1000.0) == 0.0
    assert log_sigmoid(40.0) == pytest.approx(-math.exp(-40.0), rel=1e-12)
    assert log_sigmoid(40.0) < 0.0


def test_lsc_is_nonpositive_increasing_and_tends_to_zero():
    """u = log σ(r − r_ref) < 0 for finite r, strictly rising in r, and −u = log1p(e^−(r−r_ref))
    ≈ e^−(r−r_ref) → 0: at r − r_ref = 30, |u| ≈ 9.4e−14."""
    rs = [x / 2 for x in range(-80, 81)]
    us = [lsc_utility(r, 1.5) for r in rs]
    assert all(u <= 0.0 for u in us)
    assert all(a < b for a, b in zip(us[:-1], us[1:], strict=True))
    assert lsc_utility(31.5, 1.5) == pytest.approx(-math.exp(-30.0), rel=1e-12)
    assert abs(lsc_utility(1e6, 0.0)) < 1e-300


@pytest.mark.parametrize("r_ref", [-7.25, 0.0, 3.0, 1e6])
def test_lsc_at_the_reference_is_log_half(r_ref):
    """r = r_ref ⇒ u = log σ(0) = log ½, whatever r_ref."""
    assert lsc_utility(r_ref, r_ref) == pytest.approx(LOG_HALF, abs=1e-12)


@pytest.mark.parametrize("z", [-30.0, -5.0, -1.0, 0.0, 0.5, 3.0, 30.0])
def test_lsc_gradient_is_sigmoid_of_reference_minus_reward(z):
    """∂/∂r log σ(r − r_ref) = σ(−(r − r_ref)) = σ(r_ref − r); central differences (h = 1e−5, error
    ~h²) and torch autograd of the same formula both give it."""
    r_ref = 2.0
    r = r_ref + z
    h = 1e-5
    numeric = (lsc_utility(r + h, r_ref) - lsc_utility(r - h, r_ref)) / (2 * h)
    assert numeric == pytest.approx(sigmoid(r_ref - r), abs=1e-9)
    rt = torch.tensor(r, dtype=torch.float64, requires_grad=True)
    torch.nn.functional.logsigmoid(rt - r_ref).backward()
    assert rt.grad.item() == pytest.approx(sigmoid(r_ref - r), abs=1e-15)
    assert torch.nn.functional.logsigmoid(rt - r_ref).item() == pytest.approx(
        lsc_utility(r, r_ref), rel=1e-14)


def test_lsc_is_shift_invariant():
    """r + c and r_ref + c: (r + c) − (r_ref + c) = r − r_ref, so u is unchanged, through a
    reference built from the shifted reward's own samples: medians {1, 2, 4} → 2 and
    {0.5, 5} → 2.75."""
    samples = {"p": ["1", "2", "4"], "q": ["0.5", "5"]}
    prompts, completions = ["p", "q", "p"], ["7", "-3", "2"]
    plain, shifted = Counting(), Counting(shift=123.25)
    u = LSCTransform(plain, ReferenceRewards.from_samples(plain, samples))(prompts, completions)
    v = LSCTransform(shifted, ReferenceRewards.from_samples(shifted, samples))(prompts, completions)
    assert u == pytest.approx(v, abs=1e-12)
    assert u == pytest.approx([lsc_utility(7, 2), lsc_utility(-3, 2.75), LOG_HALF], abs=1e-12)


def test_sum_of_two_lsc_utilities_is_log_of_the_product():
    """log σ(a) + log σ(b) = log(σ(a)·σ(b)): a = 1.3, b = −0.4."""
    a, b = 1.3, -0.4
    assert lsc_utility(a, 0) + lsc_utility(b, 0) == pytest.approx(
        math.log(sigmoid(a) * sigmoid(b)), abs=1e-12)


def test_and_is_log_of_the_product_and_below_each_term():
    """Two properties of completions that are numbers: their length (r_ref = median of
    lengths {1, 3} = 2) and their value (r_ref = median of {0, 2, 111} = 2). "10":
    u₁ = log σ(2 − 2) = log ½, u₂ = log σ(10 − 2); AND = u₁ + u₂ = log(½·σ(8)) ≤ min(u₁, u₂),
    and likewise for the other completions."""
    rl, rn = FunctionReward(length, "length"), Counting()
    samples = {"p": ["0", "111", "2"]}
    ref_l = ReferenceRewards.from_samples(rl, {"p": ["1", "333"]})
    ref_n = ReferenceRewards.from_samples(rn, samples)
    assert ref_l["p"] == 2.0 and ref_n["p"] == 2.0
    both = AndCombination([rl, rn], [ref_l, ref_n])
    completions = ["10", "5", "0", "123"]
    scores = both(["p"] * 4, completions)
    for c, s in zip(completions, scores, strict=True):
        u1, u2 = lsc_utility(len(c), 2.0), lsc_utility(float(c), 2.0)
        assert s == pytest.approx(u1 + u2, abs=1e-12)
        product = sigmoid(len(c) - 2.0) * sigmoid(float(c) - 2.0)
        assert s == pytest.approx(math.log(product), abs=1e-12)
        assert s <= min(u1, u2)
    assert scores[0] == pytest.approx(math.log(0.5 * sigmoid(8.0)), abs=1e-12)


def test_and_does_not_let_one_property_compensate_another():
    """Plain sum: (10, −10) and (0, 0) both sum to 0. AND with r_ref = 0: log σ(10) + log σ(−10) ≈
    −10.00009 against 2·log ½ ≈ −1.386: the balanced answer wins."""
    lopsided = lsc_utility(10, 0) + lsc_utility(-10, 0)
    balanced = 2 * LOG_HALF
    assert 10 + -10 == 0 + 0
    assert lopsided == pytest.approx(-10.0 - 2 * math.log1p(math.exp(-10.0)), abs=1e-12)
    assert lopsided < balanced


# --------------------------------------------------------------------------- the reference


@pytest.mark.parametrize(("q", "expected"), [(0.5, 2.5), (0.0, 1.0), (1.0, 10.0), (0.25, 1.75),
                                             (0.9, 7.9)])
def test_reference_quantile_interpolates_linearly(q, expected):
    """Sorted rewards [1, 2, 3, 10], position h = (n − 1)·q = 3q, value
    x_⌊h⌋ + (h − ⌊h⌋)(x_⌊h⌋+1 − x_⌊h⌋):
    q = ½ → h = 1.5 → 2 + ½·1 = 2.5; q = ¼ → 0.75 → 1.75; q = 0.9 → 2.7 → 3 + 0.7·7 = 7.9."""
    reward = Counting()
    ref = ReferenceRewards.from_samples(reward, {"p": ["10", "2", "1", "3"]}, quantile=q)
    assert ref["p"] == pytest.approx(expected, abs=1e-12)
    assert linear_quantile([10, 2, 1, 3], q) == pytest.approx(expected, abs=1e-12)
    assert ref["p"] == pytest.approx(float(torch.quantile(torch.tensor([1.0, 2, 3, 10],
                                                                        dtype=torch.float64), q)))


def test_reference_is_scored_once_in_one_call():
    """from_samples calls the reward once with all 5 samples; LSC then calls it once per batch and
    never rescores the samples."""
    reward = Counting()
    ref = ReferenceRewards.from_samples(reward, {"p": ["1", "2", "3"], "q": ["4", "6"]})
    assert (reward.calls, reward.scored) == (1, 5)
    lsc = LSCTransform(reward, ref)
    lsc(["p", "q"], ["2", "5"])
    lsc(["q"], ["5"])
    assert (reward.calls, reward.scored) == (3, 8)
    assert lsc(["p", "q"], ["2", "5"]) == pytest.approx([LOG_HALF, LOG_HALF], abs=1e-12)


def test_reference_leaves_out_and_counts_unscorable_samples():
    """Samples "?" score None: p's kept scores {1, 3} → median 2; 2 of 5 left out."""
    ref = ReferenceRewards.from_samples(Counting(), {"p": ["1", "?", "3", "?"], "q": ["?", "8"]})
    assert ref["p"] == 2.0 and ref["q"] == 8.0
    assert ref.counts[prompt_key("p")] == (2, 2)
    assert ref.unscorable == 3


def test_reference_with_no_scorable_sample_names_the_prompt():
    with pytest.raises(ConfigError, match="'hopeless'.*no reference reward"):
        ReferenceRewards.from_samples(Counting(), {"p": ["1"], "hopeless": ["?", "?"]})


def test_reference_rejects_bad_inputs():
    with pytest.raises(ConfigError, match=r"quantile must lie in \[0, 1\]"):
        ReferenceRewards.from_samples(Counting(), {"p": ["1"]}, quantile=1.5)
    with pytest.raises(ConfigError, match="one string"):
        ReferenceRewards.from_samples(Counting(), {"p": "1"})
    with pytest.raises(ConfigError, match="no base samples"):
        ReferenceRewards.from_samples(Counting(), {"p": []})
    with pytest.raises(ConfigError, match="appears twice"):
        ReferenceRewards.from_samples(Counting(), [("p", ["1"]), ("p", ["2"])])


def test_missing_prompt_is_a_key_error_naming_it_before_any_scoring():
    reward = Counting()
    lsc = LSCTransform(reward, ReferenceRewards.from_samples(reward, {"p": ["1"]}))
    with pytest.raises(MissingReference, match="'unseen prompt'") as info:
        lsc(["p", "unseen prompt"], ["1", "2"])
    assert isinstance(info.value, ConfigError) and isinstance(info.value, KeyError)
    assert "hint:" in str(info.value)
    assert reward.calls == 1  # only the reference's own call: the batch was refused first


def test_chat_prompts_and_per_prompt_columns():
    """Chats of plain dicts come as (prompt, completions) pairs; a column gives one value per
    prompt to each of its samples: score = len(c) − len(answer); answer "ab", samples "a", "aa"
    → {−1, 0} → median −0.5."""
    chat = ({"role": "user", "content": "say a"},)

    def minus_answer(p, c, answer):
        return float(len(c) - len(answer))

    reward = FunctionReward(minus_answer, "minus_answer")
    ref = ReferenceRewards.from_samples(reward, [(chat, ["a", "aa"]), ("plain", ["aaaa"])],
                                        columns={"answer": ["ab", "a"]})
    assert ref[chat] == -0.5 and ref["plain"] == 3.0
    assert ref[({"content": "say a", "role": "user"},)] == -0.5  # key order does not matter
    assert chat in ref and "say a" not in ref
    lsc = LSCTransform(reward, ref)
    assert lsc.columns == ("answer",)
    assert lsc([chat], ["ab"], {"answer": ["ab"]}) == pytest.approx([lsc_utility(0, -0.5)])
    with pytest.raises(ConfigError, match="needs the column"):
        lsc([chat], ["ab"])


# ------------------------------------------------------------------------------- the file


def test_save_load_round_trip(tmp_path):
    chat = ({"role": "system", "content": "be brief"}, {"role": "user", "content": "héllo"})
    samples = [(chat, ["1", "2", "?"]), ("p", ["0.1", "0.7"])]
    ref = ReferenceRewards.from_samples(Counting(), samples, quantile=0.25)
    path = tmp_path / "ref.json"
    ref.save(path)
    expected = ReferenceRewards.fingerprint_of("number", samples, 0.25)
    loaded = ReferenceRewards.load(path, reward="number", fingerprint=expected)
    assert loaded.values == ref.values and loaded.fingerprint == ref.fingerprint
    assert loaded.quantile == 0.25 and loaded.counts == ref.counts
    assert loaded[chat] == 1.25 and loaded["p"] == pytest.approx(0.25)
    document = json.loads(path.read_text(encoding="utf-8"))
    assert document["format"] == "alignlab.reference_rewards"
    assert document["interpolation"] == "linear"
    assert [e["prompt"] for e in document["prompts"]] == [[dict(m) for m in chat], "p"]
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temporary behind


def test_stale_or_foreign_file_is_refused(tmp_path):
    samples = {"p": ["1", "2"], "q": ["3"]}
    path = tmp_path / "ref.json"
    fingerprint_of = ReferenceRewards.fingerprint_of
    ReferenceRewards.from_samples(Counting(), samples).save(path)
    for other in ({"p": ["1", "2"], "q": ["4"]}, {"p": ["1", "2"]}):
        with pytest.raises(ConfigError, match="is stale.*\n  hint: delete"):
            ReferenceRewards.load(path, fingerprint=fingerprint_of("number", other))
    with pytest.raises(ConfigError, match="is stale"):
        ReferenceRewards.load(path, fingerprint=fingerprint_of("number", samples, 0.9))
    with pytest.raises(ConfigError, match="built with reward 'number', not 'length'"):
        ReferenceRewards.load(path, reward="length")
    with pytest.raises(ConfigError, match="built with reward 'number'"):
        LSCTransform(FunctionReward(length, "length"), path)
    document = json.loads(path.read_text(encoding="utf-8"))
    document["reward"] = "length"  # an edit that would pass the name check
    path.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(ConfigError, match="does not match its content"):
        ReferenceRewards.load(path, reward="length")
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError, match="cannot read"):
        ReferenceRewards.load(path)
    with pytest.raises(ConfigError, match="does not exist"):
        ReferenceRewards.load(tmp_path / "absent.json")


def test_load_or_build_builds_once_then_loads_then_refuses_other_samples(tmp_path):
    path = tmp_path / "ref.json"
    reward = Counting()
    first = ReferenceRewards.load_or_build(path, reward, {"p": ["1", "3"]})
    again = ReferenceRewards.load_or_build(path, reward, {"p": ["1", "3"]})
    assert reward.calls == 1 and again.values == first.values and again.source == str(path)
    with pytest.raises(ConfigError, match="is stale"):
        ReferenceRewards.load_or_build(path, reward, {"p": ["1", "5"]})
    assert reward.calls == 1


# -------------------------------------------------------------------- whitening and sums


def test_whiten_fit_ignores_none_and_gives_z_scores():
    """Scores {1, 3, 5} (and one None): mean 3, population std √(8/3); z(7) = 4/√(8/3)."""
    w = Whiten.fit(Counting(), ["p"] * 4, ["1", "3", "?", "5"])
    assert (w.mean, w.std) == (3.0, pytest.approx(math.sqrt(8 / 3)))
    assert w(["p", "p", "p"], ["7", "3", "?"]) == [pytest.approx(4 / math.sqrt(8 / 3)), 0.0, None]
    assert Stats.of([1.0, 3.0, None]) == Stats(2.0, 1.0, 2, 1)


def test_whiten_refuses_zero_spread():
    with pytest.raises(ConfigError, match="std is 0"):
        Whiten.fit(Counting(), ["p"] * 3, ["2", "2", "?"])
    with pytest.raises(ConfigError, match="at least two"):
        Whiten.fit(Counting(), ["p"] * 2, ["2", "?"])
    with pytest.raises(ConfigError, match="std must be positive"):
        Whiten(Counting(), 0.0, 0.0)


def test_weighted_sum_and_normalize_then_sum():
    """1·number + 0.5·length: "12" → 12 + 0.5·2 = 13. Fitted on "0", "10": number mean 5, std 5,
    length (1, 2) mean 1.5, std 0.5, so "12" → 7/5 + 0.5/0.5 = 2.4; with length stats (2, 1):
    7/5 + 0 = 1.4."""
    number, size = Counting(), FunctionReward(length, "length")
    ws = WeightedSum([number, size], [1.0, 0.5])
    assert ws(["p"], ["12"]) == [13.0]
    assert ws.name == "weighted_sum(1*number, 0.5*length)"
    fitted = NormalizeThenSum.fit([number, size], ["p", "p"], ["0", "10"])
    manual = NormalizeThenSum([number, size], [(5.0, 5.0), (1.5, 0.5)])
    assert fitted(["p"], ["12"]) == manual(["p"], ["12"]) == [pytest.approx(1.4 + 1.0)]
    by_hand = NormalizeThenSum([number, size], [Stats(5.0, 5.0), Stats(2.0, 1.0)])
    assert by_hand(["p"], ["12"]) == [pytest.approx(1.4)]
    with pytest.raises(ConfigError, match="2 weights for 1 rewards"):
        WeightedSum([number], [1.0, 2.0])
    with pytest.raises(ConfigError, match="weights\\[0\\] must be finite"):
        WeightedSum([number], [math.inf])


def test_none_propagates_through_every_wrapper():
    """An unscorable completion ("?" for the number reward, "9" for starts-with-a) makes every
    combination None, never a partial sum. "1": number 1 (r_ref 1), prefix 0 (r_ref ½)."""
    number, prefix = Counting(), FunctionReward(starts_with_a, "prefix")
    ref_n = ReferenceRewards.from_samples(number, {"p": ["1"]})
    ref_p = ReferenceRewards.from_samples(prefix, {"p": ["a", "b"]})
    prompts, completions = ["p"] * 3, ["1", "?", "9"]
    assert LSCTransform(number, ref_n)(prompts, completions) == [LOG_HALF, None,
                                                                 lsc_utility(9.0, 1.0)]
    assert LSCTransform(prefix, ref_p)(prompts, completions) == [lsc_utility(0.0, 0.5),
                                                                 lsc_utility(0.0, 0.5), None]
    assert WeightedSum([number, prefix], [1, 1])(prompts, completions) == [1.0, None, None]
    normalized = NormalizeThenSum([number, prefix], [(0.0, 1.0), (0.0, 1.0)])
    assert normalized(prompts, completions) == [1.0, None, None]
    both = AndCombination([number, prefix], [ref_n, ref_p])
    expected = LOG_HALF + lsc_utility(0.0, 0.5)
    assert both(prompts, completions) == [pytest.approx(expected), None, None]


# ------------------------------------------------------------------------------ the specs


def test_registered_transforms_are_of_the_transform_family():
    for name in ("lsc", "whiten", "weighted_sum", "normalize_sum", "and"):
        assert REWARDS.get(name).contract.family == "transform"
    assert "2402.00742" in REWARDS.get("lsc").contract.source
    assert "2402.00742" in REWARDS.get("and").contract.source


def test_weighted_sum_spec_string(registered):
    """Length with offset −3, plus ½ × starts-with-a: "abc" → 0 + ½ = 0.5; "b" → −2 + 0; "" has no
    prefix score, so None."""
    reward = build_reward('weighted_sum(rewards=["_test_length(offset=-3)", '
                          "\"_test_prefix(prefix='a')\"], weights=[1.0, 0.5])")
    assert isinstance(reward, WeightedSum)
    assert reward(["p", "p", "p"], ["abc", "b", ""]) == [0.5, -2.0, None]
    assert reward.name.startswith("weighted_sum(rewards=")


def test_whiten_and_normalize_sum_specs(registered):
    whiten = build_reward({"name": "whiten", "reward": "_test_length", "mean": 2, "std": 4})
    assert whiten(["p"], ["abcdef"]) == [1.0]
    normalize = build_reward("normalize_sum(rewards=['_test_length', {'name': '_test_prefix'}], "
                             "means=[2, 0.5], stds=[4, 0.5])")
    assert normalize(["p"], ["abcdef"]) == [1.0 + 1.0]
    with pytest.raises(ConfigError, match="1 stds for 2 rewards"):
        build_reward("normalize_sum(rewards=['_test_length', '_test_prefix'], means=[0, 0], "
                     "stds=[1])")


def test_lsc_and_and_specs_read_saved_references(registered, tmp_path):
    """Length reference: median of {1, 2, 6} = 2; prefix reference: median of {1, 0} = 0.5.
    "abcd": length u = log σ(2), prefix u = log σ(½); AND = their sum."""
    length_path, prefix_path = tmp_path / "length.json", tmp_path / "prefix.json"
    ReferenceRewards.from_samples("_test_length", {"p": ["a", "ab", "abcdef"]}).save(length_path)
    ReferenceRewards.from_samples("_test_prefix", {"p": ["a", "b"]}).save(prefix_path)
    lsc = build_reward(f"lsc(reward='_test_length', reference={str(length_path)!r})")
    assert lsc(["p"], ["abcd"]) == [pytest.approx(lsc_utility(4, 2))]
    both = build_reward({"name": "and", "rewards": ["_test_length", "_test_prefix"],
                         "references": [str(length_path), str(prefix_path)]})
    expected = lsc_utility(4, 2) + lsc_utility(1, 0.5)
    assert both(["p", "p"], ["abcd", ""]) == [pytest.approx(expected), None]
    with pytest.raises(ConfigError, match="built with reward '_test_length'"):
        build_reward(f"lsc(reward='_test_length(offset=1)', reference={str(length_path)!r})")
    with pytest.raises(ConfigError, match="references must be a list"):
        build_reward({"name": "and", "rewards": ["_test_length"], "references": str(length_path)})


def test_a_lone_spec_where_a_list_belongs_is_named(registered):
    with pytest.raises(ConfigError, match="rewards must be a list"):
        build_reward("weighted_sum(rewards='_test_length', weights=[1.0])")
    with pytest.raises(ConfigError, match="rewards is empty"):
        build_reward("weighted_sum(rewards=[], weights=[])")
