"""Any image-folder dataset: ``root/train/<class>/<image>`` and ``root/<test_folder>/<class>/<image>``,
and the ImageNet class subset built on it.

The CIFAR-10 JPEG copy in ../shared/datasets extracts to this layout (``test_folder:
test``); ImageNet's train and (class-sorted) val folders are the same layout with
``test_folder: val``. Classes are the sorted sub-folder names of ``train`` (or the
``classes`` given, in that order: a subset); labels are their indices. Images (any depth
under the class folder) are decoded to [0, 1] RGB tensors fitted to ``image_size``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from PIL import Image

from datamodules.base import ClassificationDataModule
from datamodules.image_files import IMAGENET_MEAN, IMAGENET_STD, ImageFiles, image_paths
from datamodules.missing import DatasetNotFoundError


class ImageFolderDataModule(ClassificationDataModule):
    """Args (besides the base ones, see ClassificationDataModule): image_size (square side
    to fit images to; None = the first training image's height, others are resized to it),
    crop_ratio (None = stretch to the square; a ratio = resize the shorter side to
    image_size / crop_ratio and crop the centre), classes (a subset of the class folders,
    in label order; None = all, sorted), test_folder (the folder beside ``train`` holding
    the test split), mean/std (for the model's normaliser; defaults are ImageNet's)."""

    name = "image folder"

    def __init__(self, data_dir: str = "data", batch_size: int = 128, val_size: int = 5000, num_workers: int = 2,
                 image_size: Optional[int] = None, crop_ratio: Optional[float] = None,
                 classes: Optional[Sequence[str]] = None, test_folder: str = "test",
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD, **kwargs):
        super().__init__(data_dir=data_dir, batch_size=batch_size, val_size=val_size, num_workers=num_workers,
                         **kwargs)
        self.root = Path(data_dir)
        self.test_folder = test_folder
        for split in ("train", test_folder):
            if not (self.root / split).is_dir():
                raise self._missing([f"{split}/<class>/<image>"])
        self.classes = self._select_classes(classes)
        missing = [f"{test_folder}/{c}/<image>" for c in self.classes if not (self.root / test_folder / c).is_dir()]
        if missing:
            raise self._missing(missing)
        self.num_classes = len(self.classes)
        self.mean, self.std = tuple(mean), tuple(std)
        self.crop_ratio = crop_ratio
        self.image_size = image_size or self._first_image_size()
        self.input_shape = (3, self.image_size, self.image_size)

    def _missing(self, expected: list[str]) -> DatasetNotFoundError:
        return DatasetNotFoundError(f"{self.name} {self.root}", self.root, expected)

    def available_classes(self) -> list[str]:
        return sorted(p.name for p in (self.root / "train").iterdir() if p.is_dir())

    def _select_classes(self, classes: Optional[Sequence[str]]) -> list[str]:
        available = self.available_classes()
        if not available:
            raise self._missing(["train/<class>/<image>"])
        if classes is None:
            return available
        classes = list(classes)
        if not classes or len(set(classes)) != len(classes):
            raise ValueError(f"classes must be a non-empty list without repeats, got {classes}")
        missing = [f"train/{c}/<image>" for c in classes if c not in available]
        if missing:
            raise self._missing(missing)
        return classes

    def _first_image_size(self) -> int:
        first = next(iter(image_paths(self.root / "train" / self.classes[0])), None)
        if first is None:
            raise self._missing([f"train/{self.classes[0]}/<image>"])
        with Image.open(first) as img:
            return img.size[1]

    def _files(self, split: str) -> ImageFiles:
        paths, labels = [], []
        for label, cls in enumerate(self.classes):
            found = image_paths(self.root / split / cls)
            if not found:
                raise self._missing([f"{split}/{cls}/<image>"])
            paths += found
            labels += [label] * len(found)
        return ImageFiles(paths, labels, self.image_size, self.crop_ratio, self.skip_corrupt)

    def load_train_pool(self) -> ImageFiles:
        return self._files("train")

    def load_test(self) -> ImageFiles:
        return self._files(self.test_folder)

    def describe(self) -> dict:
        return {**super().describe(), "classes": list(self.classes), "image_size": self.image_size,
                "crop_ratio": self.crop_ratio}


class ImageNetSubsetDataModule(ImageFolderDataModule):
    """A class subset of ImageNet (ILSVRC-2012) for ImageNet-pretrained backbones.

    Layout: ``<data_dir>/train/<wnid>/*.JPEG`` and ``<data_dir>/val/<wnid>/*.JPEG`` (the
    official val set sorted into class folders; it is the test split here, and
    ``val_size`` training images are held out for validation). Pick the classes with
    ``classes: [n01440764, ...]`` (label order as listed) or ``num_classes: N`` (the first
    N wnids, sorted). Images get the standard evaluation resize: shorter side to
    image_size / crop_ratio, centre crop of ``image_size`` (224; 299 for InceptionV3).
    """

    name = "ImageNet subset"

    def __init__(self, data_dir: str = "data", batch_size: int = 64, val_size: int = 500, num_workers: int = 4,
                 image_size: int = 224, crop_ratio: Optional[float] = 0.875,
                 classes: Optional[Sequence[str]] = None, num_classes: Optional[int] = None,
                 test_folder: str = "val", **kwargs):
        if classes is not None and num_classes is not None:
            raise ValueError("give either classes (a list of wnids) or num_classes (the first N sorted), not both")
        self._first_n = num_classes
        super().__init__(data_dir=data_dir, batch_size=batch_size, val_size=val_size, num_workers=num_workers,
                         image_size=image_size, crop_ratio=crop_ratio, classes=classes, test_folder=test_folder,
                         mean=IMAGENET_MEAN, std=IMAGENET_STD, **kwargs)

    def _select_classes(self, classes: Optional[Sequence[str]]) -> list[str]:
        if self._first_n is None:
            return super()._select_classes(classes)
        available = self.available_classes()
        if not 0 < self._first_n <= len(available):
            raise ValueError(f"num_classes={self._first_n} must be in [1, {len(available)}] "
                             f"(class folders under {self.root / 'train'})")
        return available[: self._first_n]
