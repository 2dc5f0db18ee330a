"""Images decoded from files on access, for datasets too large or too varied to hold in memory
(``in_memory: true`` decodes them once instead, see datamodules/in_memory.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import functional as TF

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".bmp", ".webp"}


def image_paths(folder: Path) -> list[Path]:
    """Image files under ``folder`` (any depth), sorted."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def fit_image(img: Image.Image, size: int, crop_ratio: Optional[float] = None) -> Image.Image:
    """``img`` as ``size`` x ``size``: stretched (crop_ratio None), or with its shorter side
    resized to ``round(size / crop_ratio)`` and the centre cropped (ImageNet evaluation:
    224 from 256 is crop_ratio 0.875; 1.0 crops the largest centred square)."""
    if crop_ratio is None:
        return img if img.size == (size, size) else img.resize((size, size), Image.BILINEAR)
    short = max(size, round(size / crop_ratio))
    w, h = img.size
    if min(w, h) != short:
        scale = short / min(w, h)
        img = img.resize((max(short, round(w * scale)), max(short, round(h * scale))), Image.BILINEAR)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


class ImageFiles(Dataset):
    """Images decoded from files on access: RGB, fitted to ``size`` x ``size`` by
    :func:`fit_image`, float [0, 1] tensors shaped (3, size, size), with integer labels."""

    def __init__(self, paths: Sequence[Path], labels: Sequence[int], size: int, crop_ratio: Optional[float] = None):
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
        if crop_ratio is not None and not 0 < crop_ratio <= 1:
            raise ValueError(f"crop_ratio={crop_ratio} must be in (0, 1] (or null to stretch)")
        self.paths, self.size, self.crop_ratio = list(paths), size, crop_ratio
        self.labels = torch.as_tensor(list(labels), dtype=torch.long)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):
        with Image.open(self.paths[i]) as img:
            x = TF.pil_to_tensor(fit_image(img.convert("RGB"), self.size, self.crop_ratio))
        return x.float().div_(255), self.labels[i]
