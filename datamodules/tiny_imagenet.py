"""Tiny ImageNet (Le & Yang 2015): 200 classes of 64x64 colour images, read from the
official ``<data_dir>/tiny-imagenet-200`` layout::

    wnids.txt                              class order (label = line index)
    train/<wnid>/images/*.JPEG             training pool
    val/images/*.JPEG                      test split (the official val set) ...
    val/val_annotations.txt                ... labelled by "<file>\\t<wnid>\\t<box>"

The official test set has no labels, so the official val set is the test split here,
and a seeded random part of the training pool (``val_size``, default 2,000 = 10 per
class on average) is held out for validation. Images are decoded lazily as RGB float
tensors in [0, 1] (grey images are converted); ``mean``/``std`` are ImageNet's.
When ``wnids.txt`` is missing and ``download`` is on, the official zip (``URL``, 237 MB)
is downloaded into ``data_dir`` and extracted, once per machine (the processes of a node
take a lock in turn). The layout is checked cheaply when the
datamodule is built (folders, annotation file, and that every annotated val image
exists); what is missing is named in a :class:`DatasetNotFoundError` (with the download
error, when one was tried).
"""
from __future__ import annotations

import hashlib
import re
import tempfile
from pathlib import Path
from typing import Optional

from datamodules.base import ClassificationDataModule
from datamodules.storage import exclusive_lock
from datamodules.image_files import IMAGE_SUFFIXES, IMAGENET_MEAN, IMAGENET_STD, ImageFiles
from datamodules.missing import DatasetNotFoundError, listing, nothing_created_on_failure

NAME = "Tiny ImageNet"
FOLDER = "tiny-imagenet-200"
URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"



def download_lock(folder: Path) -> Path:
    """A lock file for downloads into ``folder``, in the system's temp dir: nothing is created
    in the data folder unless the download succeeds."""
    digest = hashlib.sha256(str(folder.absolute()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"advtrain-download-{digest}.lock"


class TinyImageNetDataModule(ClassificationDataModule):
    """Tiny ImageNet: 200 classes (wnids.txt order), 64x64 RGB; test = official val set.
    Options are the base ones (see ClassificationDataModule), plus ``num_classes: N`` (the
    first N classes of wnids.txt, their training images and val images only; None = all
    200) and ``image_size`` (side in pixels the 64x64 images are resized to; default 64).
    ``in_memory: true`` holds the decoded images (12 KB each at 64 px) in memory."""

    mean = IMAGENET_MEAN
    std = IMAGENET_STD

    def __init__(self, data_dir: str = "data", batch_size: int = 128, val_size: int = 2000,
                 num_workers: int = 2, download: bool = True, num_classes: Optional[int] = None,
                 image_size: int = 64, **kwargs):
        super().__init__(data_dir=data_dir, batch_size=batch_size, val_size=val_size, num_workers=num_workers,
                         **kwargs)
        self.root = Path(data_dir) / FOLDER
        self.download = download
        self._download_error: Exception | None = None
        if download and not (self.root / "wnids.txt").is_file():
            # needed here (num_classes is linked into the model before prepare_data runs): every
            # process of a node takes the lock in turn, and only the first finds the files missing
            with exclusive_lock(download_lock(self.root)):
                if not (self.root / "wnids.txt").is_file():
                    self._download()
        self.all_wnids = self._read_wnids()
        if num_classes is not None and not 1 <= num_classes <= len(self.all_wnids):
            raise ValueError(f"num_classes={num_classes} must be in [1, {len(self.all_wnids)}] (the classes of "
                             f"{self.root / 'wnids.txt'}), or null for all")
        self.wnids = self.all_wnids[:num_classes]
        self.num_classes = len(self.wnids)
        self.image_size = image_size
        self.input_shape = (3, image_size, image_size)
        self.class_index = {w: i for i, w in enumerate(self.wnids)}
        self._check_train()
        self.val_annotations = self._read_val_annotations()

    def _download(self) -> None:
        """Fetch and extract the official zip; a failure is reported with the missing files."""
        from torchvision.datasets.utils import download_and_extract_archive

        try:
            with nothing_created_on_failure(Path(self.data_dir)):
                download_and_extract_archive(URL, download_root=str(self.data_dir))
        except Exception as err:  # noqa: BLE001 - offline or unreachable: report it with what is missing
            self._download_error = err

    def _missing(self, expected: list[str]) -> DatasetNotFoundError:
        return DatasetNotFoundError(NAME, self.root, listing(expected), self._download_error)

    def _read_wnids(self) -> list[str]:
        path = self.root / "wnids.txt"
        if not path.is_file():
            raise self._missing(["wnids.txt", "train/<wnid>/images/*.JPEG", "val/images/*.JPEG",
                                 "val/val_annotations.txt"])
        wnids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if not wnids:
            raise ValueError(f"{path} lists no classes")
        if len(set(wnids)) != len(wnids):
            raise ValueError(f"{path} lists a class twice")
        return wnids

    def _check_train(self) -> None:
        missing = [f"train/{w}/images" for w in self.wnids if not (self.root / "train" / w / "images").is_dir()]
        if missing:
            raise self._missing(missing)

    def _read_val_annotations(self) -> dict[str, str]:
        """file name -> wnid of the selected classes, from val/val_annotations.txt; every
        listed image must exist and every wnid must be one of wnids.txt."""
        path = self.root / "val" / "val_annotations.txt"
        if not path.is_file():
            raise self._missing(["val/val_annotations.txt"])
        annotations: dict[str, str] = {}
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            fields = line.split("\t") if "\t" in line else line.split()
            if len(fields) < 2:
                raise ValueError(f"{path}:{n}: expected '<file>\\t<wnid>...', got {line!r}")
            name, wnid = fields[0].strip(), fields[1].strip()
            if wnid not in self.class_index:
                if wnid in self.all_wnids:
                    continue  # a class left out by num_classes
                raise ValueError(f"{path}:{n}: {wnid} is not listed in wnids.txt")
            annotations[name] = wnid
        if not annotations:
            raise ValueError(f"{path} lists no images")
        images = self.root / "val" / "images"
        present = {p.name for p in images.iterdir()} if images.is_dir() else set()
        missing = [f"val/images/{name}" for name in annotations if name not in present]
        if missing:
            raise self._missing(missing)
        return annotations

    def load_train_pool(self) -> ImageFiles:
        paths, labels = [], []
        for label, wnid in enumerate(self.wnids):
            folder = self.root / "train" / wnid / "images"
            if not folder.is_dir():
                raise self._missing([f"train/{wnid}/images"])
            files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise self._missing([f"train/{wnid}/images/*.JPEG"])
            paths += files
            labels += [label] * len(files)
        return ImageFiles(paths, labels, self.image_size, skip_corrupt=self.skip_corrupt)

    def load_test(self) -> ImageFiles:
        names = sorted(self.val_annotations, key=_natural_key)
        images = self.root / "val" / "images"
        for name in names[:1] + names[-1:]:  # cheap re-check: the folder may have changed since __init__
            if not (images / name).is_file():
                raise self._missing([f"val/images/{name}"])
        return ImageFiles([images / n for n in names], [self.class_index[self.val_annotations[n]] for n in names],
                          self.image_size, skip_corrupt=self.skip_corrupt)

    def describe(self) -> dict:
        return {**super().describe(), "val_size": self.val_size, "test": "official val set",
                "image_size": self.image_size}


def _natural_key(name: str):
    """Sort "val_2.JPEG" before "val_10.JPEG"."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]
