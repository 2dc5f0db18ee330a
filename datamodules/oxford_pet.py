"""Oxford-IIIT Pet (Parkhi et al. 2012) as a binary task: 0 = cat, 1 = dog (the species).

Read through torchvision's ``OxfordIIITPet`` (``target_types="binary-category"``) from
its layout under ``<data_dir>/oxford-iiit-pet``::

    annotations/trainval.txt, annotations/test.txt   "<image id> <breed 1-37> <species 1=cat 2=dog> <breed id>"
    images/<image id>.jpg

and downloaded there by torchvision when online (``download: true``). By default the
official trainval and test lists are pooled and split 70/10/20 (``split``, seeded), as
the cross-model adversarial augmentation paper splits its "Cats vs Dogs"; ``split: null``
keeps the official test set and holds ``val_size`` trainval images out for validation.
Images are decoded lazily as RGB, fitted to ``image_size`` (stretched, or centre-cropped
with ``crop_ratio``), float [0, 1]; ``mean``/``std`` are ImageNet's.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from torchvision import datasets

from datamodules.base import ClassificationDataModule
from datamodules.image_files import IMAGENET_MEAN, IMAGENET_STD, ImageFiles
from datamodules.missing import DatasetNotFoundError, listing, missing_files, nothing_created_on_failure

NAME = "Oxford-IIIT Pet"
FOLDER = "oxford-iiit-pet"
LISTS = {"trainval": f"{FOLDER}/annotations/trainval.txt", "test": f"{FOLDER}/annotations/test.txt"}


class OxfordPetDataModule(ClassificationDataModule):
    """Oxford-IIIT Pet, cat (0) vs dog (1). Args (besides the base ones, see
    ClassificationDataModule): image_size, crop_ratio (None = stretch; else resize the
    shorter side to image_size / crop_ratio and crop the centre), split (default 70/10/20
    of all 7,349 images; null = official trainval/test), download."""

    num_classes = 2
    classes = ("Cat", "Dog")
    mean = IMAGENET_MEAN
    std = IMAGENET_STD

    def __init__(self, data_dir: str = "data", batch_size: int = 64, image_size: int = 64,
                 crop_ratio: Optional[float] = None, split: Optional[Sequence[float]] = (0.7, 0.1, 0.2),
                 val_size: int = 368, num_workers: int = 2, download: bool = True, **kwargs):
        super().__init__(data_dir=data_dir, batch_size=batch_size, val_size=val_size, split=split,
                         num_workers=num_workers, **kwargs)
        self.image_size, self.crop_ratio, self.download = image_size, crop_ratio, download
        self.input_shape = (3, image_size, image_size)
        self._lists: dict[str, ImageFiles] = {}
        if not download and missing_files(Path(data_dir), [*LISTS.values(), f"{FOLDER}/images"]):
            raise DatasetNotFoundError(NAME, Path(data_dir), self._expected())

    def _expected(self) -> list[str]:
        return [*LISTS.values(), f"{FOLDER}/images/<image id>.jpg"]

    def prepare_data(self) -> None:
        """Download what is missing, once: Lightning calls this on one process per node before
        any process loads the data."""
        root = Path(self.data_dir)
        if not missing_files(root, [*LISTS.values(), f"{FOLDER}/images"]):
            return
        if not self.download:
            raise DatasetNotFoundError(NAME, root, self._expected())
        try:
            with nothing_created_on_failure(root / FOLDER):
                datasets.OxfordIIITPet(self.data_dir, "trainval", target_types="binary-category", download=True)
        except Exception as err:  # noqa: BLE001 - any download failure means "not available offline"
            raise DatasetNotFoundError(NAME, root, self._expected(), err) from err

    def _torchvision(self, split: str) -> datasets.OxfordIIITPet:
        root = Path(self.data_dir)
        if missing_files(root, [*LISTS.values(), f"{FOLDER}/images"]):
            if self.trainer is not None:  # prepare_data ran (on another process) and left files missing
                raise DatasetNotFoundError(NAME, root, self._expected())
            self.prepare_data()  # used outside a Trainer: nothing else downloads
        return datasets.OxfordIIITPet(self.data_dir, split, target_types="binary-category", download=False)

    def images(self, split: str) -> ImageFiles:
        """The official ``trainval`` or ``test`` list as files with species labels; every
        listed image must exist."""
        if split not in self._lists:
            ds = self._torchvision(split)
            try:  # torchvision keeps the parsed list privately; reading it avoids decoding every image
                paths, labels = list(ds._images), list(ds._bin_labels)
            except AttributeError as err:
                raise RuntimeError("this torchvision's OxfordIIITPet no longer exposes _images/_bin_labels; "
                                   "update datamodules/oxford_pet.py") from err
            missing = [f"{FOLDER}/images/{p.name}" for p in paths if not Path(p).is_file()]
            if missing:
                raise DatasetNotFoundError(NAME, Path(self.data_dir), listing(missing))
            if not paths:
                raise ValueError(f"{Path(self.data_dir) / LISTS[split]} lists no images")
            self._lists[split] = ImageFiles(paths, labels, self.image_size, self.crop_ratio, self.skip_corrupt)
        return self._lists[split]

    def load_train_pool(self) -> ImageFiles:
        return self.images("trainval")

    def load_test(self) -> ImageFiles:
        return self.images("test")

    def describe(self) -> dict:
        return {**super().describe(), "image_size": self.image_size, "crop_ratio": self.crop_ratio}
