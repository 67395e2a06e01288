"""Closed-form values and identities of the advantage estimators (GRPO, Dr. GRPO, RLOO,
REINFORCE++ with and without baseline, GAE). Each test's docstring gives the derivation.
"""

from __future__ import annotations

import math

import pytest
import torch

from alignlab.losses.advantages import (
    AdvantageContract,
    dr_grpo,
    gae,
    grpo,
    reinforce_pp,
    reinforce_pp_baseline,
    rloo,
    token_rewards,
)
from alignlab.registry import ADVANTAGES

EPS = 1e-4


def t(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def assert_close(actual: torch.Tensor, expected: list[list[float]]) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=actual.dtype), rtol=0, atol=1e-12)


def ragged_mask(lengths: list[int], width: int) -> torch.Tensor:
    return torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]


# --- contracts ----------------------------------------------------------------------------------

def test_every_estimator_is_registered_with_its_contract():
    """Six estimators; GAE alone reads values; the token-level ones and what their first argument is."""
    assert ADVANTAGES.names() == ["dr_grpo", "gae", "grpo", "reinforce_pp", "reinforce_pp_baseline", "rloo"]
    contracts = {e.name: e.contract for e in ADVANTAGES}
    assert all(isinstance(c, AdvantageContract) and c.paper and c.equation for c in contracts.values())
    assert {n for n, c in contracts.items() if c.needs_values} == {"gae"}
    assert {n for n, c in contracts.items() if c.level == "token"} == {"gae", "reinforce_pp", "reinforce_pp_baseline"}
    assert {n for n, c in contracts.items() if c.rewards == "token"} == {"gae", "reinforce_pp"}
    assert ADVANTAGES.get("grpo").obj is grpo


# --- GRPO and Dr. GRPO ----------------------------------------------------------------------------

def test_grpo_by_hand():
    """Row [1, 2, 3]: mean 2, sample std √((1 + 0 + 1)/2) = 1 → [−1, 0, 1]/(1 + ε).
    Row [0, 0, 3]: mean 1, sample std √((1 + 1 + 4)/2) = √3 → [−1, −1, 2]/(√3 + ε)."""
    out = grpo(t([1, 2, 3], [0, 0, 3]))
    s3 = math.sqrt(3) + EPS
    expected = [[-1 / (1 + EPS), 0.0, 1 / (1 + EPS)], [-1 / s3, -1 / s3, 2 / s3]]
    assert_close(out, expected)
    assert out.shape == (2, 3)


def test_grpo_batch_scale_uses_group_means_and_one_batch_std():
    """scale="batch": the centring is still per group (TRL), the std is over all six rewards:
    mean 1.5, squared deviations .25 .25 2.25 2.25 2.25 2.25 = 9.5, /5 → σ = √1.9.
    So batch/group for row 0 is (1 + ε)/(√1.9 + ε), for row 1 (√3 + ε)/(√1.9 + ε)."""
    rewards = t([1, 2, 3], [0, 0, 3])
    batch, group = grpo(rewards, scale="batch"), grpo(rewards, scale="group")
    sb = math.sqrt(1.9) + EPS
    assert_close(batch, [[-1 / sb, 0, 1 / sb], [-1 / sb, -1 / sb, 2 / sb]])
    assert (batch[0, 2] / group[0, 2]).item() == pytest.approx((1 + EPS) / sb, rel=1e-12)
    assert (batch[1, 2] / group[1, 2]).item() == pytest.approx((math.sqrt(3) + EPS) / sb, rel=1e-12)


def test_grpo_constant_group_and_single_sample_give_zero_not_nan():
    """A constant group has std 0: (r − r̄)/(0 + ε) = 0. G = 1 has no std at all: taken as 0."""
    out = grpo(t([5, 5, 5], [1, 2, 4]))
    assert out[0].tolist() == [0.0, 0.0, 0.0] and torch.isfinite(out).all()
    assert grpo(t([3.0], [7.0])).tolist() == [[0.0], [0.0]]
    assert grpo(t([3.0]), scale="batch").tolist() == [[0.0]]


def test_dr_grpo_and_scale_none_only_centre():
    """Dr. GRPO: r − r̄ with no std: [0, 0, 3] → [−1, −1, 2]."""
    rewards = t([1, 2, 3], [0, 0, 3])
    assert dr_grpo(rewards).tolist() == [[-1.0, 0.0, 1.0], [-1.0, -1.0, 2.0]]
    assert torch.equal(grpo(rewards, scale="none"), dr_grpo(rewards))


def test_nan_and_bad_shapes_are_clear_errors():
    """A None reward reaching the estimator (as NaN) is a caller bug: say so, do not propagate."""
    with pytest.raises(ValueError, match=r"not finite .*\(0, 1\)"):
        grpo(t([1, float("nan"), 3]))
    with pytest.raises(ValueError, match="not finite"):
        rloo(t([1, float("inf")]))
    with pytest.raises(ValueError, match=r"\(P, G\)"):
        grpo(torch.ones(4))
    with pytest.raises(ValueError, match="scale"):
        grpo(t([1, 2]), scale="global")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not finite"):
        reinforce_pp(t([0, float("nan")]), torch.tensor([[True, True]]))


# --- RLOO -----------------------------------------------------------------------------------------

def test_rloo_by_hand():
    """[1, 2, 3]: baselines (2 + 3)/2, (1 + 3)/2, (1 + 2)/2 = 2.5, 2, 1.5 → [−1.5, 0, 1.5]."""
    assert rloo(t([1, 2, 3])).tolist() == [[-1.5, 0.0, 1.5]]


def test_rloo_baseline_excludes_the_sample():
    """r_i − mean_{j≠i} r_j = G/(G − 1)·(r_i − r̄): the sample's own reward is not in its baseline.
    Checked against the explicit leave-one-out mean too."""
    rewards = torch.randn(4, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = rloo(rewards)
    g = rewards.shape[1]
    assert torch.allclose(out, g / (g - 1) * (rewards - rewards.mean(1, keepdim=True)), atol=1e-12)
    explicit = torch.stack([rewards[:, i] - rewards[:, [j for j in range(g) if j != i]].mean(1) for i in range(g)], 1)
    assert torch.allclose(out, explicit, atol=1e-12)


def test_rloo_needs_two_samples_and_normalizes_over_the_batch():
    """G = 1 has no leave-one-out baseline. normalize: mean 0 and sample std σ/(σ + ε) ≈ 1."""
    with pytest.raises(ValueError, match="at least 2"):
        rloo(t([1.0], [2.0]))
    rewards = torch.randn(3, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = rloo(rewards, normalize=True)
    raw = rloo(rewards)
    assert out.mean().item() == pytest.approx(0.0, abs=1e-12)
    sigma = raw.std().item()
    assert out.std().item() == pytest.approx(sigma / (sigma + EPS), rel=1e-12)


# --- token rewards and REINFORCE++ --------------------------------------------------------------

def test_token_rewards_put_the_reward_on_the_last_active_token_and_kl_everywhere():
    """Row 0 (3 tokens): [−c·k, −c·k, r − c·k]; row 1 (1 token): [r − c·k, 0, 0]; row 2 (none): zeros."""
    mask = ragged_mask([3, 1, 0], 4)
    kl = torch.full((3, 4), 0.5, dtype=torch.float64)
    out = token_rewards(torch.tensor([2.0, -1.0, 7.0], dtype=torch.float64), mask, kl, kl_coef=0.1)
    assert_close(out, [[-0.05, -0.05, 1.95, 0], [-1.05, 0, 0, 0], [0, 0, 0, 0]])
    assert token_rewards(torch.tensor([2.0]), ragged_mask([2], 3)).tolist() == [[0.0, 2.0, 0.0]]
    with pytest.raises(ValueError, match="kl_per_token"):
        token_rewards(torch.tensor([2.0]), ragged_mask([2], 3), kl_coef=0.1)


def test_reinforce_pp_by_hand():
    """Rewards 1 (2 tokens) and 0 (1 token), γ = 1, no KL: returns on active tokens [1, 1, 0];
    mean 2/3, variance (1/9 + 1/9 + 4/9)/3 = 2/9 → A = [1/√2, 1/√2, −√2], 0 off the mask."""
    mask = ragged_mask([2, 1], 3)
    out = reinforce_pp(token_rewards(torch.tensor([1.0, 0.0], dtype=torch.float64), mask), mask)
    r = 1 / math.sqrt(2)
    assert_close(out, [[r, r, 0], [-math.sqrt(2), 0, 0]])


def test_reinforce_pp_is_normalised_over_active_tokens():
    """Mean 0 and (divisor-n) std 1 over the active tokens of the whole batch; 0 off the mask."""
    gen = torch.Generator().manual_seed(2)
    mask = ragged_mask([5, 2, 7, 1], 7)
    rewards = token_rewards(torch.randn(4, generator=gen, dtype=torch.float64), mask,
                            torch.rand(4, 7, generator=gen, dtype=torch.float64), kl_coef=0.3)
    out = reinforce_pp(rewards, mask)
    active = out[mask]
    assert active.mean().item() == pytest.approx(0.0, abs=1e-12)
    assert active.std(correction=0).item() == pytest.approx(1.0, abs=1e-12)
    assert (out[~mask] == 0).all()


def test_reinforce_pp_returns_are_the_kl_penalised_reward_to_go():
    """γ = 1: G_t = r − c Σ_{k≥t} KL_k (REINFORCE++'s token advantage); γ = 0.5: the discounted
    sum from a plain loop. reinforce_pp is their whitening; a baseline b shifts every G_t by −b."""
    gen = torch.Generator().manual_seed(3)
    mask = ragged_mask([4, 3], 4)
    seq = torch.tensor([1.5, -0.5], dtype=torch.float64)
    kl = torch.rand(2, 4, generator=gen, dtype=torch.float64)
    per_token = token_rewards(seq, mask, kl, kl_coef=0.2)

    def whiten(x: torch.Tensor) -> torch.Tensor:
        a = x[mask]
        return torch.where(mask, (x - a.mean()) / a.std(correction=0), 0.0)

    to_go = torch.zeros(2, 4, dtype=torch.float64)
    for b, n in enumerate([4, 3]):
        for s in range(n):
            to_go[b, s] = seq[b] - 0.2 * kl[b, s:n].sum()
    assert torch.allclose(reinforce_pp(per_token, mask), whiten(to_go), atol=1e-12)
    baseline = torch.tensor([0.25, -1.0], dtype=torch.float64)
    assert torch.allclose(reinforce_pp(per_token, mask, baseline=baseline),
                          whiten(to_go - baseline[:, None]), atol=1e-12)
    discounted = torch.zeros(2, 4, dtype=torch.float64)
    for b, n in enumerate([4, 3]):
        for s in range(n):
            discounted[b, s] = sum(0.5 ** (k - s) * float(per_token[b, k]) for k in range(s, n))
    assert torch.allclose(reinforce_pp(per_token, mask, gamma=0.5), whiten(discounted), atol=1e-12)


def test_reinforce_pp_baseline_subtracts_the_group_mean():
    """It equals reinforce_pp on r − r̄_p, so adding a constant to a group's rewards changes nothing
    (without the baseline, the shifted group would move the global normalisation)."""
    gen = torch.Generator().manual_seed(4)
    rewards = torch.randn(2, 3, generator=gen, dtype=torch.float64)
    mask = ragged_mask([3, 1, 4, 2, 2, 4], 4)
    out = reinforce_pp_baseline(rewards, mask)
    centred = (rewards - rewards.mean(1, keepdim=True)).reshape(-1)
    assert torch.allclose(out, reinforce_pp(token_rewards(centred, mask), mask), atol=1e-12)
    shifted = rewards + torch.tensor([[10.0], [-3.0]], dtype=torch.float64)
    assert torch.allclose(reinforce_pp_baseline(shifted, mask), out, atol=1e-12)
    assert not torch.allclose(reinforce_pp(token_rewards(shifted.reshape(-1), mask), mask), out, atol=1e-3)
    with pytest.raises(ValueError, match=r"\(P·G, T\)"):
        reinforce_pp_baseline(rewards, mask[:4])


# --- GAE ------------------------------------------------------------------------------------------

def slow_gae(rewards, values, lengths, gamma, lam):
    """The textbook recursion, one row and one token at a time, in Python floats."""
    advantages = [[0.0] * rewards.shape[1] for _ in lengths]
    for b, n in enumerate(lengths):
        running = 0.0
        for s in reversed(range(n)):
            next_value = float(values[b, s + 1]) if s + 1 < n else 0.0
            delta = float(rewards[b, s]) + gamma * next_value - float(values[b, s])
            running = delta + gamma * lam * running
            advantages[b][s] = running
    return torch.tensor(advantages, dtype=torch.float64)


@pytest.mark.parametrize(("gamma", "lam"), [(1.0, 0.95), (0.9, 0.8), (0.99, 1.0), (1.0, 0.0)])
def test_gae_equals_the_slow_loop(gamma, lam):
    """Vectorised GAE = the per-token loop on ragged completions; returns = advantages + values."""
    gen = torch.Generator().manual_seed(5)
    lengths = [6, 2, 4, 1]
    mask = ragged_mask(lengths, 6)
    rewards = torch.randn(4, 6, generator=gen, dtype=torch.float64)
    values = torch.randn(4, 6, generator=gen, dtype=torch.float64)
    advantages, returns = gae(rewards, values, mask, gamma=gamma, lam=lam)
    expected = slow_gae(rewards, values, lengths, gamma, lam)
    assert torch.allclose(advantages, expected, atol=1e-12)
    assert torch.allclose(returns, torch.where(mask, expected + values, 0.0), atol=1e-12)


def test_gae_lambda_one_is_reward_to_go_minus_values():
    """γ = λ = 1: Â_t = Σ_{k≥t} r_k − V_t (the values telescope), so returns = the reward to go."""
    gen = torch.Generator().manual_seed(6)
    mask = ragged_mask([5, 3], 5)
    rewards = torch.where(mask, torch.randn(2, 5, generator=gen, dtype=torch.float64), 0.0)
    values = torch.randn(2, 5, generator=gen, dtype=torch.float64)
    advantages, returns = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    to_go = rewards.flip(-1).cumsum(-1).flip(-1)
    assert torch.allclose(returns, torch.where(mask, to_go, 0.0), atol=1e-12)
    assert torch.allclose(advantages, torch.where(mask, to_go - values, 0.0), atol=1e-12)


def test_gae_rejects_a_mask_with_holes():
    """GAE bootstraps from the next token's value, so an active token after padding is an error."""
    with pytest.raises(ValueError, match="right-padded"):
        gae(torch.zeros(1, 3), torch.zeros(1, 3), torch.tensor([[True, False, True]]))


# --- unscorable completions (valid=False) ----------------------------------------------------------

NAN = float("nan")


def test_grpo_with_invalid_entries_equals_grpo_on_the_valid_ones():
    """valid=False entries are outside every statistic: row [1, NaN, 3, 5] gets the advantages of
    [1, 3, 5] (mean 3, std 2) at its valid places and 0 at the invalid one."""
    rewards = t([1, NAN, 3, 5], [2, 2, NAN, NAN])
    valid = ~rewards.isnan()
    out = grpo(rewards, valid=valid)
    expected_first = grpo(t([1, 3, 5]))[0].tolist()
    assert_close(out, [[expected_first[0], 0.0, expected_first[1], expected_first[2]], [0, 0, 0, 0]])
    assert_close(dr_grpo(rewards, valid=valid), [[-2, 0, 0, 2], [0, 0, 0, 0]])


def test_grpo_batch_scale_is_one_std_over_all_valid_rewards():
    """Batch scale with an invalid entry: centred per group on its valid members, divided by the
    std of the 5 valid rewards {1, 3, 5, 2, 4} (mean 3, Bessel variance 10/4)."""
    rewards = t([1, 3, 5], [2, NAN, 4])
    out = grpo(rewards, scale="batch", valid=~rewards.isnan())
    sigma = math.sqrt(10 / 4)
    assert_close(out, [[-2 / (sigma + EPS), 0, 2 / (sigma + EPS)], [-1 / (sigma + EPS), 0, 1 / (sigma + EPS)]])


def test_rloo_with_invalid_entries_uses_valid_siblings_only():
    """[4, NaN, 2, 0]: baselines (2+0)/2, —, (4+0)/2, (4+2)/2 → 3, 0, 0, −3; a lone valid
    completion has no sibling and gets 0."""
    rewards = t([4, NAN, 2, 0], [7, NAN, NAN, NAN])
    assert_close(rloo(rewards, valid=~rewards.isnan()), [[3, 0, 0, -3], [0, 0, 0, 0]])


def test_reinforce_pp_baseline_masks_invalid_rows():
    """The invalid completion's row carries no token and no advantage; the others are centred on
    the valid members' mean, exactly as if the invalid one had never been sampled."""
    rewards = t([1, NAN, 3])
    mask = ragged_mask([2, 3, 1], 3)
    out = reinforce_pp_baseline(rewards, mask, valid=~rewards.isnan())
    alone = reinforce_pp_baseline(t([1, 3]), mask[[0, 2]])
    assert torch.all(out[1] == 0)
    torch.testing.assert_close(out[[0, 2]], alone, rtol=0, atol=1e-12)


def test_valid_must_match_the_rewards():
    with pytest.raises(ValueError, match="valid must be shaped"):
        grpo(t([1, 2]), valid=torch.ones(2, dtype=torch.bool))


def test_gae_whiten_normalises_advantages_but_not_returns():
    """whiten=True: the advantages over active tokens have mean 0 and (divisor-n) std 1; the
    returns stay raw advantages + values."""
    rewards = t([0, 0, 1], [0, 2, 0])
    values = t([0.5, 0.2, 0.1], [0.3, 0.0, 0.0])
    mask = ragged_mask([3, 2], 3)
    raw, returns = gae(rewards, values, mask, gamma=1.0, lam=0.9)
    white, same_returns = gae(rewards, values, mask, gamma=1.0, lam=0.9, whiten=True)
    torch.testing.assert_close(same_returns, returns, rtol=0, atol=1e-12)
    active = white[mask]
    assert float(active.mean()) == pytest.approx(0.0, abs=1e-12)
    assert float(active.std(correction=0)) == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(white[mask], (raw[mask] - raw[mask].mean()) / raw[mask].std(correction=0))
