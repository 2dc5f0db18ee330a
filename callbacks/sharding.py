"""The evaluation samples of one process: the same global batches on 1 or N processes.

Evaluations take a fixed, seeded subset of a split (or all of it:
:func:`datamodules.splits.seeded_subset`), cut it into global batches of ``batch_size``
in the subset's order, and give process ``rank`` of ``world`` the
batches rank, rank + world, ... Nothing is padded or duplicated, so counts summed over
processes equal a one-process run's, and per-batch seeds (from the global batch index)
make attacks independent of the number of processes.
"""
from __future__ import annotations

from typing import Optional

from torch.utils.data import DataLoader, Dataset

from datamodules.splits import seeded_subset


class NumberedBatches:
    """Iterate a loader's batches together with their global batch indices."""

    def __init__(self, indices: list[int], loader: DataLoader):
        self.indices, self.loader = indices, loader

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self):
        return zip(self.indices, self.loader)


def global_batches(dataset: Dataset, num_samples: Optional[int], batch_size: int, seed: int,
                   rank: int, world: int) -> NumberedBatches:
    """Process ``rank``'s share of the global batches, as (global batch index, batch) pairs."""
    dataset = seeded_subset(dataset, num_samples, seed)
    n = len(dataset)
    mine = list(range(rank, -(-n // batch_size), world))
    batches = [list(range(b * batch_size, min(n, (b + 1) * batch_size))) for b in mine]
    return NumberedBatches(mine, DataLoader(dataset, batch_sampler=batches))
