"""The data options every datamodule shares (augment, balance, split, in_memory, loader
settings) and the new datasets' on-disk formats (Fashion-MNIST, CIFAR-100, Oxford-IIIT Pet,
ImageNet subset), on tiny fixtures written to tmp_path. The ``write_*`` helpers are also
used by tests/test_dataset_cli_runs.py."""
from __future__ import annotations

import pickle
import struct

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import TensorDataset

from datamodules import (AUGMENTATIONS, CIFAR100DataModule, CatsVsDogsDataModule, ClassificationDataModule,
                         DatasetNotFoundError, FashionMNISTDataModule, ImageFolderDataModule,
                         ImageNetSubsetDataModule, OxfordPetDataModule, SyntheticDataModule, TinyImageNetDataModule,
                         UInt8Images, create_augmentations)
from datamodules import augmentations as aug_module
from datamodules.augmentations import create_augmentation
from datamodules.splits import labels_of
from tests.test_real_datasets import _write_pets, _write_tiny

# one strong setting per augmentation, so each visibly changes an image
STRONG = {"crop": {"padding": 4}, "flip": {"p": 1.0}, "rotation": {"degrees": 30}, "scale": {"zoom": [0.7, 1.3]},
          "brightness": {"delta": 0.3}, "noise": {"std": 0.1}}
IDENTITY = {"crop": {"padding": 0}, "flip": {"p": 0.0}, "rotation": {"degrees": 0}, "scale": {"zoom": [1, 1]},
            "brightness": {"delta": 0}, "noise": {"std": 0}}


# ---------------------------------------------------------------- fixture writers

def write_idx(folder, prefix: str, images: torch.Tensor, labels: torch.Tensor) -> None:
    """torchvision's raw MNIST-family files: ``<prefix>-images-idx3-ubyte`` / ``-labels-idx1-ubyte``."""
    folder.mkdir(parents=True, exist_ok=True)
    n, h, w = images.shape
    (folder / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">iiii", 2051, n, h, w) + images.numpy().tobytes())
    (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">ii", 2049, n) + labels.numpy().tobytes())


def write_fashion_mnist(root, n_train=40, n_test=12, seed=0):
    gen = torch.Generator().manual_seed(seed)
    data = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = torch.randint(0, 256, (n, 28, 28), generator=gen, dtype=torch.uint8)
        labels = (torch.arange(n) % 10).to(torch.uint8)
        write_idx(root / "FashionMNIST" / "raw", prefix, images, labels)
        data[prefix] = (images, labels)
    return data


def write_cifar100(root, n_train=60, n_test=20, seed=0):
    """torchvision's ``cifar-100-python/{train,test,meta}`` pickles (images in rows of 3072)."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    gen = torch.Generator().manual_seed(seed)
    data = {}
    for name, n in (("train", n_train), ("test", n_test)):
        images = torch.randint(0, 256, (n, 3, 32, 32), generator=gen, dtype=torch.uint8)
        fine = [(7 * i) % 100 for i in range(n)]
        entry = {"data": images.reshape(n, -1).numpy(), "fine_labels": fine, "coarse_labels": [f // 5 for f in fine],
                 "filenames": [f"{i}.png" for i in range(n)]}
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f)
        data[name] = (images, torch.tensor(fine))
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"class{i}" for i in range(100)],
                     "coarse_label_names": [f"super{i}" for i in range(20)]}, f)
    return data


CAT_BREEDS, DOG_BREEDS = ["Abyssinian", "Bengal"], ["beagle", "pug", "boxer"]


def write_oxford_pet(root, per_breed=(4, 2), size=(40, 30)):
    """``oxford-iiit-pet/annotations/{trainval,test}.txt`` ("<id> <breed 1-37> <species 1|2> <breed id>")
    and ``images/<id>.jpg``; cats have red 0, dogs red 250. Returns {split: [(id, species 0|1)]}."""
    base = root / "oxford-iiit-pet"
    (base / "images").mkdir(parents=True)
    (base / "annotations").mkdir()
    listed = {"trainval": [], "test": []}
    for breed_index, breed in enumerate(CAT_BREEDS + DOG_BREEDS):
        species = int(breed in DOG_BREEDS)
        for split, count in zip(("trainval", "test"), per_breed):
            for k in range(count):
                image_id = f"{breed}_{split}{k}"
                Image.new("RGB", size, (250 * species, 20 * breed_index, 100)).save(base / "images" / f"{image_id}.jpg",
                                                                                   quality=95)
                listed[split].append((image_id, breed_index + 1, species + 1))
    for split, rows in listed.items():
        (base / "annotations" / f"{split}.txt").write_text("".join(f"{i} {b} {s} {b}\n" for i, b, s in rows))
    return {split: [(i, s - 1) for i, _, s in rows] for split, rows in listed.items()}


WNIDS = ["n03000000", "n01000000", "n02000000"]  # sorted: n01, n02, n03


def write_imagenet(root, per_class=(5, 2), size=(48, 36)):
    """``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG``: a red square (side = height) centred on
    a blue background, green = 60 x (sorted wnid index)."""
    for split, count in zip(("train", "val"), per_class):
        for wnid in WNIDS:
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for k in range(count):
                img = Image.new("RGB", size, (0, 60 * sorted(WNIDS).index(wnid), 255))
                w, h = size
                img.paste((255, 60 * sorted(WNIDS).index(wnid), 0), ((w - h) // 2, 0, (w + h) // 2, h))
                img.save(folder / f"{wnid}_{k}.JPEG", quality=98)


# ---------------------------------------------------------------- augmentations

@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_augmentation_keeps_range_and_shape_and_is_per_sample(name):
    torch.manual_seed(0)
    x = torch.rand(1, 3, 16, 12).expand(16, -1, -1, -1).contiguous()  # 16 copies of one image
    out = create_augmentations([{"name": name, **STRONG[name]}])(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0 and out.max() <= 1
    if name == "flip":  # p=1: every copy flipped the same way
        assert torch.equal(out, x.flip(3))
        return
    assert not torch.equal(out, x)
    distinct = {tuple(o.flatten().tolist()) for o in out}
    assert len(distinct) > 4, f"{name}: copies of one image should get different random draws"


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_augmentation_identity_settings_and_seeding(name):
    x = torch.rand(6, 3, 10, 10)
    assert torch.allclose(create_augmentation({"name": name, **IDENTITY[name]})(x), x, atol=1e-6)
    aug = create_augmentation({"name": name, **STRONG[name]})
    torch.manual_seed(3)
    a = aug(x)
    torch.manual_seed(3)
    assert torch.equal(a, aug(x))


def test_flip_probability_is_per_sample():
    torch.manual_seed(0)
    x = torch.rand(400, 1, 4, 4)
    out = create_augmentation("flip")(x)
    flipped = (out == x.flip(3)).flatten(1).all(1) & ~(out == x).flatten(1).all(1)
    assert 140 < flipped.sum() < 260  # p = 0.5


def test_rotation_by_90_degrees_is_rot90(monkeypatch):
    monkeypatch.setattr(aug_module, "_uniform", lambda n, low, high, like: torch.full((n,), high))
    x = torch.rand(2, 3, 6, 6)
    out = create_augmentation({"name": "rotation", "degrees": 90})(x)
    assert torch.allclose(out, torch.rot90(x, 1, (2, 3)), atol=1e-5)  # counter-clockwise


def test_crop_shifts_pixels_and_fills_zeros():
    torch.manual_seed(0)
    x = torch.ones(64, 1, 8, 8)
    out = create_augmentation({"name": "crop", "padding": 2})(x)
    zeros = (out == 0).flatten(1).sum(1)
    assert zeros.max() > 0 and (zeros == 0).any()  # some shifted in the padding, some unshifted
    assert set(out.unique().tolist()) <= {0.0, 1.0}


def test_augmentation_spec_errors_list_the_valid_choices():
    with pytest.raises(ValueError, match="valid augmentations: brightness, crop, flip, noise, rotation, scale"):
        create_augmentation({"name": "rotate"})
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['angle'\] for augmentation 'rotation'; valid options: degrees, padding_mode, p"):
        create_augmentation({"name": "rotation", "angle": 3})
    with pytest.raises(ValueError, match="p=1.5"):
        create_augmentation({"name": "flip", "p": 1.5})
    with pytest.raises(ValueError, match="zoom"):
        create_augmentation({"name": "scale", "zoom": [1.2, 0.8]})
    with pytest.raises(ValueError, match="padding_mode"):
        create_augmentation({"name": "rotation", "padding_mode": "wrap"})
    with pytest.raises(ValueError, match="must be a list"):
        SyntheticDataModule(augment={"name": "flip"})
    with pytest.raises(ValueError, match="unknown augmentation"):
        SyntheticDataModule(augment=["flip", {"name": "blur"}])


class _Recorder(pl.LightningModule):
    """Records the batches each stage receives."""

    def __init__(self):
        super().__init__()
        self.net = nn.Linear(28 * 28, 10)
        self.seen = {"train": [], "val": []}

    def training_step(self, batch, _):
        self.seen["train"].append(batch[0].clone())
        return F.cross_entropy(self.net(batch[0].flatten(1)), batch[1])

    def validation_step(self, batch, _):
        self.seen["val"].append(batch[0].clone())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_augmentation_applies_to_training_batches_only():
    dm = SyntheticDataModule(num_train=64, val_size=16, batch_size=48, augment=[{"name": "noise", "std": 0.3}])
    plain = SyntheticDataModule(num_train=64, val_size=16, batch_size=48)
    model = _Recorder()
    trainer = pl.Trainer(max_steps=1, limit_val_batches=1, num_sanity_val_steps=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         accelerator="cpu")
    trainer.fit(model, dm)
    (train,), (val,) = model.seen["train"], model.seen["val"]
    assert torch.equal(val, next(iter(plain.val_dataloader()))[0]), "validation must see clean images"
    train_items = torch.stack([x for x, _ in dm.dataset("train")])
    assert train.min() >= 0 and train.max() <= 1
    # every training image is noisy: none equals any clean training image
    assert torch.cdist(train.flatten(1), train_items.flatten(1)).min() > 1.0
    assert not dm.trainer.training and dm.on_after_batch_transfer((val, None), 0)[0] is val


# ---------------------------------------------------------------- balance and split

class _Imbalanced(ClassificationDataModule):
    """Class k has COUNTS[k] training images (value = k / 10) and 4 test images."""

    COUNTS = (50, 12, 30)
    num_classes, mean, std, input_shape = 3, (0.5,), (0.25,), (1, 2, 2)

    def _make(self, counts):
        labels = torch.cat([torch.full((c,), k) for k, c in enumerate(counts)])
        return UInt8Images((labels * 25).to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous(), labels)

    def load_train_pool(self):
        return self._make(self.COUNTS)

    def load_test(self):
        return self._make((4, 4, 4))


def _train_labels(dm):
    return labels_of(dm.dataset("train"))


def test_undersampling_balances_exactly_and_deterministically():
    kw = dict(val_size=10, balance="undersample", batch_size=8)
    dm = _Imbalanced(**kw)
    unbalanced = _Imbalanced(val_size=10)
    counts_before = torch.bincount(_train_labels(unbalanced), minlength=3)
    counts = torch.bincount(_train_labels(dm), minlength=3)
    assert counts.tolist() == [int(counts_before.min())] * 3 and counts_before.max() > counts_before.min()
    assert dm.dataset("val").indices == unbalanced.dataset("val").indices, "val is split off before balancing"
    again = _Imbalanced(**kw)
    assert dm.dataset("train").indices == again.dataset("train").indices
    other = _Imbalanced(**{**kw, "seed": 1})
    assert torch.bincount(_train_labels(other), minlength=3).unique().numel() == 1
    assert dm.dataset("train").indices != other.dataset("train").indices
    for x, y in dm.train_dataloader():  # items still carry their own labels
        assert torch.allclose(x[:, 0, 0, 0], y.float() * 25 / 255)
    assert len(dm.dataset("test")) == 12  # test untouched
    with pytest.raises(ValueError, match="valid: undersample"):
        _Imbalanced(balance="oversample")


def test_undersampling_after_train_size_and_in_memory():
    dm = _Imbalanced(val_size=10, train_size=40, balance="undersample", in_memory=True)
    counts = torch.bincount(_train_labels(dm), minlength=3)
    assert counts.unique().numel() == 1 and counts.sum() < 40
    assert isinstance(dm.dataset("train"), UInt8Images)


def test_split_pools_train_and_test_by_fractions():
    dm = _Imbalanced(split=[0.7, 0.1, 0.2], val_size=999)  # val_size unused with split
    total = sum(_Imbalanced.COUNTS) + 12
    sizes = [len(dm.dataset(s)) for s in ("train", "val", "test")]
    assert sizes == [total - round(0.1 * total) - round(0.2 * total), round(0.1 * total), round(0.2 * total)]
    together = sorted(dm.dataset("train").indices + dm.dataset("val").indices + dm.dataset("test").indices)
    assert together == list(range(total))
    same = _Imbalanced(split=[0.7, 0.1, 0.2])
    same.setup()
    assert same.split_indices == dm.split_indices
    assert _Imbalanced(split=[0.7, 0.1, 0.2], seed=5).dataset("test").indices != dm.dataset("test").indices
    with pytest.raises(ValueError, match="summing to 1"):
        _Imbalanced(split=[0.5, 0.5, 0.5])


def test_labels_of_composes_and_names_the_fix():
    base = UInt8Images(torch.zeros(5, 1, 1, 1, dtype=torch.uint8), torch.tensor([3, 1, 4, 1, 5]))
    assert labels_of(torch.utils.data.Subset(base, [4, 0])).tolist() == [5, 3]
    assert labels_of(torch.utils.data.ConcatDataset([base, TensorDataset(torch.zeros(2), torch.tensor([7, 8]))])
                     ).tolist() == [3, 1, 4, 1, 5, 7, 8]
    with pytest.raises(TypeError, match="give it a `labels` tensor"):
        labels_of([(0, 1)])


# ---------------------------------------------------------------- in-memory mode

def _all_items(dataset):
    xs, ys = zip(*[dataset[i] for i in range(len(dataset))])
    return torch.stack(xs), torch.stack([torch.as_tensor(y) for y in ys])


def _write_folder(root, classes=("a", "b"), per_class=4):
    for split in ("train", "test"):
        for c, cls in enumerate(classes):
            (root / split / cls).mkdir(parents=True)
            for k in range(per_class):
                noisy = torch.randint(0, 256, (3, 10, 10), dtype=torch.uint8).permute(1, 2, 0).numpy()
                Image.fromarray(noisy).save(root / split / cls / f"{k}.{'png' if k % 2 else 'jpg'}")


@pytest.mark.filterwarnings("ignore:Cats vs Dogs. skipped")
@pytest.mark.parametrize("kind", ["image_folder", "cats_vs_dogs", "tiny_imagenet"])
def test_in_memory_yields_identical_tensors(kind, tmp_path):
    if kind == "image_folder":
        _write_folder(tmp_path)
        make = lambda **kw: ImageFolderDataModule(str(tmp_path), val_size=2, image_size=8, num_workers=0, **kw)  # noqa: E731
    elif kind == "cats_vs_dogs":
        _write_pets(tmp_path, per_class=6)
        make = lambda **kw: CatsVsDogsDataModule(str(tmp_path), image_size=12, num_workers=0, **kw)  # noqa: E731
    else:
        _write_tiny(tmp_path)
        make = lambda **kw: TinyImageNetDataModule(str(tmp_path), val_size=3, num_workers=0, **kw)  # noqa: E731
    lazy, memory = make(), make(in_memory=True)
    for split in ("train", "val", "test"):
        assert isinstance(memory.dataset(split), UInt8Images) and not isinstance(lazy.dataset(split), UInt8Images)
        x_lazy, y_lazy = _all_items(lazy.dataset(split))
        x_mem, y_mem = _all_items(memory.dataset(split))
        assert torch.equal(x_lazy, x_mem) and torch.equal(y_lazy, y_mem), split
    assert memory.dataset("train").images.dtype == torch.uint8


def test_in_memory_keeps_float_tensor_datasets_exact():
    dm = SyntheticDataModule(num_train=32, val_size=8, in_memory=True)
    plain = SyntheticDataModule(num_train=32, val_size=8)
    assert torch.equal(_all_items(dm.dataset("train"))[0], _all_items(plain.dataset("train"))[0])


def test_loader_settings():
    dm = SyntheticDataModule(num_workers=2, pin_memory=False, persistent_workers=False, prefetch_factor=3)
    loader = dm.train_dataloader()
    assert (loader.num_workers, loader.pin_memory, loader.persistent_workers, loader.prefetch_factor) == (2, False, False, 3)
    loader = SyntheticDataModule(prefetch_factor=3).val_dataloader()  # no workers: prefetch_factor ignored
    assert loader.num_workers == 0 and loader.pin_memory == torch.cuda.is_available()


# ---------------------------------------------------------------- torchvision sets

def test_fashion_mnist_reads_raw_idx_files(tmp_path):
    data = write_fashion_mnist(tmp_path)
    dm = FashionMNISTDataModule(str(tmp_path), download=False, val_size=8, batch_size=4)
    assert len(dm.dataset("train")) == 32 and len(dm.dataset("test")) == 12
    x, y = _all_items(dm.dataset("test"))
    images, labels = data["t10k"]
    assert x.shape == (12, 1, 28, 28) and torch.equal(x, images.unsqueeze(1).float() / 255)
    assert torch.equal(y, labels.long())


def test_cifar100_reads_python_pickles(tmp_path):
    data = write_cifar100(tmp_path)
    dm = CIFAR100DataModule(str(tmp_path), download=False, val_size=10)
    assert dm.num_classes == 100 and [a.name for a in dm.augmentations.augmentations] == ["crop", "flip"]
    x, y = _all_items(dm.dataset("test"))
    images, labels = data["test"]
    assert torch.equal(x, images.float() / 255) and torch.equal(y, labels)
    assert len(dm.dataset("train")) == 50 and len(dm.dataset("val")) == 10


@pytest.mark.parametrize("cls,expected", [(FashionMNISTDataModule, "FashionMNIST/raw/train-images-idx3-ubyte"),
                                          (CIFAR100DataModule, "cifar-100-python/train")])
def test_missing_torchvision_sets_name_the_files(cls, expected, tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        cls(str(tmp_path), download=False).setup("fit")
    assert str(tmp_path / expected) in str(err.value) and "--data.data_dir" in str(err.value)


# ---------------------------------------------------------------- Oxford-IIIT Pet

def test_oxford_pet_binary_species_labels_and_split(tmp_path):
    listed = write_oxford_pet(tmp_path)
    dm = OxfordPetDataModule(str(tmp_path), download=False, image_size=16, batch_size=4, num_workers=0)
    trainval, test = dm.images("trainval"), dm.images("test")
    assert [p.stem for p in trainval.paths] == [i for i, _ in listed["trainval"]]
    assert trainval.labels.tolist() == [s for _, s in listed["trainval"]] and test.labels.tolist().count(1) == 6
    for i in range(len(trainval)):  # red channel encodes the species
        img, label = trainval[i]
        assert img.shape == (3, 16, 16) and abs(img[0].mean().item() - 250 / 255 * label) < 0.05
    total = len(trainval) + len(test)  # 30: pooled and split 70/10/20
    assert [len(dm.dataset(s)) for s in ("train", "val", "test")] == [21, 3, 6] and total == 30
    official = OxfordPetDataModule(str(tmp_path), download=False, split=None, val_size=4, num_workers=0)
    assert [len(official.dataset(s)) for s in ("train", "val", "test")] == [16, 4, 10]
    assert official.dataset("test").paths == test.paths
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 16, 16) and 0 <= x.min() and x.max() <= 1 and set(y.tolist()) <= {0, 1}
    balanced = OxfordPetDataModule(str(tmp_path), download=False, balance="undersample", num_workers=0)
    counts = torch.bincount(labels_of(balanced.dataset("train")), minlength=2)
    assert counts[0] == counts[1] > 0


def test_oxford_pet_missing_files(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        OxfordPetDataModule(str(tmp_path), download=False)
    for name in ("annotations/trainval.txt", "annotations/test.txt", "images/<image id>.jpg"):
        assert str(tmp_path / "oxford-iiit-pet" / name) in str(err.value)
    write_oxford_pet(tmp_path)
    (tmp_path / "oxford-iiit-pet" / "images" / "pug_test1.jpg").unlink()
    dm = OxfordPetDataModule(str(tmp_path), download=False)
    with pytest.raises(DatasetNotFoundError, match="oxford-iiit-pet/images/pug_test1.jpg"):
        dm.setup("fit")


# ---------------------------------------------------------------- ImageNet subset

def test_imagenet_subset_first_n_classes_resize_and_center_crop(tmp_path):
    write_imagenet(tmp_path)
    dm = ImageNetSubsetDataModule(str(tmp_path), num_classes=2, image_size=16, crop_ratio=1.0, val_size=2,
                                  num_workers=0, batch_size=3)
    assert dm.classes == ["n01000000", "n02000000"] and dm.num_classes == 2 and dm.input_shape == (3, 16, 16)
    assert [len(dm.dataset(s)) for s in ("train", "val", "test")] == [8, 2, 4]
    test = dm.dataset("test")
    assert test.labels.tolist() == [0, 0, 1, 1] and all(p.parent.parent.name == "val" for p in test.paths)
    for i in range(4):  # crop_ratio 1: the centred red square fills the crop; the blue sides are gone
        img, label = test[i]
        inner = img[:, :, 1:-1]  # JPEG blurs the square's left and right edges by a pixel
        assert img.shape == (3, 16, 16) and inner[0].min() > 0.9 and inner[2].max() < 0.1
        assert abs(img[1].mean().item() - 60 * label / 255) < 0.03
    stretched = ImageNetSubsetDataModule(str(tmp_path), num_classes=2, image_size=16, crop_ratio=None, val_size=2)
    assert stretched.dataset("test")[0][0][2].max() > 0.9  # stretching keeps the blue sides
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (3, 3, 16, 16)


def test_imagenet_subset_listed_classes_and_errors(tmp_path):
    write_imagenet(tmp_path)
    dm = ImageNetSubsetDataModule(str(tmp_path), classes=["n03000000", "n01000000"], image_size=8, val_size=2)
    assert dm.classes == ["n03000000", "n01000000"] and dm.num_classes == 2
    assert dm.load_train_pool().labels.tolist() == [0] * 5 + [1] * 5
    assert all(p.parent.name == "n03000000" for p in dm.load_train_pool().paths[:5])
    assert ImageNetSubsetDataModule(str(tmp_path), image_size=8).num_classes == 3
    with pytest.raises(DatasetNotFoundError, match="train/n09999999"):
        ImageNetSubsetDataModule(str(tmp_path), classes=["n01000000", "n09999999"])
    with pytest.raises(ValueError, match="either classes"):
        ImageNetSubsetDataModule(str(tmp_path), classes=["n01000000"], num_classes=1)
    with pytest.raises(ValueError, match=r"num_classes=4 must be in \[1, 3\]"):
        ImageNetSubsetDataModule(str(tmp_path), num_classes=4)
    for f in (tmp_path / "val" / "n02000000").iterdir():
        f.unlink()
    (tmp_path / "val" / "n02000000").rmdir()
    with pytest.raises(DatasetNotFoundError) as err:
        ImageNetSubsetDataModule(str(tmp_path), num_classes=3)
    assert str(tmp_path / "val" / "n02000000") in str(err.value) and "n01000000" not in str(err.value)
    assert ImageNetSubsetDataModule(str(tmp_path), num_classes=1, image_size=8).classes == ["n01000000"]
    with pytest.raises(DatasetNotFoundError, match="train/<class>/<image>"):
        ImageNetSubsetDataModule(str(tmp_path / "nowhere"))
