"""Which examples each optimizer step reads: a seeded permutation per epoch, sharded by rank.

Example: ``order = ExampleOrder(size=512, batch_size=8, seed=0); order.batch(epoch=0, index=3)``
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

    def batch(self, epoch: int, index: int) -> list[int]:
        """Example indices of this rank's ``index``-th batch of ``epoch``."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(self.size, generator=generator)
        start, end = self._window(index)
        return order[start:end][self.rank::self.world_size].tolist()
