"""Samplers that share a split out over processes.

- :class:`ResumableSampler`, the training order: seeded per epoch, resumable mid-epoch. The order of epoch e is a permutation seeded by (run seed, e), shared out over the
processes like ``DistributedSampler`` (which this sampler is, so Lightning keeps it under
DDP). The datamodule checkpoints the position (epoch, batches already trained on in it);
a run resumed from it starts the sampler there, so it continues with the very next batch
of the same permutation, as the uninterrupted run did.
- :class:`UnpaddedDistributedSampler`, for evaluation outside ``fit``: every item exactly once
  over all processes, none padded.
"""
from __future__ import annotations

from typing import Iterator

from torch.utils.data import Dataset, DistributedSampler


class ResumableSampler(DistributedSampler):
    """Seeded shuffle per epoch (``seed + epoch``) over ``num_replicas`` processes; the next
    epoch it starts after its first ``skip`` batches of ``batch_size`` (set on resume)."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int, batch_size: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.batch_size = batch_size
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        skip, self.skip = self.skip, 0
        return iter(indices[skip * self.batch_size:])

    def position(self, batches_done: int, batches_per_epoch: float) -> dict[str, int]:
        """The checkpointed position after ``batches_done`` batches of the current epoch."""
        if batches_done >= batches_per_epoch:  # saved at the end of an epoch: resume at the next
            return {"epoch": self.epoch + 1, "batches_done": 0}
        return {"epoch": self.epoch, "batches_done": int(batches_done)}

    def resume(self, position: dict[str, int]) -> None:
        self.set_epoch(position["epoch"])
        self.skip = position["batches_done"]


class UnpaddedDistributedSampler(DistributedSampler):
    """Process ``rank`` of ``num_replicas`` gets items rank, rank + num_replicas, ... in order:
    every item exactly once over all processes, none padded. A DistributedSampler, so
    Lightning keeps it rather than substituting its padding one."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        self.num_samples = len(range(rank, len(dataset), num_replicas))
        self.total_size = len(dataset)

    def __iter__(self):
        return iter(range(self.rank, len(self.dataset), self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples
