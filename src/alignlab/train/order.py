"""Which examples each optimizer step reads: a seeded permutation per epoch, sharded by rank.

Example: ``order = ExampleOrder(size=512, batch_size=8, seed=0); order.batch(epoch=0, index=3)``

:class:`PackedOrder` is the same over rows of packed examples (SFT packing).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ExampleOrder:
    """Which examples each step reads: a seeded permutation per epoch, sharded by rank.

    The position (epoch, batches consumed) is all a checkpoint needs to resume the data exactly,
    with no sampler state to pickle. A last partial batch too small to give every rank
    ``min_batch`` examples (an empty rank would stall DDP; KTO's KL estimate needs two) is merged
    into the batch before it, so no example is dropped.
    """

    size: int
    batch_size: int
    seed: int
    rank: int = 0
    world_size: int = 1
    min_batch: int = 1

    @property
    def _global(self) -> int:
        return self.batch_size * self.world_size

    def _merged(self) -> bool:
        full, rest = divmod(self.size, self._global)
        return full > 0 and 0 < rest < self.min_batch * self.world_size

    def batches_per_epoch(self) -> int:
        full, rest = divmod(self.size, self._global)
        return full if rest == 0 or self._merged() else full + 1

    def _window(self, index: int) -> tuple[int, int]:
        start = index * self._global
        last = index == self.batches_per_epoch() - 1
        end = self.size if last and self._merged() else min(self.size, start + self._global)
        return start, end

    def global_count(self, epoch: int, index: int) -> int:
        """Examples of the ``index``-th batch of ``epoch`` over all ranks."""
        start, end = self._window(index)
        return max(0, end - start)

    def global_batch(self, epoch: int, index: int) -> list[int]:
        """Example indices of the ``index``-th batch of ``epoch`` over all ranks."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(self.size, generator=generator)
        start, end = self._window(index)
        return order[start:end].tolist()

    def batch(self, epoch: int, index: int) -> list[int]:
        """Example indices of this rank's ``index``-th batch of ``epoch``."""
        return self.global_batch(epoch, index)[self.rank::self.world_size]


@dataclass
class PackedOrder:
    """SFT packing: the same seeded, rank-sharded order over fixed bins of examples (rows, from
    best-fit decreasing) instead of single examples; ``batch_size`` counts rows.

    A batch is the examples of its rows, row after row, and ``row_of`` says which row each
    example fills, so the step can lay them out; counts are in examples, so the loss is still
    the mean over the step's examples (and equal to the unpacked loss on the same examples)."""

    bins: list[list[int]]
    batch_size: int
    seed: int
    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        self.rows = ExampleOrder(len(self.bins), self.batch_size, self.seed, self.rank, self.world_size)
        self.row_of = {example: row for row, members in enumerate(self.bins) for example in members}

    def batches_per_epoch(self) -> int:
        return self.rows.batches_per_epoch()

    def global_count(self, epoch: int, index: int) -> int:
        return sum(len(self.bins[row]) for row in self.rows.global_batch(epoch, index))

    def batch(self, epoch: int, index: int) -> list[int]:
        return [example for row in self.rows.batch(epoch, index) for example in self.bins[row]]
