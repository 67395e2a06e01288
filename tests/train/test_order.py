"""ExampleOrder: seeded, resumable, sharded; a too-small last batch is merged, never dropped."""

from __future__ import annotations

from alignlab.train.order import ExampleOrder


def test_every_example_once_per_epoch_across_ranks():
    ranks = [ExampleOrder(11, 2, seed=5, rank=r, world_size=2) for r in range(2)]
    per_epoch = ranks[0].batches_per_epoch()
    assert per_epoch == 3  # global batches of 4: 4, 4, 3
    seen = [i for b in range(per_epoch) for order in ranks for i in order.batch(0, b)]
    assert sorted(seen) == list(range(11))
    assert ranks[0].batch(1, 0) != ranks[0].batch(0, 0)  # a new permutation each epoch


def test_small_last_batch_is_merged_not_dropped():
    """33 examples, 2 ranks × 2: the 33rd alone would leave rank 1 empty, so it joins batch 8."""
    ranks = [ExampleOrder(33, 2, seed=0, rank=r, world_size=2) for r in range(2)]
    assert ranks[0].batches_per_epoch() == 8
    assert ranks[0].global_count(0, 7) == 5
    assert sorted(i for b in range(8) for o in ranks for i in o.batch(0, b)) == list(range(33))
    assert all(len(o.batch(0, b)) >= 1 for b in range(8) for o in ranks)


def test_min_batch_two_for_mismatched_pairs():
    """KTO needs two examples per batch: 7 examples in batches of 3 give 3 + 4, not 3 + 3 + 1."""
    order = ExampleOrder(7, 3, seed=0, min_batch=2)
    assert order.batches_per_epoch() == 2
    assert [len(order.batch(0, b)) for b in range(2)] == [3, 4]
    assert ExampleOrder(8, 3, seed=0, min_batch=2).batches_per_epoch() == 3  # 3 + 3 + 2 is fine
