"""MNIST and CIFAR-10 through torchvision, held in memory as uint8 tensors.

Downloaded into ``data_dir`` when online (``download: true``, the default); offline, a
missing dataset is a :class:`DatasetNotFoundError` naming the folder and files expected.
CIFAR-10 training batches get the standard random crop (4 px padding) and horizontal
flip, on tensors, when ``augment`` is on.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torchvision import datasets

from datamodules.base import ClassificationDataModule, UInt8Images
from datamodules.missing import DatasetNotFoundError, missing_files


def _load_or_download(name: str, folder: Path, expected: list[str], load, download: bool):
    if missing_files(folder, expected):
        if not download:
            raise DatasetNotFoundError(name, folder, expected)
        try:
            return load(True)
        except Exception as err:  # noqa: BLE001 - any download failure means "not available offline"
            raise DatasetNotFoundError(name, folder, expected, err) from err
    return load(False)


class MNISTDataModule(ClassificationDataModule):
    """MNIST (LeCun et al. 1998): 28x28 grey digits, 60k train (5k held out for val), 10k test."""

    num_classes = 10
    mean = (0.1307,)
    std = (0.3081,)
    input_shape = (1, 28, 28)
    RAW_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]

    def __init__(self, data_dir: str = "data", batch_size: int = 128, val_size: int = 5000,
                 train_size: Optional[int] = None, test_size: Optional[int] = None,
                 num_workers: int = 0, seed: int = 0, download: bool = True):
        super().__init__(data_dir, batch_size, val_size, train_size, test_size, num_workers, seed)
        self.download = download

    def _load(self, train: bool) -> UInt8Images:
        folder = Path(self.data_dir) / "MNIST" / "raw"
        ds = _load_or_download(
            "MNIST", folder, self.RAW_FILES,
            lambda dl: datasets.MNIST(self.data_dir, train=train, download=dl), self.download,
        )
        return UInt8Images(ds.data.unsqueeze(1).contiguous(), ds.targets)

    def load_train_pool(self):
        return self._load(train=True)

    def load_test(self):
        return self._load(train=False)


class CIFAR10DataModule(ClassificationDataModule):
    """CIFAR-10 (Krizhevsky 2009): 32x32 colour, 50k train (5k held out for val), 10k test."""

    num_classes = 10
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2471, 0.2435, 0.2616)
    input_shape = (3, 32, 32)
    BATCH_FILES = [f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)] + ["cifar-10-batches-py/test_batch"]

    def __init__(self, data_dir: str = "data", batch_size: int = 128, val_size: int = 5000,
                 train_size: Optional[int] = None, test_size: Optional[int] = None,
                 num_workers: int = 0, seed: int = 0, download: bool = True, augment: bool = True):
        super().__init__(data_dir, batch_size, val_size, train_size, test_size, num_workers, seed)
        self.download = download
        self.augment = augment

    def _load(self, train: bool) -> UInt8Images:
        ds = _load_or_download(
            "CIFAR-10", Path(self.data_dir), self.BATCH_FILES,
            lambda dl: datasets.CIFAR10(self.data_dir, train=train, download=dl), self.download,
        )
        images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
        return UInt8Images(images, torch.tensor(ds.targets))

    def load_train_pool(self):
        return self._load(train=True)

    def load_test(self):
        return self._load(train=False)

    def on_after_batch_transfer(self, batch, dataloader_idx):
        if self.augment and self.trainer is not None and self.trainer.training:
            x, y = batch
            batch = (random_crop_flip(x, padding=4), y)
        return batch


def random_crop_flip(x: torch.Tensor, padding: int = 4) -> torch.Tensor:
    """Per-image random crop after zero padding and random horizontal flip, on a batch."""
    n, _, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (n,), device=x.device)
    dx = torch.randint(0, 2 * padding + 1, (n,), device=x.device)
    rows = (dy.view(n, 1) + torch.arange(h, device=x.device)).view(n, 1, h, 1)
    cols = (dx.view(n, 1) + torch.arange(w, device=x.device)).view(n, 1, 1, w)
    out = padded.gather(2, rows.expand(n, x.shape[1], h, padded.shape[3]))
    out = out.gather(3, cols.expand(n, x.shape[1], h, w))
    flip = torch.rand(n, device=x.device) < 0.5
    return torch.where(flip.view(n, 1, 1, 1), out.flip(3), out)
