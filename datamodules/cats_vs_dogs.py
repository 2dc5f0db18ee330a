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

from pytorch_lightning.utilities import rank_zero_warn

from datamodules.base import ClassificationDataModule
from datamodules.image_files import IMAGENET_MEAN, IMAGENET_STD, CorruptImageError, ImageFiles, is_readable_image
from datamodules.missing import DatasetNotFoundError


JPEG_SUFFIXES = {".jpg", ".jpeg"}


@lru_cache(maxsize=8)
def _scan(folder: str, _stamp: tuple) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(readable, skipped) image paths of one class folder, sorted. Cached per folder and
    folder modification time (files added or removed invalidate it)."""
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in JPEG_SUFFIXES and p.is_file())
    readable, skipped = [], []
    for p in files:
        (readable if is_readable_image(p) else skipped).append(str(p))
    return tuple(readable), tuple(skipped)


class CatsVsDogsDataModule(ClassificationDataModule):
    """Kaggle Cats vs Dogs (Asirra), binary: 0 = cat, 1 = dog.

    Args (besides the base ones, see ClassificationDataModule): image_size (square side
    the images are resized to), split (train, val, test fractions of all readable images;
    required: there is no official test set). The base class's ``val_size`` is not used.
    """

    num_classes = 2
    classes = ("Cat", "Dog")
    mean = IMAGENET_MEAN
    std = IMAGENET_STD

    def __init__(self, data_dir: str = "data", batch_size: int = 64, image_size: int = 64,
                 split: Sequence[float] = (0.7, 0.1, 0.2), num_workers: int = 2, skip_corrupt: bool = True, **kwargs):
        if split is None:
            raise ValueError("Cats vs Dogs has no official test split: split must be [train, val, test] "
                             "fractions, e.g. [0.7, 0.1, 0.2]")
        super().__init__(data_dir=data_dir, batch_size=batch_size, val_size=0, split=split,
                         num_workers=num_workers, skip_corrupt=skip_corrupt, **kwargs)
        self.image_size = image_size
        self.input_shape = (3, image_size, image_size)
        self.root = Path(data_dir) / "PetImages"
        missing = [c for c in self.classes if not (self.root / c).is_dir()]
        if missing:
            raise self._not_found()
        self._files: Optional[ImageFiles] = None
        self.skipped: list[str] = []

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
            if skipped and not self.skip_corrupt:
                raise CorruptImageError(f"Cats vs Dogs: {len(skipped)} image file(s) cannot be decoded, e.g. "
                                        f"{skipped[0]}: delete them, or set --data.skip_corrupt true to skip them")
            if not paths:
                raise self._not_found()
            self.skipped = list(skipped)
            if skipped:
                rank_zero_warn(f"Cats vs Dogs: skipped {len(skipped)} unreadable image file(s) of "
                               f"{len(skipped) + len(paths)} under {self.root}")
            self._files = ImageFiles(paths, labels, self.image_size)
        return self._files

    def load_all(self) -> ImageFiles:
        """The pool ``split`` divides: every readable image (there is no official test set)."""
        return self.all_images()

    def describe(self) -> dict:
        return {**super().describe(), "image_size": self.image_size, "skipped": len(self.skipped)}
