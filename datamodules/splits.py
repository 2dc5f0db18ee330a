"""Seeded splits and class balancing of datasets, from their labels alone (no image decoding)."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch.utils.data import ConcatDataset, Dataset, Subset, TensorDataset

BALANCE_MODES = ("undersample",)


def labels_of(dataset: Dataset) -> torch.Tensor:
    """The integer labels of every item, without loading images: read from a ``labels``
    tensor (UInt8Images, ImageFiles) or ``targets`` list (torchvision), composed through
    Subset and ConcatDataset. Other datasets need a ``labels`` attribute."""
    if isinstance(dataset, Subset):
        return labels_of(dataset.dataset)[torch.as_tensor(dataset.indices, dtype=torch.long)]
    if isinstance(dataset, ConcatDataset):
        return torch.cat([labels_of(d) for d in dataset.datasets])
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[1].long()
    for attribute in ("labels", "targets"):
        if hasattr(dataset, attribute):
            return torch.as_tensor(getattr(dataset, attribute), dtype=torch.long)
    raise TypeError(f"{type(dataset).__name__} has no `labels`: give it a `labels` tensor (one int per item) "
                    "to use balance or in-memory mode")


def seeded_subset(dataset: Dataset, size: Optional[int], seed: int) -> Dataset:
    """A fixed random subset of ``size`` items in its seeded random order (all items, in index order,
    when size is None or not smaller than the dataset). Datamodules' train/test subsets, evaluation
    subsets and gallery images all come from here; with one seed a smaller subset is a prefix of a larger."""
    if size is None or size >= len(dataset):
        return dataset
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    return Subset(dataset, order[:size].tolist())


def check_fractions(split: Sequence[float]) -> tuple[float, float, float]:
    """``split`` as three non-negative (train, val, test) fractions summing to 1."""
    fractions = tuple(float(f) for f in split)
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"split must be three non-negative fractions (train, val, test) summing to 1, "
                         f"e.g. [0.7, 0.1, 0.2]; got {list(fractions)}")
    return fractions


def split_sizes(n: int, split: Sequence[float]) -> tuple[int, int, int]:
    """Train/val/test counts for ``n`` items: val and test rounded, train gets the rest."""
    n_val, n_test = round(n * split[1]), round(n * split[2])
    return n - n_val - n_test, n_val, n_test


def fraction_split(n: int, split: Sequence[float], seed: int) -> dict[str, list[int]]:
    """Indices of a seeded random train/val/test split of ``n`` items by fractions."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_train, n_val, _ = split_sizes(n, split)
    return {"train": order[:n_train], "val": order[n_train:n_train + n_val], "test": order[n_train + n_val:]}


def undersample(dataset: Dataset, seed: int) -> Subset:
    """Every class present cut to the smallest class's count: a seeded random choice per
    class, kept in dataset order."""
    labels = labels_of(dataset)
    if len(labels) == 0:
        raise ValueError("cannot balance an empty training split")
    gen = torch.Generator().manual_seed(seed)
    classes = labels.unique()
    per_class = min(int((labels == c).sum()) for c in classes)
    keep = []
    for c in classes.tolist():
        members = (labels == c).nonzero().flatten()
        keep.append(members[torch.randperm(len(members), generator=gen)[:per_class]])
    return Subset(dataset, torch.cat(keep).sort().values.tolist())
