"""Best-of-N at a matched token budget, by hand."""

from __future__ import annotations

import torch

from alignlab.testbed.search import _best_within


def test_best_of_n_draws_until_its_tokens_reach_the_budget():
    truth = torch.tensor([[0.0, 5.0, 1.0, 9.0],
                          [3.0, 1.0, 2.0, 0.0],
                          [1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)
    tokens = torch.tensor([[4.0, 4.0, 4.0, 4.0],
                           [10.0, 1.0, 1.0, 1.0],
                           [2.0, 2.0, 2.0, 2.0]], dtype=torch.float64)
    # row 0: 8 tokens are reached by the second sample (4 + 4), so the best of two: 5
    # row 1: the first sample alone exceeds 3 tokens: just it, 3
    # row 2: 100 tokens are never reached: all four samples, 4, and the prompt counts as capped
    best, capped = _best_within(truth, tokens, torch.tensor([8.0, 3.0, 100.0], dtype=torch.float64))
    assert best.tolist() == [5.0, 3.0, 4.0] and capped == 1
    best, capped = _best_within(truth, tokens, torch.tensor([9.0, 0.0, 8.0], dtype=torch.float64))
    assert best.tolist() == [5.0, 3.0, 4.0] and capped == 0  # 9 tokens need a third sample in row 0: 5 still
    best, _ = _best_within(truth, tokens, torch.tensor([13.0, 11.0, 1.0], dtype=torch.float64))
    assert best.tolist() == [9.0, 3.0, 1.0]
