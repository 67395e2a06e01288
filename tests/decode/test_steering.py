"""Steering vectors: reading directions, the steering hooks, and the trade-off fit.

Example: ``pytest tests/decode/test_steering.py``
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignlab.decode.steering import (
    SteeringVectors,
    contrast_direction,
    decoder_layers,
    fit_tradeoff,
    read_steering_vectors,
    steer,
    sweep_alpha,
)
from alignlab.errors import AlignlabError
from alignlab.models.tiny import init_tiny_model

EOS, PAD, BOS = 1, 2, 0  # the tiny tokenizer's ids; asserted in the fixture

POSITIVE = [[BOS, 40, 41, 42, 43], [BOS, 7, 8], [BOS, 100, 101, 102], [BOS, 9]]
NEGATIVE = [[BOS, 50, 51], [BOS, 60, 61, 62, 63, 64], [BOS, 200, 201], [BOS, 300, 301]]
PROBE = torch.tensor([[BOS, 11, 12, 13, 14, 15]])


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return init_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture()
def model(tiny_dir: Path) -> Any:
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    config = model.generation_config
    assert (config.eos_token_id, config.pad_token_id, config.bos_token_id) == (EOS, PAD, BOS)
    return model.eval()


def _logits(model: Any, ids: Tensor = PROBE) -> Tensor:
    with torch.no_grad():
        return model(ids).logits


def _hooks(model: Any) -> int:
    return sum(len(layer._forward_hooks) for layer in decoder_layers(model))


def _unit(hidden: int, seed: int = 0) -> Tensor:
    vector = torch.randn(hidden, generator=torch.Generator().manual_seed(seed))
    return vector / vector.norm()


def _last_states(model: Any, prompts: list[list[int]], index: int) -> Tensor:
    """Last-token states from ``output_hidden_states`` (entry ``index``), one prompt at a time."""
    with torch.no_grad():
        return torch.stack([model(torch.tensor([p]), output_hidden_states=True).hidden_states[index][0, -1]
                            for p in prompts])


# Reading ------------------------------------------------------------------------------------


def test_mean_diff_and_pca_closed_forms() -> None:
    """Differences ±c_i·e1 plus one orthogonal pair: the mean and the top singular vector are
    known exactly; the PCA sign follows the majority of pairs, not the mean."""
    negative = torch.zeros(3, 4)
    positive = torch.tensor([[1.0, 0, 0, 0], [1.0, 0, 0, 0], [-10.0, 0, 0, 0]])
    mean = contrast_direction(positive, negative, "mean_diff", "raw")
    assert torch.equal(mean, torch.tensor([-8 / 3, 0, 0, 0]))
    assert torch.equal(contrast_direction(positive, negative, "mean_diff"), torch.tensor([-1.0, 0, 0, 0]))
    # Two of three pairs put the positive above the negative along +e1: RepE's sign is +.
    pca = contrast_direction(positive, negative, "pca")
    assert torch.allclose(pca, torch.tensor([1.0, 0, 0, 0]), atol=1e-7)
    # raw PCA: u · mean⟨u, d⟩ = e1 · (−8/3).
    assert torch.allclose(contrast_direction(positive, negative, "pca", "raw"),
                          torch.tensor([-8 / 3, 0, 0, 0]), atol=1e-6)
    # Uncentred: ordered differences 3e1, 3e1, 3e1 + e2 have their top singular vector near e1;
    # centring them would leave only e2 (the one direction that varies).
    positive = torch.tensor([[3.0, 0, 0, 0], [3.0, 0, 0, 0], [3.0, 1.0, 0, 0]])
    u = contrast_direction(positive, torch.zeros(3, 4), "pca").double()
    top = torch.linalg.eigh(positive.double().T @ positive.double()).eigenvectors[:, -1]
    assert torch.allclose(u, top * torch.sign(top[0]), atol=1e-6)
    assert u[0] > 0.99 and u[1] > 0


def test_a_zero_direction_is_an_error() -> None:
    positive = torch.tensor([[1.0, 0], [-1.0, 0]])  # the differences cancel in the mean
    with pytest.raises(AlignlabError, match="zero direction"):
        contrast_direction(positive, torch.zeros(2, 2), "mean_diff")
    with pytest.raises(AlignlabError, match="no direction"):
        contrast_direction(positive, positive, "pca")


def test_pca_tie_goes_to_the_mean_difference() -> None:
    negative = torch.zeros(2, 3)
    positive = torch.tensor([[2.0, 0, 0], [-1.0, 0, 0]])  # one vote each way; mean +0.5 e1
    assert torch.allclose(contrast_direction(positive, negative), torch.tensor([1.0, 0, 0]), atol=1e-7)
    assert torch.allclose(contrast_direction(-positive, negative), torch.tensor([-1.0, 0, 0]), atol=1e-7)


def test_mean_diff_reads_the_decoder_outputs_at_the_last_token(model: Any) -> None:
    """Layer 0 against ``output_hidden_states[1]`` (the same tensor); the last layer against the
    input of the final norm, since HF's last hidden_states entry is after that norm."""
    vectors = read_steering_vectors(model, POSITIVE, NEGATIVE, method="mean_diff", norm="raw", batch_size=1)
    assert vectors.layers == (0, 1) and vectors.hidden_size == 64
    expected = _last_states(model, POSITIVE, 1).mean(0) - _last_states(model, NEGATIVE, 1).mean(0)
    assert torch.allclose(vectors.vectors[0], expected, atol=1e-6)

    inputs: list[Tensor] = []
    handle = model.model.norm.register_forward_pre_hook(lambda module, args: inputs.append(args[0][0, -1]))
    with torch.no_grad():
        for prompt in POSITIVE + NEGATIVE:
            model(torch.tensor([prompt]))
    handle.remove()
    states = torch.stack(inputs)
    expected = states[:4].mean(0) - states[4:].mean(0)
    assert torch.allclose(vectors.vectors[1], expected, atol=1e-6)
    assert not torch.allclose(vectors.vectors[1], (_last_states(model, POSITIVE, 2) -
                                                   _last_states(model, NEGATIVE, 2)).mean(0), atol=1e-3)


def test_batching_padding_and_token_mean(model: Any) -> None:
    one = read_steering_vectors(model, POSITIVE, NEGATIVE, token="mean", norm="raw", layers=[0], batch_size=1)
    many = read_steering_vectors(model, POSITIVE, NEGATIVE, token="mean", norm="raw", layers=[0], batch_size=3)
    assert torch.allclose(one.vectors[0], many.vectors[0], atol=1e-5)
    with torch.no_grad():
        means = [model(torch.tensor([p]), output_hidden_states=True).hidden_states[1][0].mean(0)
                 for p in POSITIVE + NEGATIVE]
    differences = torch.stack(means[:4]) - torch.stack(means[4:])
    assert torch.allclose(many.vectors[0], contrast_direction(differences, torch.zeros_like(differences), "pca",
                                                              "raw"), atol=1e-5)


def test_pca_on_the_model_is_the_top_eigenvector_of_the_differences(model: Any) -> None:
    vectors = read_steering_vectors(model, POSITIVE, NEGATIVE, layers=[-2], batch_size=8)
    assert vectors.layers == (0,) and (vectors.method, vectors.norm, vectors.token) == ("pca", "unit", "last")
    v = vectors.vectors[0].double()
    assert abs(float(v.norm()) - 1.0) < 1e-6
    d = (_last_states(model, POSITIVE, 1) - _last_states(model, NEGATIVE, 1)).double()
    eigenvalues, eigenvectors = torch.linalg.eigh(d.T @ d)
    assert abs(float(v @ eigenvectors[:, -1])) > 1 - 1e-5
    assert int(((d @ v) > 0).sum()) >= 2  # the sign follows the majority of pairs


def test_strings_are_encoded_with_the_tokenizer(model: Any, tiny_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    positive, negative = ["Thank you for your help!", "Be kind."], ["Water boils.", "The quick brown fox."]
    from_text = read_steering_vectors(model, positive, negative, tokenizer=tokenizer, method="mean_diff")
    ids = [tokenizer(t)["input_ids"] for t in positive + negative]
    assert ids[0][0] == BOS
    from_ids = read_steering_vectors(model, ids[:2], ids[2:], method="mean_diff")
    for layer in (0, 1):
        assert torch.equal(from_text.vectors[layer], from_ids.vectors[layer])
    with pytest.raises(ValueError, match="no tokenizer"):
        read_steering_vectors(model, positive, negative)


def test_reading_errors(model: Any) -> None:
    with pytest.raises(ValueError, match="2 positive but 1 negative"):
        read_steering_vectors(model, POSITIVE[:2], NEGATIVE[:1])
    with pytest.raises(ValueError, match="decoder layer 2 does not exist"):
        read_steering_vectors(model, POSITIVE, NEGATIVE, layers=[2])
    with pytest.raises(ValueError, match="prompt 1 has no tokens"):
        read_steering_vectors(model, [[BOS], []], [[BOS], [BOS]])
    with pytest.raises(AlignlabError, match="no direction"):
        read_steering_vectors(model, POSITIVE, POSITIVE)
    with pytest.raises(AlignlabError, match="decoder layers of Linear"):
        decoder_layers(nn.Linear(2, 2))


def test_save_load_round_trip(tmp_path: Path) -> None:
    vectors = SteeringVectors({3: _unit(8, 1), 1: _unit(8, 2)}, "mean_diff", "mean", "raw")
    assert vectors.layers == (1, 3)
    with pytest.raises(TypeError):
        vectors.vectors[5] = _unit(8)  # type: ignore[index]
    vectors.save(tmp_path / "v.safetensors")
    loaded = SteeringVectors.load(tmp_path / "v.safetensors")
    assert (loaded.method, loaded.token, loaded.norm, loaded.layers) == ("mean_diff", "mean", "raw", (1, 3))
    assert all(torch.equal(loaded.vectors[i], vectors.vectors[i]) for i in (1, 3))

    from safetensors.torch import save_file

    save_file({"layer.0": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(AlignlabError, match="not a steering-vectors file"):
        SteeringVectors.load(tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="one hidden size"):
        SteeringVectors({0: torch.ones(2), 1: torch.ones(3)})
    with pytest.raises(ValueError, match="method, token, norm"):
        SteeringVectors({0: torch.ones(2)}, "svd")  # type: ignore[arg-type]


# Steering -----------------------------------------------------------------------------------


def test_alpha_zero_and_exit_leave_logits_bit_identical(model: Any) -> None:
    vectors = SteeringVectors({0: _unit(64, 1), 1: _unit(64, 2)})
    before = _logits(model)
    with steer(model, vectors, 0.0):
        assert _hooks(model) == 2  # the hooks do run: adding 0·v changes no bit
        assert torch.equal(_logits(model), before)
    with steer(model, vectors, 3.0):
        steered = _logits(model)
    assert _hooks(model) == 0
    assert (steered - before).abs().max() > 1e-3
    assert torch.equal(_logits(model), before)


def test_hooks_are_removed_when_the_body_raises(model: Any) -> None:
    before = _logits(model)
    with pytest.raises(RuntimeError, match="boom"), steer(model, SteeringVectors({1: _unit(64)}), 5.0):
        assert _hooks(model) == 1
        raise RuntimeError("boom")
    assert _hooks(model) == 0
    assert torch.equal(_logits(model), before)


@pytest.mark.parametrize("alpha", [1.0, 2.5, -0.5])
def test_steering_adds_alpha_v_at_every_position(model: Any, alpha: float) -> None:
    """What the next module receives is the block's output plus α·v: linear in α at the
    injected layer (its projection on v grows by α, the rest is unchanged)."""
    v = _unit(64, 3)
    vectors = SteeringVectors({0: v, 1: _unit(64, 4)})
    seen: list[Tensor] = []
    handle = model.model.norm.register_forward_pre_hook(lambda module, args: seen.append(args[0][0]))
    _logits(model)
    with steer(model, vectors, alpha, layers=[-1]):
        _logits(model)
    handle.remove()
    base, steered = seen
    shift = steered - base  # (positions, hidden)
    assert torch.allclose(shift, (alpha * vectors.vectors[1]).expand_as(shift), atol=1e-5)
    assert torch.allclose(shift @ vectors.vectors[1], torch.full((PROBE.shape[1],), alpha), atol=1e-5)

    # Steering layer 0 instead: layer 1's input moves by α·v.
    plain, moved = _layer1_inputs(model, vectors, alpha, layers=[0])
    assert torch.allclose(moved - plain, (alpha * v).expand_as(plain), atol=1e-5)


def _layer1_inputs(model: Any, vectors: SteeringVectors, alpha: float, **options: Any) -> list[Tensor]:
    """What decoder block 1 receives (positions, hidden), unsteered and then steered."""
    seen: list[Tensor] = []
    handle = model.model.layers[1].register_forward_pre_hook(lambda module, args: seen.append(args[0][0]))
    _logits(model)
    with steer(model, vectors, alpha, **options):
        _logits(model)
    handle.remove()
    return seen


def test_output_hidden_states_do_not_show_the_steering(model: Any) -> None:
    """HF records a block's output before the steering hook: hidden_states[1] stays the
    unsteered one while block 1 gets the steered one (why reading uses hooks)."""
    vectors = SteeringVectors({0: _unit(64, 8)})
    with torch.no_grad():
        plain = model(PROBE, output_hidden_states=True).hidden_states
        with steer(model, vectors, 1.0):
            moved = model(PROBE, output_hidden_states=True).hidden_states
    assert torch.equal(plain[1], moved[1]) and not torch.equal(plain[2], moved[2])


def test_renormalize_keeps_each_state_norm(model: Any) -> None:
    vectors = SteeringVectors({0: _unit(64, 5)})
    plain, moved = _layer1_inputs(model, vectors, 4.0, renormalize=True)
    assert torch.allclose(moved.norm(dim=-1), plain.norm(dim=-1), rtol=1e-5)
    expected = (plain + 4.0 * vectors.vectors[0])
    expected = expected * (plain.norm(dim=-1, keepdim=True) / expected.norm(dim=-1, keepdim=True))
    assert torch.allclose(moved, expected, atol=1e-5)


def test_steering_a_peft_model_matches_the_plain_model(model: Any, tiny_dir: Path) -> None:
    from peft import LoraConfig, get_peft_model

    vectors = SteeringVectors({0: _unit(64, 6)})
    with steer(model, vectors, 2.0):
        expected = _logits(model)
    wrapped = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_dir),
                             LoraConfig(r=2, target_modules=["q_proj"])).eval()  # B = 0: same function
    with steer(wrapped, vectors, 2.0):
        assert _hooks(wrapped) == 1
        got = _logits(wrapped)
    assert torch.allclose(got, expected, atol=1e-6)
    assert _hooks(wrapped) == 0


class _TupleBlock(nn.Module):
    """A block returning (hidden, extra) as older Hugging Face layers do."""

    def forward(self, hidden: Tensor) -> tuple[Tensor, Tensor]:
        return hidden * 2, torch.tensor(7.0)


class _GPT2Like(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.transformer = nn.Module()
        self.transformer.h = nn.ModuleList([_TupleBlock(), _TupleBlock()])

    def forward(self, hidden: Tensor) -> tuple[Tensor, Tensor]:
        extra = torch.tensor(0.0)
        for block in self.transformer.h:
            hidden, extra = block(hidden)
        return hidden, extra


def test_tuple_outputs_keep_their_other_elements() -> None:
    toy = _GPT2Like()
    vectors = SteeringVectors({0: torch.tensor([1.0, -1.0]), 1: torch.tensor([0.5, 0.5])})
    with steer(toy, vectors, 2.0):
        hidden, extra = toy(torch.tensor([[3.0, 4.0]]))
    # ((x·2 + 2·v0)·2 + 2·v1) = ((6+2, 8-2)·2) + (1, 1) = (17, 13)
    assert torch.equal(hidden, torch.tensor([[17.0, 13.0]]))
    assert torch.equal(extra, torch.tensor(7.0))
    assert torch.equal(toy(torch.tensor([[3.0, 4.0]]))[0], torch.tensor([[12.0, 16.0]]))


def test_steer_errors(model: Any) -> None:
    cases = [
        (SteeringVectors({0: _unit(64)}), [0, -1], r"no steering vector for decoder layer\(s\) \[1\]"),
        (SteeringVectors({0: _unit(8)}), None, "hidden size 8 but the model has 64"),
        (SteeringVectors({5: _unit(64)}), None, "decoder layer 5 does not exist"),
    ]
    for vectors, layers, message in cases:
        with pytest.raises(ValueError, match=message), steer(model, vectors, 1.0, layers=layers):
            pass
    assert _hooks(model) == 0


def test_sweep_scores_under_each_alpha(model: Any) -> None:
    vectors = SteeringVectors({1: _unit(64, 7)})
    prompts = [[BOS, 5, 6], [BOS, 9]]

    def score(m: Any, ps: Any) -> tuple[float, float]:
        assert ps is prompts and not m.training and not torch.is_grad_enabled()
        return float(_logits(m, torch.tensor([ps[0]]))[0, -1, 10]), float(_hooks(m))

    model.train()
    points = sweep_alpha(model, vectors, prompts, [0.0, 2.0], score)
    assert model.training  # the mode comes back
    model.eval()
    assert points[0] == (0.0, float(_logits(model, torch.tensor([prompts[0]]))[0, -1, 10]), 1.0)
    with steer(model, vectors, 2.0):
        assert points[1] == (2.0, float(_logits(model, torch.tensor([prompts[0]]))[0, -1, 10]), 1.0)
    assert points[0][1] != points[1][1]
    with pytest.raises(TypeError, match="pair"):
        sweep_alpha(model, vectors, prompts, [1.0], lambda m, ps: 0.5)  # type: ignore[arg-type,return-value]


# The trade-off fit --------------------------------------------------------------------------


def test_fit_recovers_exact_linear_and_quadratic_forms() -> None:
    alphas = [-2.0, -1.0, 0.0, 0.5, 1.0, 2.0, 3.0]
    points = [(a, 0.3 + 0.1 * a, 0.8 - 0.05 * a * a) for a in alphas]
    fit = fit_tradeoff(points)
    assert fit.points == 7 and fit.helpfulness_slope == 0.0
    for got, want in [(fit.alignment_intercept, 0.3), (fit.alignment_slope, 0.1),
                      (fit.helpfulness_intercept, 0.8), (fit.helpfulness_curvature, 0.05),
                      (fit.alignment_r2, 1.0), (fit.helpfulness_r2, 1.0)]:
        assert got == pytest.approx(want, abs=1e-12)
    assert fit.alignment(2.0) == pytest.approx(0.5, abs=1e-12)
    assert fit.helpfulness(2.0) == pytest.approx(0.6, abs=1e-12)


def test_fit_closed_form_least_squares_and_r2() -> None:
    """Alignment at α = −1, 0, 1 of 0, 0, 3: b = 3/2, a = 1, R² = 1 − 1.5/6 = 0.75.
    Helpfulness 0, 1, 1: on α² = 1, 0, 1 the line is 1 − α²/2, R² = 1 − 0.5/(2/3) = 0.25."""
    fit = fit_tradeoff([(-1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (1.0, 3.0, 1.0)])
    assert fit.alignment_slope == pytest.approx(1.5, abs=1e-12)
    assert fit.alignment_intercept == pytest.approx(1.0, abs=1e-12)
    assert fit.alignment_r2 == pytest.approx(0.75, abs=1e-12)
    assert fit.helpfulness_intercept == pytest.approx(1.0, abs=1e-12)
    assert fit.helpfulness_curvature == pytest.approx(0.5, abs=1e-12)
    assert fit.helpfulness_r2 == pytest.approx(0.25, abs=1e-12)


def test_fit_options_linear_term_and_small_alpha_window() -> None:
    points = [(a, 0.5 + 0.2 * a, 0.9 + 0.03 * a - 0.04 * a * a) for a in (-2.0, -1.0, 0.0, 1.0, 2.0)]
    fit = fit_tradeoff(points, helpfulness_linear_term=True)
    assert fit.helpfulness_slope == pytest.approx(0.03, abs=1e-12)
    assert fit.helpfulness_curvature == pytest.approx(0.04, abs=1e-12)
    assert fit.helpfulness_intercept == pytest.approx(0.9, abs=1e-12)
    # Without the linear term the asymmetry is left as residual.
    assert fit_tradeoff(points).helpfulness_r2 < 1 - 1e-3
    # A saturated point at α = 10 is dropped by the window; the line is then exact.
    windowed = fit_tradeoff([*points, (10.0, 1.0, 0.0)], max_abs_alpha=2.0)
    assert windowed.points == 5 and windowed.alignment_slope == pytest.approx(0.2, abs=1e-12)
    assert fit_tradeoff([*points, (10.0, 1.0, 0.0)]).alignment_r2 < 1 - 1e-3


def test_fit_errors() -> None:
    with pytest.raises(ValueError, match="2 distinct \\|alpha\\|"):
        fit_tradeoff([(-1.0, 0.0, 1.0), (1.0, 1.0, 1.0)])  # α² is 1 for both
    with pytest.raises(ValueError, match="at least 3 distinct alpha"):
        fit_tradeoff([(0.0, 0.0, 1.0), (1.0, 1.0, 1.0)], helpfulness_linear_term=True)
    with pytest.raises(ValueError, match="three finite numbers"):
        fit_tradeoff([(0.0, float("nan"), 1.0)])
