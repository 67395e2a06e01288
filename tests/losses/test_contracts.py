"""Conformance of every registered loss: contract, shapes, detached metrics, finiteness, bf16,
dependence on the reference. Parametrised over the registry, so a new loss is checked by default.
"""

from __future__ import annotations

import inspect

import pytest
import torch

import alignlab.losses  # noqa: F401  (registers every loss)
from alignlab.kinds import DATA_KINDS
from alignlab.losses.contract import INPUTS, LossContract
from alignlab.registry import LOSSES

B, T, K, M, S = 6, 7, 3, 2, 4
ENTRIES = LOSSES.entries()
LOGPROB_INPUTS = {n for n in INPUTS if n.startswith(("policy", "ref", "kl_", "misalign"))}


def make_inputs(entry, extreme: float | None = None, dtype=torch.float64, seed: int = 0) -> dict:
    """Plausible tensors for each input name of a loss; ``extreme`` puts log-probs at -extreme
    on the policy side (ratios of ±extreme), and other real inputs at ±extreme."""
    g = torch.Generator().manual_seed(seed)

    def uniform(shape, low, high):
        return (low + (high - low) * torch.rand(shape, generator=g, dtype=torch.float64)).to(dtype)

    logps = entry.contract.logps
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[:, T - 2:] = torch.rand(B, 2, generator=g) > 0.5  # ragged ends, >= T-2 tokens each
    made = {}
    for name in entry.contract.inputs:
        if name in ("chosen_mask", "rejected_mask", "mask"):
            made[name] = mask
        elif name.endswith("_tokens"):
            tokens = uniform((B, T), -3.0, -0.01)
            if extreme is not None:
                tokens = torch.full((B, T), -extreme if name.startswith("policy") else -0.01, dtype=dtype)
            made[name] = tokens * mask
        elif name in LOGPROB_INPUTS:
            shape = (B, K) if entry.contract.data == "ranked" else (B,)
            low, high = (-3.0, -0.05) if logps == "mean" else (-40.0, -1.0)
            made[name] = uniform(shape, low, high)
            if extreme is not None:
                made[name] = torch.full(shape, -extreme if name.startswith("policy") else -0.01, dtype=dtype)
        elif name in ("chosen_lengths", "rejected_lengths", "lengths"):
            shape = (B, K) if entry.contract.data == "ranked" else (B,)
            made[name] = torch.randint(1, 20, shape, generator=g).to(dtype)
        elif name in ("chosen_weights", "rejected_weights"):
            made[name] = uniform((B, T), 1.0, 3.0)
        elif name in ("labels", "negative"):
            made[name] = torch.arange(B) % 2 == 0
        elif name == "example_weights":
            made[name] = uniform((B,), 0.5, 2.0)
        elif name == "delta":
            made[name] = torch.tensor(0.1, dtype=dtype)
        elif name == "train_step":  # a state's count: a scalar, in the middle of a warm-up
            made[name] = torch.tensor(7.0, dtype=torch.float64)
        elif name == "scores":
            made[name] = torch.stack([torch.randperm(K, generator=g) for _ in range(B)]).to(dtype)
        elif name in ("response_mask", "step_mask"):
            made[name] = torch.ones(B, K if name == "response_mask" else S, dtype=torch.bool)
        elif name == "aligned_scores":
            made[name] = uniform((B, M), -3.0, -0.05)
        elif name == "step_labels":
            made[name] = (torch.rand(B, S, generator=g) > 0.5).to(dtype)
        elif name == "margin":
            made[name] = uniform((B,), 0.0, 1.0)
        elif name in ("values", "old_values", "returns"):  # PPO's critic, per token
            made[name] = uniform((B, T), -1.0, 1.0) * mask
        else:  # rewards and logits: any real number
            shape = (B, S) if name == "step_logits" else (B,)
            made[name] = uniform(shape, -3.0, 3.0) if extreme is None else torch.full(shape, extreme, dtype=dtype)
    if "misalign_tokens" in made and "policy_tokens" in made:
        # CUT switches formula at ratio = λ (1.1): keep every token's ratio e^±1 well away from it,
        # so bf16 rounding cannot move a token across (a knife edge, not an error).
        signs = torch.where(torch.rand(B, T, generator=g) > 0.5, 1.0, -1.0).to(dtype)
        made["misalign_tokens"] = (made["policy_tokens"] + signs) * mask
        if extreme is not None:
            made["misalign_tokens"] = made["policy_tokens"] * 0.5
    return made


def trainable(entry) -> list[str]:
    """The inputs a model would produce with gradients: policy log-probs, rewards, logits."""
    return [n for n in entry.contract.inputs
            if n.startswith("policy") or n.endswith("_rewards") or n == "step_logits"]


def run(entry, inputs):
    return entry.obj(**inputs)


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_contract_is_complete(entry):
    assert isinstance(entry.contract, LossContract)
    assert entry.contract.logps in ("sum", "mean", "token", "none")
    # Every loss trains on a registered data kind, but PRM's step-labelled data (not read yet).
    assert entry.contract.data in DATA_KINDS or entry.contract.data == "prm"
    assert isinstance(entry.contract.verified, bool)
    doc = inspect.getdoc(entry.obj) or ""
    surname = entry.contract.paper.split()[0].strip(",")
    assert surname in doc, f"docstring of {entry.name} should name the paper ({surname})"
    assert "=" in doc, f"docstring of {entry.name} should write the equation"
    if not entry.contract.verified:
        assert "unverified" in doc.lower(), f"{entry.name} is unverified: its docstring must say so"


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_per_example_losses_and_detached_metrics(entry):
    losses, metrics = run(entry, make_inputs(entry))
    assert losses.shape == (B,)
    assert bool(torch.isfinite(losses).all())
    for name, value in metrics.items():
        assert not value.requires_grad, f"metric {name} of {entry.name} is not detached"


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_gradients_flow_to_the_policy(entry):
    inputs = make_inputs(entry)
    policy = trainable(entry)
    for name in policy:
        inputs[name] = inputs[name].clone().requires_grad_(True)
    losses, _ = run(entry, inputs)
    losses.sum().backward()
    grads = [inputs[n].grad for n in policy if inputs[n].grad is not None]
    assert grads and all(bool(torch.isfinite(g).all()) for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads)


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
@pytest.mark.parametrize("extreme", [1e4])
def test_finite_at_extreme_log_probs(entry, extreme):
    inputs = make_inputs(entry, extreme=extreme)
    for name in trainable(entry):
        inputs[name] = inputs[name].clone().requires_grad_(True)
    losses, _ = run(entry, inputs)
    assert bool(torch.isfinite(losses).all()), f"{entry.name} not finite at log-probs of -{extreme}"
    losses.sum().backward()
    for name in trainable(entry):
        if inputs[name].grad is not None:
            assert bool(torch.isfinite(inputs[name].grad).all())


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_bf16_close_to_fp32(entry):
    """bf16 keeps 8 bits of mantissa: inputs are rounded by up to 2^-8 relative, so losses of
    log-prob sums ~40 may move by ~0.15·β·|∂L/∂z|; compare with 2e-2 relative + 5e-2 absolute."""
    full, _ = run(entry, make_inputs(entry, dtype=torch.float32))
    half, _ = run(entry, make_inputs(entry, dtype=torch.bfloat16))
    assert half.dtype in (torch.bfloat16, torch.float32)
    torch.testing.assert_close(half.float(), full, rtol=2e-2, atol=5e-2)


@pytest.mark.parametrize("entry", [e for e in ENTRIES if e.contract.needs_ref],
                         ids=[e.name for e in ENTRIES if e.contract.needs_ref])
def test_reference_changes_the_loss(entry):
    inputs = make_inputs(entry)
    base, _ = run(entry, inputs)
    for name in [n for n in entry.contract.inputs if n.startswith("ref") or n == "kl_ref"]:
        moved = dict(inputs)
        # One entry only (example 0, or response 0 of ranked data): shifting a whole ranked row
        # by a constant is an exact invariance of listwise losses, as a shared shift is for DPO.
        moved[name] = inputs[name].clone()
        # KTO's z0 = max(0, mean(kl_policy − kl_ref)) is clamped: move it well past 0.
        moved[name][..., 0] -= 1000.0 if name == "kl_ref" else 0.7
        changed, _ = run(entry, moved)
        assert not torch.allclose(changed, base), f"{entry.name} ignores {name}"


def test_every_loss_has_a_closed_form_test():
    """Each registered name appears in some tests/losses/test_*.py besides this file."""
    from pathlib import Path

    texts = "".join(p.read_text() for p in Path(__file__).parent.glob("test_*.py") if p.name != Path(__file__).name)
    missing = [e.name for e in ENTRIES if e.name not in texts]
    assert not missing, f"losses without their own tests: {missing}"


def test_registry_holds_every_loss_module():
    """Every loss module is imported by alignlab.losses: 30 losses at the time of writing."""
    assert len(LOSSES) >= 30


def test_every_loss_is_in_the_paper_index():
    from pathlib import Path

    index = (Path(__file__).resolve().parents[2] / "docs" / "losses.md").read_text(encoding="utf-8")
    missing = [e.name for e in ENTRIES if f"`{e.name}`" not in index]
    assert not missing, f"add these losses to docs/losses.md: {missing}"
