"""Kaggle "Cats vs Dogs": ``<data_dir>/PetImages/{Cat,Dog}/<n>.jpg`` (0 = cat, 1 = dog).

The original Kaggle download holds some corrupt or empty JPEGs. Every file is fully
decoded once when the file list is built; unreadable ones are skipped and counted
(logged, and kept in ``skipped``), never fatal. All readable images are split
train/val/test (70/10/20 by default), deterministically by ``seed``. Images are
decoded lazily, converted to RGB, resized to ``image_size`` x ``image_size`` and
emitted as float tensors in [0, 1]; ``mean``/``std`` are ImageNet's.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Optional, Sequence

import torch
from PIL import Image
from pytorch_lightning.utilities import rank_zero_warn
from torch.utils.data import Dataset, Subset
from torchvision.transforms import functional as TF

from datamodules.base import ClassificationDataModule, seeded_subset
from datamodules.image_files import IMAGENET_MEAN, IMAGENET_STD, ImageFiles
from datamodules.missing import DatasetNotFoundError


JPEG_SUFFIXES = {".jpg", ".jpeg"}


def is_readable_image(path: Path) -> bool:
    """True when PIL can open, verify and fully decode ``path`` (empty, truncated and
    garbage files fail). JPEGs are decoded at reduced scale (draft mode) for speed; the
    whole compressed stream is still read, so truncation is still caught."""
    try:
        if path.stat().st_size == 0:
            return False
        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:
            img.draft("RGB", (16, 16))
            img.load()
        return True
    except Exception:  # noqa: BLE001 - any failure to decode means "skip this file"
        return False


@lru_cache(maxsize=8)
def _scan(folder: str, _stamp: tuple) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(readable, skipped) image paths of one class folder, sorted. Cached per folder and
    folder modification time (files added or removed invalidate it)."""
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in JPEG_SUFFIXES and p.is_file())
    readable, skipped = [], []
    for p in files:
        (readable if is_readable_image(p) else skipped).append(str(p))
    return tuple(readable), tuple(skipped)


def split_sizes(n: int, split: Sequence[float]) -> tuple[int, int, int]:
    """Train/val/test counts for ``n`` items: val and test rounded, train gets the rest."""
    n_val, n_test = round(n * split[1]), round(n * split[2])
    return n - n_val - n_test, n_val, n_test


class CatsVsDogsDataModule(ClassificationDataModule):
    """Kaggle Cats vs Dogs (Asirra), binary: 0 = cat, 1 = dog.

    Args (besides the base ones): image_size (square side the images are resized to),
    split (train, val, test fractions of all readable images; they must sum to 1).
    The base class's ``val_size`` is not used: val comes from ``split``.
    """

    num_classes = 2
    classes = ("Cat", "Dog")
    mean = IMAGENET_MEAN
    std = IMAGENET_STD

    def __init__(self, data_dir: str = "data", batch_size: int = 64, image_size: int = 64,
                 split: Sequence[float] = (0.7, 0.1, 0.2), seed: int = 0, num_workers: int = 2,
                 train_size: Optional[int] = None, test_size: Optional[int] = None):
        super().__init__(data_dir, batch_size, 0, train_size, test_size, num_workers, seed)
        split = tuple(float(f) for f in split)
        if len(split) != 3 or min(split) < 0 or abs(sum(split) - 1) > 1e-6:
            raise ValueError(f"split must be three non-negative fractions summing to 1, got {split}")
        self.split = split
        self.image_size = image_size
        self.input_shape = (3, image_size, image_size)
        self.root = Path(data_dir) / "PetImages"
        missing = [c for c in self.classes if not (self.root / c).is_dir()]
        if missing:
            raise self._not_found()
        self._files: Optional[ImageFiles] = None
        self.skipped: list[str] = []
        self.split_indices: dict[str, list[int]] = {}

    def _not_found(self) -> DatasetNotFoundError:
        return DatasetNotFoundError("Cats vs Dogs (Kaggle PetImages)", Path(self.data_dir),
                                    [f"PetImages/{c}/<n>.jpg" for c in self.classes])

    def all_images(self) -> ImageFiles:
        """Every readable image of both classes (sorted paths per class, cats first)."""
        if self._files is None:
            paths, labels, skipped = [], [], []
            for label, cls in enumerate(self.classes):
                folder = self.root / cls
                if not folder.is_dir():
                    raise self._not_found()
                readable, bad = _scan(str(folder.resolve()), (folder.stat().st_mtime_ns,))
                paths += [Path(p) for p in readable]
                labels += [label] * len(readable)
                skipped += bad
            if not paths:
                raise self._not_found()
            self.skipped = list(skipped)
            if skipped:
                rank_zero_warn(f"Cats vs Dogs: skipped {len(skipped)} unreadable image file(s) of "
                               f"{len(skipped) + len(paths)} under {self.root}")
            self._files = ImageFiles(paths, labels, self.image_size)
        return self._files

    def _split(self) -> None:
        files = self.all_images()
        order = torch.randperm(len(files), generator=torch.Generator().manual_seed(self.seed)).tolist()
        n_train, n_val, _ = split_sizes(len(files), self.split)
        self.split_indices = {"train": order[:n_train], "val": order[n_train:n_train + n_val],
                              "test": order[n_train + n_val:]}

    def setup(self, stage: Optional[str] = None) -> None:
        if not self.split_indices:
            self._split()
        files = self.all_images()
        if stage in (None, "fit", "validate") and "train" not in self._splits:
            self._splits["val"] = Subset(files, self.split_indices["val"])
            self._splits["train"] = seeded_subset(Subset(files, self.split_indices["train"]), self.train_size, self.seed)
        if stage in (None, "test", "predict") and "test" not in self._splits:
            self._splits["test"] = seeded_subset(Subset(files, self.split_indices["test"]), self.test_size, self.seed)

    def load_train_pool(self) -> Dataset:
        """The train part of the split (val is held out by ``split``, not by ``val_size``)."""
        self.setup("fit")
        return Subset(self.all_images(), self.split_indices["train"])

    def load_test(self) -> Dataset:
        self.setup("test")
        return Subset(self.all_images(), self.split_indices["test"])

    def describe(self) -> dict:
        return {**super().describe(), "image_size": self.image_size, "split": list(self.split),
                "skipped": len(self.skipped)}
