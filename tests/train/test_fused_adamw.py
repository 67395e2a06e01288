"""The trainer's AdamW is the fused kernel where it applies, and steps like the plain loop."""

from __future__ import annotations

import pytest
import torch

from alignlab.train.loop import _fusable, allocate_adamw_state


def test_fused_adamw_matches_the_single_tensor_loop() -> None:
    torch.manual_seed(0)
    shapes = [(7, 5), (5,), (3, 4, 2)]
    start = [torch.randn(s) for s in shapes]
    results = []
    for fused in (None, True):
        params = [torch.nn.Parameter(t.clone()) for t in start]
        assert _fusable(params, sharded=False) is True
        optimizer = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1, fused=fused)
        g = torch.Generator().manual_seed(1)
        for _ in range(5):
            for p in params:
                p.grad = torch.randn(p.shape, generator=g)
            optimizer.step()
        results.append([p.detach() for p in params])
    for plain, fused in zip(*results, strict=True):
        torch.testing.assert_close(fused, plain, atol=1e-6, rtol=1e-6)


def test_sharded_or_integer_parameters_keep_the_default_implementation() -> None:
    floats = [torch.nn.Parameter(torch.zeros(3))]
    assert _fusable(floats, sharded=True) is None
    assert _fusable([torch.zeros(3, dtype=torch.long)], sharded=False) is None


@pytest.mark.parametrize("fused", [None, True])
def test_moments_allocated_up_front_train_bit_identically(fused: bool | None) -> None:
    torch.manual_seed(0)
    start = [torch.randn(6, 3), torch.randn(4)]
    results = []
    for early in (False, True):
        params = [torch.nn.Parameter(t.clone()) for t in start]
        optimizer = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1, fused=fused)
        if early:
            allocate_adamw_state(optimizer)
            assert all(optimizer.state[p]["exp_avg"].shape == p.shape for p in params)
        g = torch.Generator().manual_seed(1)
        for _ in range(4):
            for p in params:
                p.grad = torch.randn(p.shape, generator=g)
            optimizer.step()
        results.append(([p.detach().clone() for p in params], optimizer.state_dict()))
    (lazy, lazy_state), (early_params, early_state) = results
    assert all(torch.equal(a, b) for a, b in zip(lazy, early_params, strict=True))
    for key in lazy_state["state"]:
        for name, value in lazy_state["state"][key].items():
            other = early_state["state"][key][name]
            assert value.dtype == other.dtype and value.device == other.device and torch.equal(value, other), name
