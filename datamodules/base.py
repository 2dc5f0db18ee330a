"""The shared shape of every datamodule: [0, 1] pixels, a deterministic split, loaders.

Subclasses provide the training pool and the test set; this base holds out a
deterministic validation part of the pool (seeded), optionally keeps fixed subsets,
and builds the loaders. ``batch_size`` is per process: under DDP with N processes the
effective batch is N x batch_size. Images are float tensors in [0, 1], never
normalised; ``mean`` and ``std`` are exposed for the model's normalisation layer.
"""
from __future__ import annotations

from typing import Optional, Sequence

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Subset

SPLITS = ("train", "val", "test")


class UInt8Images(Dataset):
    """In-memory images stored as uint8 (N, C, H, W); items are float [0, 1] tensors."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"expected uint8 images shaped (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        self.images, self.labels = images, labels.long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i].float().div_(255), self.labels[i]


def seeded_subset(dataset: Dataset, size: Optional[int], seed: int) -> Dataset:
    """A fixed random subset of ``size`` items (all items when size is None)."""
    if size is None or size >= len(dataset):
        return dataset
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    return Subset(dataset, order[:size].tolist())


class ClassificationDataModule(pl.LightningDataModule):
    """Base datamodule. Subclasses set ``num_classes``, ``mean``, ``std``, ``input_shape``
    and implement :meth:`load_train_pool` and :meth:`load_test`.

    Args:
        data_dir: where the dataset lives (or is downloaded to when online).
        batch_size: per-process batch size.
        val_size: images held out from the training pool for validation (seeded).
        train_size, test_size: keep only a fixed random subset (quick runs); None = all.
        num_workers: DataLoader workers per process.
        seed: seed of the validation split and the subsets.
    """

    num_classes: int
    mean: Sequence[float]
    std: Sequence[float]
    input_shape: tuple[int, int, int]

    def __init__(self, data_dir: str = "data", batch_size: int = 128, val_size: int = 5000,
                 train_size: Optional[int] = None, test_size: Optional[int] = None,
                 num_workers: int = 0, seed: int = 0):
        super().__init__()
        self.data_dir = data_dir
        self.batch_size = batch_size
        self.val_size = val_size
        self.train_size = train_size
        self.test_size = test_size
        self.num_workers = num_workers
        self.seed = seed
        self._splits: dict[str, Dataset] = {}

    def load_train_pool(self) -> Dataset:
        raise NotImplementedError

    def load_test(self) -> Dataset:
        raise NotImplementedError

    def setup(self, stage: Optional[str] = None) -> None:
        if stage in (None, "fit", "validate") and "train" not in self._splits:
            pool = self.load_train_pool()
            if not 0 <= self.val_size < len(pool):
                raise ValueError(f"val_size={self.val_size} must be in [0, {len(pool)}) for this training pool")
            order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(self.seed)).tolist()
            self._splits["val"] = Subset(pool, order[: self.val_size])
            self._splits["train"] = seeded_subset(Subset(pool, order[self.val_size:]), self.train_size, self.seed)
        if stage in (None, "test", "predict") and "test" not in self._splits:
            self._splits["test"] = seeded_subset(self.load_test(), self.test_size, self.seed)

    def dataset(self, split: str) -> Dataset:
        """The dataset of ``split`` (train | val | test), loading it if needed."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
        if split not in self._splits:
            self.setup("test" if split == "test" else "fit")
        return self._splits[split]

    def loader(self, dataset: Dataset, shuffle: bool = False, batch_size: Optional[int] = None) -> DataLoader:
        return DataLoader(dataset, batch_size=batch_size or self.batch_size, shuffle=shuffle,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          pin_memory=torch.cuda.is_available())

    def train_dataloader(self):
        return self.loader(self.dataset("train"), shuffle=True)

    def val_dataloader(self):
        return self.loader(self.dataset("val"))

    def test_dataloader(self):
        return self.loader(self.dataset("test"))

    def predict_dataloader(self):
        return self.loader(self.dataset("test"))

    def describe(self) -> dict:
        return {"dataset": type(self).__name__, "data_dir": str(self.data_dir), "num_classes": self.num_classes}
