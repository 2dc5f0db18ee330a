"""Any image-folder dataset: ``root/{train,test}/<class>/<image>``.

The CIFAR-10 JPEG copy in ../shared/datasets extracts to this layout. Classes are
the sorted sub-folder names of ``train``; images are decoded to [0, 1] RGB tensors
and optionally resized to ``image_size``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from torchvision import datasets, transforms

from datamodules.base import ClassificationDataModule
from datamodules.missing import DatasetNotFoundError


class ImageFolderDataModule(ClassificationDataModule):
    """Args (besides the base ones): image_size (resize to a square, None = keep),
    mean/std (for the model's normaliser; defaults are ImageNet's)."""

    def __init__(self, data_dir: str = "data", batch_size: int = 128, val_size: int = 5000,
                 train_size: Optional[int] = None, test_size: Optional[int] = None,
                 num_workers: int = 2, seed: int = 0, image_size: Optional[int] = None,
                 mean: Sequence[float] = (0.485, 0.456, 0.406), std: Sequence[float] = (0.229, 0.224, 0.225)):
        super().__init__(data_dir, batch_size, val_size, train_size, test_size, num_workers, seed)
        root = Path(data_dir)
        for split in ("train", "test"):
            if not (root / split).is_dir():
                raise DatasetNotFoundError(f"image folder {root}", root, [f"{split}/<class>/<image>"])
        self.classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
        if not self.classes:
            raise DatasetNotFoundError(f"image folder {root}", root, ["train/<class>/<image>"])
        self.num_classes = len(self.classes)
        self.mean, self.std = tuple(mean), tuple(std)
        steps = [transforms.Resize((image_size, image_size))] if image_size else []
        self.transform = transforms.Compose(steps + [transforms.ToTensor()])
        size = image_size or self._first_image_size()
        self.input_shape = (3, size, size)

    def _first_image_size(self) -> int:
        from PIL import Image

        first = next(p for p in sorted((Path(self.data_dir) / "train" / self.classes[0]).iterdir()))
        with Image.open(first) as img:
            return img.size[1]

    def _folder(self, split: str):
        ds = datasets.ImageFolder(str(Path(self.data_dir) / split), transform=self.transform,
                                  loader=lambda p: datasets.folder.default_loader(p).convert("RGB"))
        if ds.classes != self.classes:
            raise ValueError(f"{split}/ has classes {ds.classes}, train/ has {self.classes}: the layouts must match")
        return ds

    def load_train_pool(self):
        return self._folder("train")

    def load_test(self):
        return self._folder("test")
