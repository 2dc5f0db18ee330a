"""Cats vs Dogs and Tiny ImageNet: layouts, labels, splits, corrupt files, missing data; in-memory
mode and balancing on the real copies (Tiny ImageNet, Cats vs Dogs, the CIFAR-10 JPEG image folder).

Fixture tests write tiny layouts (fast). Real-data tests (``slow``) extract the copies in
SHARED_DATASETS into a session temp folder and skip with a reason when an archive is absent.
"""
from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from datamodules import ImageFolderDataModule, UInt8Images
from datamodules.cats_vs_dogs import CatsVsDogsDataModule, ImageFiles
from datamodules.missing import DatasetNotFoundError
from datamodules.tiny_imagenet import TinyImageNetDataModule
from tests.conftest import SHARED_DATASETS


def _extracted(tmp_path_factory, archive: str, top: str, keep=None):
    """``archive`` extracted into a session temp folder (only the members ``keep`` accepts)."""
    path = SHARED_DATASETS / archive
    if not path.is_file():
        pytest.skip(f"real dataset archive not found: {path}")
    root = tmp_path_factory.mktemp(top)
    with tarfile.open(path) as tar:
        members = [m for m in tar.getmembers() if keep is None or keep(m.name)]
        if hasattr(tarfile, "data_filter"):
            tar.extractall(root, members, filter="data")
        else:
            tar.extractall(root, members)
    assert (root / top).is_dir(), f"{archive} did not extract to {top}/"
    return root


@pytest.fixture(scope="session")
def pet_root(tmp_path_factory):
    return _extracted(tmp_path_factory, "PetImages.tar.gz", "PetImages")


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    return _extracted(tmp_path_factory, "tiny-imagenet-200.tar.gz", "tiny-imagenet-200")


def _indices(dm, split):
    return dm.dataset(split).indices


# ---------------------------------------------------------------- fixture layouts (fast)

def _write_pets(root, per_class=5, size=20):
    for label, cls in enumerate(("Cat", "Dog")):
        folder = root / "PetImages" / cls
        folder.mkdir(parents=True)
        for j in range(per_class):
            Image.new("RGB", (size + j, size), (200 * label, 20 * j, 90)).save(folder / f"{j}.jpg", quality=95)
    good = (root / "PetImages" / "Cat" / "0.jpg").read_bytes()
    (root / "PetImages" / "Cat" / "666.jpg").write_bytes(b"")                    # empty
    (root / "PetImages" / "Dog" / "667.jpg").write_bytes(good[: len(good) // 2])  # truncated
    (root / "PetImages" / "Dog" / "668.jpg").write_bytes(b"not a jpeg" * 40)      # garbage
    (root / "PetImages" / "Dog" / "Thumbs.db").write_bytes(b"\0" * 10)          # not an image: ignored


def test_cats_vs_dogs_skips_corrupt_files_and_splits(tmp_path):
    _write_pets(tmp_path, per_class=10)
    with pytest.warns(UserWarning, match="skipped 3 unreadable"):
        dm = CatsVsDogsDataModule(str(tmp_path), batch_size=4, image_size=16, num_workers=0)
        dm.setup()
    assert sorted(p.rsplit("/", 1)[-1] for p in dm.skipped) == ["666.jpg", "667.jpg", "668.jpg"]
    files = dm.all_images()
    assert len(files) == 20 and files.labels.tolist() == [0] * 10 + [1] * 10
    assert [len(dm.dataset(s)) for s in ("train", "val", "test")] == [14, 2, 4]
    together = sorted(_indices(dm, "train") + _indices(dm, "val") + _indices(dm, "test"))
    assert together == list(range(20))
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert dm.input_shape == (3, 16, 16) and dm.num_classes == 2 and dm.describe()["skipped"] == 3
    for i in range(20):  # red channel encodes the class: 0 for cats, 200 for dogs
        img, label = files[i]
        assert abs(img[0].mean().item() - 200 / 255 * label) < 0.05


def test_cats_vs_dogs_subsets_and_bad_split(tmp_path):
    _write_pets(tmp_path, per_class=10)
    dm = CatsVsDogsDataModule(str(tmp_path), image_size=8, num_workers=0, train_size=5, test_size=3)
    assert len(dm.dataset("train")) == 5 and len(dm.dataset("test")) == 3 and len(dm.dataset("val")) == 2
    with pytest.raises(ValueError, match="sum"):
        CatsVsDogsDataModule(str(tmp_path), split=(0.5, 0.1, 0.1))


def test_cats_vs_dogs_missing_folder_names_both_classes(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        CatsVsDogsDataModule(str(tmp_path))
    assert str(tmp_path / "PetImages" / "Cat") in str(err.value)
    assert str(tmp_path / "PetImages" / "Dog") in str(err.value)
    (tmp_path / "PetImages" / "Cat").mkdir(parents=True)
    (tmp_path / "PetImages" / "Dog").mkdir()
    (tmp_path / "PetImages" / "Dog" / "1.jpg").write_bytes(b"")
    with pytest.raises(DatasetNotFoundError, match="PetImages/Dog"):  # nothing readable at all
        CatsVsDogsDataModule(str(tmp_path)).setup()


WNIDS = ["n02", "n01", "n03"]  # deliberately unsorted: the order of wnids.txt is the class order


def _write_tiny(root, per_class=4):
    base = root / "tiny-imagenet-200"
    base.mkdir()
    (base / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    (base / "words.txt").write_text("".join(f"{w}\tthing {w}\n" for w in WNIDS))
    for i, w in enumerate(WNIDS):
        folder = base / "train" / w / "images"
        folder.mkdir(parents=True)
        for j in range(per_class):
            Image.new("RGB", (64, 64), (80 * i, 10 * j, 0)).save(folder / f"{w}_{j}.JPEG", quality=95)
        (base / "train" / w / f"{w}_boxes.txt").write_text("")
    (base / "val" / "images").mkdir(parents=True)
    lines = []
    for k, w in enumerate(["n03", "n01", "n02", "n01", "n03"]):
        Image.new("RGB", (64, 64), (80 * WNIDS.index(w), 0, 0)).save(base / "val" / "images" / f"val_{k}.png")
        lines.append(f"val_{k}.png\t{w}\t0\t0\t63\t63")
    Image.new("L", (32, 32), 128).save(base / "val" / "images" / "val_5.JPEG")  # grey and small: RGB, resized
    lines.append("val_5.JPEG\tn02\t0\t0\t31\t31")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return base


def test_tiny_imagenet_layout_labels_from_annotations(tmp_path):
    _write_tiny(tmp_path)
    dm = TinyImageNetDataModule(str(tmp_path), batch_size=3, val_size=3, num_workers=0)
    assert dm.num_classes == 3 and dm.wnids == WNIDS and dm.input_shape == (3, 64, 64)
    dm.setup()
    assert len(dm.dataset("train")) == 9 and len(dm.dataset("val")) == 3 and len(dm.dataset("test")) == 6
    test = dm.dataset("test")
    assert [p.name for p in test.paths] == [f"val_{k}.png" for k in range(5)] + ["val_5.JPEG"]
    assert test.labels.tolist() == [2, 1, 0, 1, 2, 0]
    for i in range(5):  # red channel = 80 * wnids.txt index of the annotated wnid
        img, label = test[i]
        assert img.shape == (3, 64, 64) and abs(img[0].mean().item() - 80 * label / 255) < 1e-3
    grey, _ = test[5]
    assert grey.shape == (3, 64, 64) and torch.allclose(grey, torch.full_like(grey, 128 / 255), atol=1e-3)
    pool = dm.load_train_pool()
    assert pool.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert all(p.parent.parent.name == WNIDS[label] for p, label in zip(pool.paths, pool.labels.tolist()))
    x, y = next(iter(dm.test_dataloader()))
    assert x.shape == (3, 3, 64, 64) and 0 <= x.min() and x.max() <= 1 and y.tolist() == [2, 1, 0]


def test_tiny_imagenet_first_classes_and_image_size(tmp_path):
    """num_classes keeps the first classes of wnids.txt, in train and test; image_size resizes."""
    _write_tiny(tmp_path)
    dm = TinyImageNetDataModule(str(tmp_path), batch_size=3, val_size=2, num_workers=0, num_classes=2, image_size=32)
    assert dm.num_classes == 2 and dm.wnids == WNIDS[:2] and dm.input_shape == (3, 32, 32)
    dm.setup()
    test = dm.dataset("test")
    assert [p.name for p in test.paths] == ["val_1.png", "val_2.png", "val_3.png", "val_5.JPEG"]
    assert test.labels.tolist() == [1, 0, 1, 0] and dm.load_train_pool().labels.tolist() == [0] * 4 + [1] * 4
    assert test[0][0].shape == (3, 32, 32) and dm.describe()["image_size"] == 32
    with pytest.raises(ValueError, match=r"num_classes=4 must be in \[1, 3\]"):
        TinyImageNetDataModule(str(tmp_path), num_classes=4, download=False)


def test_tiny_imagenet_missing_wnids(tmp_path):
    base = _write_tiny(tmp_path)
    (base / "wnids.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match="wnids.txt"):
        TinyImageNetDataModule(str(tmp_path), download=False)
    with pytest.raises(DatasetNotFoundError, match="tiny-imagenet-200/wnids.txt"):
        TinyImageNetDataModule(str(tmp_path / "elsewhere"), download=False)


def test_tiny_imagenet_downloads_the_official_zip_when_missing(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    calls = []

    def fake_download(url, download_root, **kwargs):  # stands in for the 237 MB zip: writes the layout
        calls.append(url)
        _write_tiny(Path(download_root))

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", fake_download)
    dm = TinyImageNetDataModule(str(tmp_path), val_size=3, num_workers=0)
    assert calls == ["http://cs231n.stanford.edu/tiny-imagenet-200.zip"] and dm.num_classes == len(WNIDS)
    TinyImageNetDataModule(str(tmp_path), val_size=3, num_workers=0)
    assert len(calls) == 1, "an extracted copy must not be downloaded again"

    def offline(url, download_root, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", offline)
    with pytest.raises(DatasetNotFoundError, match="download failed: OSError: network is unreachable"):
        TinyImageNetDataModule(str(tmp_path / "elsewhere"))


def test_tiny_imagenet_missing_val_annotations(tmp_path):
    base = _write_tiny(tmp_path)
    (base / "val" / "val_annotations.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match="val/val_annotations.txt"):
        TinyImageNetDataModule(str(tmp_path), download=False)


def test_tiny_imagenet_missing_train_folder(tmp_path):
    base = _write_tiny(tmp_path)
    for f in (base / "train" / "n01" / "images").iterdir():
        f.unlink()
    (base / "train" / "n01" / "images").rmdir()
    with pytest.raises(DatasetNotFoundError) as err:
        TinyImageNetDataModule(str(tmp_path), download=False)
    assert str(base / "train" / "n01" / "images") in str(err.value)
    assert "n02" not in str(err.value) and "n03" not in str(err.value)


def test_tiny_imagenet_missing_val_image(tmp_path):
    base = _write_tiny(tmp_path)
    (base / "val" / "images" / "val_3.png").unlink()
    with pytest.raises(DatasetNotFoundError, match="val/images/val_3.png"):
        TinyImageNetDataModule(str(tmp_path), download=False)


def test_image_files_rejects_mismatched_lengths():
    with pytest.raises(ValueError):
        ImageFiles(["a.jpg"], [0, 1], 8)


# ---------------------------------------------------------------- real copies (slow)

@pytest.mark.slow
def test_real_cats_vs_dogs_counts_split_determinism_range(pet_root):
    dm = CatsVsDogsDataModule(str(pet_root), batch_size=16, image_size=64, num_workers=0, seed=0)
    files = dm.all_images()
    readable = len(files)
    assert readable + len(dm.skipped) == 5000
    counts = torch.bincount(files.labels, minlength=2).tolist()
    assert sum(counts) == readable and counts[0] + sum("/Cat/" in p for p in dm.skipped) == 2500
    assert counts[1] + sum("/Dog/" in p for p in dm.skipped) == 2500
    sizes = [len(dm.dataset(s)) for s in ("train", "val", "test")]
    assert sizes == [readable - round(0.1 * readable) - round(0.2 * readable), round(0.1 * readable),
                     round(0.2 * readable)]
    if not dm.skipped:
        assert sizes == [3500, 500, 1000]
    assert len(set(_indices(dm, "train")) | set(_indices(dm, "val")) | set(_indices(dm, "test"))) == readable

    same = CatsVsDogsDataModule(str(pet_root), num_workers=0, seed=0)
    other = CatsVsDogsDataModule(str(pet_root), num_workers=0, seed=1)
    for split in ("train", "val", "test"):
        assert _indices(same, split) == _indices(dm, split)
        assert _indices(other, split) != _indices(dm, split)

    x, y = next(iter(dm.val_dataloader()))
    assert x.shape == (16, 3, 64, 64) and x.dtype == torch.float32
    assert 0 <= x.min() and x.max() <= 1 and x.std() > 0.05 and set(y.tolist()) <= {0, 1}
    big = CatsVsDogsDataModule(str(pet_root), image_size=96, num_workers=0)
    assert big.dataset("test")[0][0].shape == (3, 96, 96) and big.input_shape == (3, 96, 96)


@pytest.mark.slow
def test_real_tiny_imagenet_classes_split_labels(tiny_root):
    base = tiny_root / "tiny-imagenet-200"
    dm = TinyImageNetDataModule(str(tiny_root), batch_size=32, num_workers=0, seed=0)
    wnids = (base / "wnids.txt").read_text().split()
    assert dm.num_classes == 200 and dm.wnids == wnids and dm.input_shape == (3, 64, 64)
    pool = dm.load_train_pool()
    assert len(pool) == 20000 and torch.bincount(pool.labels, minlength=200).tolist() == [100] * 200
    assert all(p.parent.parent.name == wnids[label] for p, label in zip(pool.paths[::97], pool.labels[::97].tolist()))
    assert len(dm.dataset("train")) == 20000 - 2000 and len(dm.dataset("val")) == 2000
    assert len(dm.dataset("test")) == 10000

    annotations = dict(line.split("\t")[:2] for line in (base / "val" / "val_annotations.txt").read_text().splitlines())
    test = dm.dataset("test")
    for i in (0, 1, 17, 4321, 9999):
        name = test.paths[i].name
        assert test.labels[i].item() == wnids.index(annotations[name])
    assert test.paths[0].name == "val_0.JPEG" and test[0][1].item() == wnids.index(annotations["val_0.JPEG"])

    same = TinyImageNetDataModule(str(tiny_root), num_workers=0, seed=0)
    other = TinyImageNetDataModule(str(tiny_root), num_workers=0, seed=1)
    assert _indices(same, "val") == _indices(dm, "val") and _indices(same, "train") == _indices(dm, "train")
    assert _indices(other, "val") != _indices(dm, "val")

    x, y = next(iter(dm.test_dataloader()))
    assert x.shape == (32, 3, 64, 64) and 0 <= x.min() and x.max() <= 1 and x.std() > 0.05
    assert y.tolist() == test.labels[:32].tolist()
    small = TinyImageNetDataModule(str(tiny_root), num_workers=0, train_size=500, test_size=300)
    assert len(small.dataset("train")) == 500 and len(small.dataset("test")) == 300


@pytest.fixture(scope="session")
def cifar_jpeg_root(tmp_path_factory):
    """The first 150 images of every class and split (3,000 files: extracting all 60,000 takes ~20 s)."""
    first = lambda name: not name.endswith(".jpg") or int(name.rsplit("/", 1)[-1][:-4]) < 150  # noqa: E731
    return _extracted(tmp_path_factory, "cifar10-jpeg.tar.gz", "cifar10-jpeg", first) / "cifar10-jpeg"


def _same_items(a, b, indices):
    for i in indices:
        xa, ya = a[i]
        xb, yb = b[i]
        assert torch.equal(xa, xb) and int(ya) == int(yb), i


@pytest.mark.slow
def test_real_tiny_imagenet_in_memory_matches_lazy(tiny_root):
    kw = dict(num_workers=0, val_size=200, train_size=600, test_size=300, seed=3)
    lazy = TinyImageNetDataModule(str(tiny_root), **kw)
    memory = TinyImageNetDataModule(str(tiny_root), in_memory=True, **kw)
    for split, n in (("train", 600), ("val", 200), ("test", 300)):
        held = memory.dataset(split)
        assert isinstance(held, UInt8Images) and held.images.shape == (n, 3, 64, 64) and len(lazy.dataset(split)) == n
        _same_items(lazy.dataset(split), held, range(0, n, 7))
    x, y = next(iter(memory.train_dataloader()))
    assert x.shape == (128, 3, 64, 64) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1


@pytest.mark.slow
def test_real_cats_vs_dogs_balanced_in_memory(pet_root):
    dm = CatsVsDogsDataModule(str(pet_root), image_size=32, num_workers=0, train_size=700, balance="undersample",
                              in_memory=True)
    train = dm.dataset("train")
    counts = torch.bincount(train.labels, minlength=2).tolist()
    assert isinstance(train, UInt8Images) and counts[0] == counts[1] and 300 < counts[0] <= 350
    same = CatsVsDogsDataModule(str(pet_root), image_size=32, num_workers=0, train_size=700, balance="undersample",
                                in_memory=True)
    assert torch.equal(same.dataset("train").images, train.images)


@pytest.mark.slow
def test_real_cifar10_jpeg_image_folder_in_memory_augmented(cifar_jpeg_root):
    dm = ImageFolderDataModule(str(cifar_jpeg_root), val_size=300, train_size=1000, test_size=500, num_workers=0,
                               in_memory=True, augment=[{"name": "crop", "padding": 4}, "flip"])
    assert dm.num_classes == 10 and dm.input_shape == (3, 32, 32) and dm.classes[0] == "airplane"
    train = dm.dataset("train")
    assert isinstance(train, UInt8Images) and train.images.shape == (1000, 3, 32, 32)
    assert torch.bincount(train.labels, minlength=10).min() > 60
    lazy = ImageFolderDataModule(str(cifar_jpeg_root), val_size=300, train_size=1000, test_size=500, num_workers=0)
    _same_items(lazy.dataset("test"), dm.dataset("test"), range(0, 500, 11))
    x, _ = next(iter(dm.train_dataloader()))
    out = dm.augmentations(x)
    assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1 and not torch.equal(out, x)
