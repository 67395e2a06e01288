"""Closed forms of the registered online losses (grpo, dapo, dr_grpo, gspo, rloo, reinforce_pp, ppo):
each is the clipped objective with its paper's settings, reduced to per-completion shares of the
step's numerator; the shares over the step's units equal the aggregation of the whole batch.
"""

from __future__ import annotations

import pytest
import torch

from alignlab.losses import get_loss
from alignlab.losses.policy import aggregate, loss_units, policy_token_losses

ONLINE = ["grpo", "dapo", "dr_grpo", "gspo", "rloo", "reinforce_pp", "ppo"]


def batch(seed: int = 0, b: int = 4, t: int = 6) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(b, t, dtype=torch.bool)
    mask[1, 4:] = False
    mask[3, 2:] = False
    mask[:, 0] = False  # the prompt's position
    policy = -torch.rand(b, t, generator=g, dtype=torch.float64) * 3
    return {"policy_tokens": policy, "old_tokens": policy - 0.3 * torch.randn(b, t, generator=g, dtype=torch.float64),
            "advantages": torch.randn(b, generator=g, dtype=torch.float64), "mask": mask,
            "ref_tokens": policy - 0.5 * torch.rand(b, t, generator=g, dtype=torch.float64)}


def call(name: str, inputs: dict, **kwargs):
    entry = get_loss(name)
    return entry.obj(**{k: inputs[k] for k in entry.contract.inputs}, **kwargs)


def value_inputs(inputs: dict) -> dict:
    g = torch.Generator().manual_seed(1)
    shape = inputs["mask"].shape
    return {**inputs, "values": torch.randn(shape, generator=g, dtype=torch.float64),
            "old_values": torch.randn(shape, generator=g, dtype=torch.float64),
            "returns": torch.randn(shape, generator=g, dtype=torch.float64)}


def test_contracts_name_the_estimator_and_need_no_reference():
    expected = {"grpo": "grpo", "dapo": "grpo", "dr_grpo": "dr_grpo", "gspo": "grpo", "rloo": "rloo",
                "reinforce_pp": "reinforce_pp_baseline", "ppo": "gae"}
    for name, advantage in expected.items():
        contract = get_loss(name).contract
        assert contract.data == "prompt" and contract.advantage == advantage
        assert not contract.needs_ref  # the KL term is optional: read only when beta > 0


@pytest.mark.parametrize("name", ["grpo", "dapo", "dr_grpo", "rloo", "reinforce_pp"])
def test_shares_over_units_equal_the_aggregated_clipped_objective(name):
    """Σ shares / units = aggregate(policy_token_losses) with the loss's own defaults."""
    inputs = batch()
    shares, metrics = call(name, inputs)
    defaults = {h.name: h.default for h in get_loss(name).contract.hyperparameters}
    aggregation = defaults.pop("aggregation")
    per_token, _ = policy_token_losses(inputs["policy_tokens"], inputs["old_tokens"], inputs["advantages"],
                                       inputs["mask"], ref_logp=inputs["ref_tokens"], **defaults)
    units = loss_units(inputs["mask"], aggregation, max_completion_length=6)
    expected = aggregate(per_token, inputs["mask"], aggregation, max_completion_length=6)
    torch.testing.assert_close(shares.sum() / units, expected, rtol=0, atol=1e-12)
    assert {"clip_ratio/low", "clip_ratio/high", "clip_ratio/region", "ratio"} <= set(metrics)


def test_grpo_by_hand_at_ratio_one_is_reinforce_with_token_means():
    """π = π_old: w = 1, no clipping, l_t = −A; the grpo share of a completion is −A (its token
    mean), and the gradient wrt log π(y_t) is −A/n_i (REINFORCE with a per-completion mean)."""
    inputs = batch()
    logp = inputs["policy_tokens"].clone().requires_grad_(True)
    inputs = {**inputs, "policy_tokens": logp, "old_tokens": logp.detach()}
    shares, _ = call("grpo", inputs)
    torch.testing.assert_close(shares, -inputs["advantages"], rtol=0, atol=1e-12)
    shares.sum().backward()
    n = inputs["mask"].sum(-1, keepdim=True).double()
    expected = torch.where(inputs["mask"], -inputs["advantages"][:, None] / n, 0.0)
    torch.testing.assert_close(logp.grad, expected, rtol=0, atol=1e-12)


def test_dapo_clips_higher_than_grpo():
    """One token at ratio 1.25 with A > 0: inside DAPO's [0.8, 1.28], clipped by GRPO's [0.8, 1.2]."""
    mask = torch.tensor([[False, True]])
    inputs = {"policy_tokens": torch.tensor([[0.0, 0.0]], dtype=torch.float64),
              "old_tokens": torch.tensor([[0.0, -torch.log(torch.tensor(1.25)).item()]], dtype=torch.float64),
              "advantages": torch.tensor([2.0], dtype=torch.float64), "mask": mask,
              "ref_tokens": torch.zeros(1, 2, dtype=torch.float64)}
    dapo, dapo_metrics = call("dapo", inputs)
    grpo, grpo_metrics = call("grpo", inputs)
    torch.testing.assert_close(dapo, torch.tensor([-2.5], dtype=torch.float64))  # −1.25·2, unclipped
    torch.testing.assert_close(grpo, torch.tensor([-2.4], dtype=torch.float64))  # −1.2·2, clipped
    assert float(dapo_metrics["clip_ratio/high"]) == 0.0 and float(grpo_metrics["clip_ratio/high"]) == 1.0


def test_gspo_uses_one_sequence_ratio_per_completion():
    """GSPO's w = exp(mean_t log π/π_old) per completion: a completion whose token ratios are
    e^{+0.1} and e^{−0.1} has w = 1, so its share is −A whatever the token ratios."""
    mask = torch.tensor([[False, True, True]])
    old = torch.tensor([[0.0, -1.1, -0.9]], dtype=torch.float64)
    inputs = {"policy_tokens": torch.tensor([[0.0, -1.0, -1.0]], dtype=torch.float64), "old_tokens": old,
              "advantages": torch.tensor([0.7], dtype=torch.float64), "mask": mask,
              "ref_tokens": torch.zeros(1, 3, dtype=torch.float64)}
    shares, metrics = call("gspo", inputs)
    torch.testing.assert_close(shares, torch.tensor([-0.7], dtype=torch.float64), rtol=0, atol=1e-12)
    assert float(metrics["ratio"]) == pytest.approx(1.0)


def test_beta_adds_the_reference_kl():
    """With beta > 0 the share moves by β·mean_t k3 (grpo aggregation) and the reference matters."""
    inputs = batch()
    base, _ = call("grpo", inputs)
    with_kl, metrics = call("grpo", inputs, beta=0.1)
    u = torch.where(inputs["mask"], inputs["ref_tokens"] - inputs["policy_tokens"], 0.0)
    k3 = torch.where(inputs["mask"], torch.exp(u) - u - 1, 0.0)
    n = inputs["mask"].sum(-1).double()
    torch.testing.assert_close(with_kl - base, 0.1 * k3.sum(-1) / n, rtol=0, atol=1e-12)
    moved = {**inputs, "ref_tokens": inputs["ref_tokens"] - 0.2}
    assert not torch.allclose(call("grpo", moved, beta=0.1)[0], with_kl)
    assert float(metrics["kl"]) > 0


def test_ppo_value_loss_by_hand():
    """One token: V = 1, V_old = 0, R = 2, clip 0.2 → clipped V = 0.2; ½·max((1−2)², (0.2−2)²) =
    ½·3.24 = 1.62, times vf_coef 0.1 = 0.162 on top of the policy term −A (ratio 1)."""
    mask = torch.tensor([[False, True]])
    zeros = torch.zeros(1, 2, dtype=torch.float64)
    inputs = {"policy_tokens": zeros, "old_tokens": zeros, "advantages": torch.tensor([[0.0, 0.5]], dtype=torch.float64),
              "mask": mask, "ref_tokens": zeros, "values": torch.tensor([[0.0, 1.0]], dtype=torch.float64),
              "old_values": zeros, "returns": torch.tensor([[0.0, 2.0]], dtype=torch.float64)}
    shares, metrics = call("ppo", inputs)
    torch.testing.assert_close(shares, torch.tensor([-0.5 + 0.162], dtype=torch.float64), rtol=0, atol=1e-12)
    assert float(metrics["value_loss"]) == pytest.approx(1.62)
    assert float(metrics["value_clip_ratio"]) == 1.0
    # inside the clip range the plain squared error counts: V = 0.1 → ½·(0.1−2)² = 1.805
    shares, metrics = call("ppo", {**inputs, "values": torch.tensor([[0.0, 0.1]], dtype=torch.float64)})
    assert float(metrics["value_loss"]) == pytest.approx(1.805) and float(metrics["value_clip_ratio"]) == 0.0


def test_ppo_value_gradient_flows_to_the_values_only_through_the_value_term():
    inputs = value_inputs(batch())
    values = inputs["values"].clone().requires_grad_(True)
    shares, _ = call("ppo", {**inputs, "values": values}, value_clip=100.0)  # no clipping: plain MSE
    shares.sum().backward()
    expected = torch.where(inputs["mask"], 0.1 * (inputs["values"] - inputs["returns"]), 0.0)
    torch.testing.assert_close(values.grad, expected, rtol=0, atol=1e-12)
