"""Datamodules: [0, 1] pixels, deterministic splits, clear errors for missing data, real MNIST."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from datamodules import (CIFAR10DataModule, DatasetNotFoundError, ImageFolderDataModule, MNISTDataModule,
                         SyntheticDataModule)
from tests.conftest import SHARED_DATASETS, needs_mnist


def test_synthetic_is_deterministic_pixels_and_split():
    a, b = SyntheticDataModule(seed=1), SyntheticDataModule(seed=1)
    for dm in (a, b):
        dm.setup()
    assert len(a.dataset("train")) == 512 - 64 and len(a.dataset("val")) == 64 and len(a.dataset("test")) == 256
    xa, ya = next(iter(a.val_dataloader()))
    xb, yb = next(iter(b.val_dataloader()))
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert xa.min() >= 0 and xa.max() <= 1 and xa.shape[1:] == (1, 28, 28)
    other = SyntheticDataModule(seed=2)
    assert not torch.equal(next(iter(other.val_dataloader()))[0], xa)


def test_missing_mnist_names_folder_and_files(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        MNISTDataModule(str(tmp_path), download=False).setup("fit")
    message = str(err.value)
    assert str(tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte") in message
    assert "--data.data_dir" in message


def test_missing_cifar10_names_folder_and_files(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="cifar-10-batches-py/data_batch_1"):
        CIFAR10DataModule(str(tmp_path), download=False).setup("test")


def _write_image_folder(root, classes=("cat", "dog", "fox"), per_class=4, size=12):
    for split in ("train", "test"):
        for i, cls in enumerate(classes):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for j in range(per_class):
                Image.new("RGB", (size, size), (40 * i, 10 * j, 200)).save(folder / f"{j}.png")


def test_image_folder_layout_labels_and_range(tmp_path):
    _write_image_folder(tmp_path)
    dm = ImageFolderDataModule(str(tmp_path), batch_size=4, val_size=3, num_workers=0)
    assert dm.num_classes == 3 and dm.classes == ["cat", "dog", "fox"] and dm.input_shape == (3, 12, 12)
    dm.setup()
    assert len(dm.dataset("train")) == 9 and len(dm.dataset("val")) == 3 and len(dm.dataset("test")) == 12
    x, y = next(iter(dm.test_dataloader()))
    assert x.min() >= 0 and x.max() <= 1
    assert y.tolist() == [0, 0, 0, 0]
    red = torch.tensor([0.0, 40 / 255, 80 / 255])
    xs, ys = zip(*[dm.dataset("test")[i] for i in range(12)])
    for img, label in zip(xs, ys):
        assert img[0, 0, 0].item() == pytest.approx(red[label].item(), abs=1e-6)


def test_image_folder_missing_split_is_clear(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match="test/<class>/<image>"):
        ImageFolderDataModule(str(tmp_path))


def test_cifar_default_augmentation_is_crop_and_flip(tmp_path):
    dm = CIFAR10DataModule(str(tmp_path), download=False)
    assert [a.name for a in dm.augmentations.augmentations] == ["crop", "flip"]
    assert dm.augmentations.augmentations[0].padding == 4
    assert len(CIFAR10DataModule(str(tmp_path), augment=False).augmentations) == 0
    assert CIFAR10DataModule(str(tmp_path), augment=True).augment == dm.augment
    x = torch.rand(8, 3, 32, 32)
    out = dm.augmentations(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert not torch.equal(out, x)
    with pytest.raises(ValueError, match="no default augmentation"):
        MNISTDataModule(str(tmp_path), augment=True)


@needs_mnist
def test_real_mnist_sizes_range_and_labels():
    dm = MNISTDataModule(str(SHARED_DATASETS), download=False)
    dm.setup()
    assert (len(dm.dataset("train")), len(dm.dataset("val")), len(dm.dataset("test"))) == (55000, 5000, 10000)
    x, y = next(iter(dm.test_dataloader()))
    assert x.shape[1:] == (1, 28, 28) and x.min() == 0 and x.max() == 1
    # the first official test digits are 7, 2, 1, 0, 4
    assert y[:5].tolist() == [7, 2, 1, 0, 4]
    counts = torch.bincount(torch.stack([dm.dataset("test")[i][1] for i in range(10000)]), minlength=10)
    assert counts.tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
