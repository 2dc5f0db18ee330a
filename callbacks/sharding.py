"""The evaluation samples of one process: the same global batches on 1 or N processes.

Evaluations take a fixed, seeded subset of a split (or all of it), cut it into global
batches of ``batch_size`` in index order, and give process ``rank`` of ``world`` the
batches rank, rank + world, ... Nothing is padded or duplicated, so counts summed over
processes equal a one-process run's, and per-batch seeds (from the global batch index)
make attacks independent of the number of processes.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch.utils.data import DataLoader, Dataset, Subset


class NumberedBatches:
    """Iterate a loader's batches together with their global batch indices."""

    def __init__(self, indices: list[int], loader: DataLoader):
        self.indices, self.loader = indices, loader

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self):
        return zip(self.indices, self.loader)


def evaluation_subset(dataset: Dataset, num_samples: Optional[int], seed: int) -> Dataset:
    """A fixed random subset of ``num_samples`` items, in index order (all items when None)."""
    n = len(dataset) if num_samples is None else min(num_samples, len(dataset))
    if n == len(dataset):
        return dataset
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n]
    return Subset(dataset, order.sort().values.tolist())


def global_batches(dataset: Dataset, num_samples: Optional[int], batch_size: int, seed: int,
                   rank: int, world: int) -> NumberedBatches:
    """Process ``rank``'s share of the global batches, as (global batch index, batch) pairs."""
    dataset = evaluation_subset(dataset, num_samples, seed)
    n = len(dataset)
    mine = list(range(rank, -(-n // batch_size), world))
    batches = [list(range(b * batch_size, min(n, (b + 1) * batch_size))) for b in mine]
    return NumberedBatches(mine, DataLoader(dataset, batch_sampler=batches))
