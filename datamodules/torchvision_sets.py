"""MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100, held in memory as uint8 tensors.

Each reads torchvision's on-disk format under ``data_dir`` (idx files in
``<Name>/raw``; CIFAR's python pickles in ``cifar-10-batches-py`` / ``cifar-100-python``)
and is downloaded there by torchvision when online (``download: true``, the default).
Offline, a missing dataset is a :class:`DatasetNotFoundError` naming the folder and the
files expected. The files are read directly, without torchvision's checksum pass.
CIFAR-10 and CIFAR-100 train with the standard random crop (4 px padding) and
horizontal flip by default (``augment``; ``augment: false`` turns it off).
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence, Union

import numpy as np
import torch
from torchvision import datasets
from torchvision.datasets.mnist import read_image_file, read_label_file

from datamodules.augmentations import AugmentSpec
from datamodules.base import ClassificationDataModule
from datamodules.in_memory import UInt8Images
from datamodules.missing import DatasetNotFoundError, missing_files, nothing_created_on_failure

CIFAR_AUGMENT = ({"name": "crop", "padding": 4}, {"name": "flip"})


def read_idx(folder: Path, files: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, 1, H, W) and labels from an idx image file and an idx label file."""
    images, labels = (folder / f for f in files)
    return read_image_file(str(images)).unsqueeze(1).contiguous(), read_label_file(str(labels))


def read_cifar_pickles(folder: Path, files: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, 3, 32, 32) and labels (fine labels for CIFAR-100) from CIFAR's
    python-version batch files."""
    data, labels = [], []
    for name in files:
        with open(folder / name, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        data.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels += entry["labels"] if "labels" in entry else entry["fine_labels"]
    return torch.from_numpy(np.concatenate(data)), torch.tensor(labels)


@dataclass(frozen=True)
class Source:
    """Where torchvision keeps a dataset and how to read it."""

    name: str                     # for messages
    download: type                # the torchvision dataset class that downloads it
    folder: str                   # under data_dir
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    read: Callable[[Path, Sequence[str]], tuple[torch.Tensor, torch.Tensor]]


def _idx_source(name: str, cls: type) -> Source:
    return Source(name, cls, f"{cls.__name__}/raw", ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                  ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"), read_idx)


MNIST = _idx_source("MNIST", datasets.MNIST)
FASHION_MNIST = _idx_source("Fashion-MNIST", datasets.FashionMNIST)
CIFAR10 = Source("CIFAR-10", datasets.CIFAR10, "cifar-10-batches-py",
                 tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), read_cifar_pickles)
CIFAR100 = Source("CIFAR-100", datasets.CIFAR100, "cifar-100-python", ("train",), ("test",), read_cifar_pickles)


class TorchvisionDataModule(ClassificationDataModule):
    """Base of the in-memory torchvision datasets: subclasses set ``source`` and the
    dataset constants. ``download``: fetch missing files with torchvision (needs network)."""

    source: Source

    def __init__(self, data_dir: str = "data", *, download: bool = True, **kwargs):
        super().__init__(data_dir=data_dir, **kwargs)
        self.download = download

    def expected_files(self) -> list[str]:
        return [f"{self.source.folder}/{f}" for f in self.source.train_files + self.source.test_files]

    def prepare_data(self) -> None:
        """Download what is missing, once: Lightning calls this on one process per node before
        any process loads the data."""
        root, expected = Path(self.data_dir), self.expected_files()
        if not missing_files(root, expected):
            return
        if not self.download:
            raise DatasetNotFoundError(self.source.name, root, expected)
        try:
            with nothing_created_on_failure(root / self.source.folder):
                for train in (True, False):
                    self.source.download(self.data_dir, train=train, download=True)
        except Exception as err:  # noqa: BLE001 - any download failure means "not available offline"
            raise DatasetNotFoundError(self.source.name, root, expected, err) from err

    def _load(self, train: bool) -> UInt8Images:
        root, expected = Path(self.data_dir), self.expected_files()
        if missing_files(root, expected):
            if self.trainer is not None:  # prepare_data ran (on another process) and left files missing
                raise DatasetNotFoundError(self.source.name, root, expected)
            self.prepare_data()  # used outside a Trainer: nothing else downloads
        files = self.source.train_files if train else self.source.test_files
        return UInt8Images(*self.source.read(root / self.source.folder, files))

    def load_train_pool(self) -> UInt8Images:
        return self._load(train=True)

    def load_test(self) -> UInt8Images:
        return self._load(train=False)


class MNISTDataModule(TorchvisionDataModule):
    """MNIST (LeCun et al. 1998): 28x28 grey digits, 60k train (5k held out for val), 10k test."""

    source = MNIST
    num_classes = 10
    mean = (0.1307,)
    std = (0.3081,)
    input_shape = (1, 28, 28)


class FashionMNISTDataModule(TorchvisionDataModule):
    """Fashion-MNIST (Xiao et al. 2017): 28x28 grey clothing images in 10 classes, 60k train
    (5k held out for val), 10k test; torchvision's ``FashionMNIST/raw`` idx files."""

    source = FASHION_MNIST
    num_classes = 10
    mean = (0.2860,)
    std = (0.3530,)
    input_shape = (1, 28, 28)


class CIFARDataModule(TorchvisionDataModule):
    """Base of CIFAR-10 and CIFAR-100 (Krizhevsky 2009): 32x32 colour, 50k train (5k held out
    for val), 10k test. Trains with random crop (4 px) + flip unless ``augment`` says otherwise."""

    input_shape = (3, 32, 32)
    default_augment = CIFAR_AUGMENT

    def __init__(self, data_dir: str = "data", *,
                 augment: Union[bool, Sequence[AugmentSpec], None] = CIFAR_AUGMENT, **kwargs):
        super().__init__(data_dir=data_dir, augment=augment, **kwargs)


class CIFAR10DataModule(CIFARDataModule):
    """CIFAR-10: 32x32 colour images in 10 classes (options: CIFARDataModule)."""

    source = CIFAR10
    num_classes = 10
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2471, 0.2435, 0.2616)


class CIFAR100DataModule(CIFARDataModule):
    """CIFAR-100: 32x32 colour images in 100 fine classes (options: CIFARDataModule)."""

    source = CIFAR100
    num_classes = 100
    mean = (0.5071, 0.4865, 0.4409)
    std = (0.2673, 0.2564, 0.2762)
