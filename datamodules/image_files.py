"""Images decoded from files on access, for datasets too large or too varied to hold in memory
(``in_memory: true`` decodes them once instead, see datamodules/in_memory.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import torch
from PIL import Image
from pytorch_lightning.utilities import rank_zero_warn
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


def is_readable_image(path: Path) -> bool:
    """True when PIL can open, verify and fully decode ``path`` (empty, truncated and
    garbage files fail). JPEGs are decoded at reduced scale (draft mode) for speed; the
    whole compressed stream is still read, so truncation is still caught."""
    try:
        if path.stat().st_size == 0:
            return False
        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:
            img.draft("RGB", (16, 16))
            img.load()
        return True
    except Exception:  # noqa: BLE001 - any failure to decode means "skip this file"
        return False


class CorruptImageError(OSError):
    """An image file that cannot be decoded; the message names it and the fix."""


class ImageFiles(Dataset):
    """Images decoded from files on access: RGB, fitted to ``size`` x ``size`` by
    :func:`fit_image`, float [0, 1] tensors shaped (3, size, size), with integer labels.

    A file that fails to decode is a :class:`CorruptImageError` naming it. With
    ``skip_corrupt`` every file is decoded once up front and unreadable ones are left out
    (listed in ``skipped``, counted in a warning)."""

    def __init__(self, paths: Sequence[Path], labels: Sequence[int], size: int, crop_ratio: Optional[float] = None,
                 skip_corrupt: bool = False):
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
        if crop_ratio is not None and not 0 < crop_ratio <= 1:
            raise ValueError(f"crop_ratio={crop_ratio} must be in (0, 1] (or null to stretch)")
        self.skipped: list[str] = []
        if skip_corrupt:
            readable = [is_readable_image(Path(p)) for p in paths]
            self.skipped = [str(p) for p, ok in zip(paths, readable) if not ok]
            paths, labels = [p for p, ok in zip(paths, readable) if ok], [y for y, ok in zip(labels, readable) if ok]
            if self.skipped:
                rank_zero_warn(f"skipped {len(self.skipped)} unreadable image file(s) of {len(readable)}, "
                               f"e.g. {self.skipped[0]}")
        self.paths, self.size, self.crop_ratio = list(paths), size, crop_ratio
        self.labels = torch.as_tensor(list(labels), dtype=torch.long)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):
        try:
            with Image.open(self.paths[i]) as img:
                x = TF.pil_to_tensor(fit_image(img.convert("RGB"), self.size, self.crop_ratio))
        except (OSError, ValueError, SyntaxError) as err:  # PIL's decode errors
            raise CorruptImageError(f"cannot decode image file {self.paths[i]} ({type(err).__name__}: {err}): "
                                    "replace or delete it, or set --data.skip_corrupt true to skip and count "
                                    "unreadable files") from err
        return x.float().div_(255), self.labels[i]
