"""A process's share of the work, as the metrics pass it around: its rank, how many processes
there are, and how to sum a tensor over them (the identity in one process). Plain data: only the
loop and the commands know Accelerate, and they make one with `Dist.of(accelerator)`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Reduce = Callable[[torch.Tensor], torch.Tensor]


def identity(t: torch.Tensor) -> torch.Tensor:
    return t


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    reduce: Reduce = identity  # sums a tensor over the ranks (every rank gets the sum)

    def part(self, n: int) -> range:
        """This rank's contiguous share of n items: [n*r/W, n*(r+1)/W)."""
        return range(n * self.rank // self.world_size, n * (self.rank + 1) // self.world_size)

    @classmethod
    def of(cls, accelerator) -> Dist:
        """The share of a process of an Accelerate run."""
        return cls(accelerator.process_index, accelerator.num_processes, lambda t: accelerator.reduce(t, "sum"))


ONE = Dist()  # a single process does all the work
