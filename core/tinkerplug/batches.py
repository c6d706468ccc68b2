"""Which examples go into which step: a pure function of (step, seed), so resume is exact."""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class BatchPlan:
    num_examples: int
    batch_size: int
    seed: int

    @property
    def steps_per_epoch(self) -> int:
        # Drop the last partial batch: a smaller batch changes the gradient scale.
        return max(1, self.num_examples // self.batch_size)

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, batch index within the epoch) of ``step``."""
        return divmod(step, self.steps_per_epoch)

    def indices(self, step: int) -> list[int]:
        epoch, batch = self.position(step)
        order = _epoch_order(self.num_examples, self.seed, epoch)
        size = min(self.batch_size, self.num_examples)
        return list(order[batch * size : (batch + 1) * size])


@lru_cache(maxsize=4)
def _epoch_order(n: int, seed: int, epoch: int) -> tuple[int, ...]:
    order = list(range(n))
    random.Random(f"{seed}:{epoch}").shuffle(order)  # a fresh shuffle each epoch
    return tuple(order)
