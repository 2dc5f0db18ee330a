"""Images decoded from files on access, for datasets too large or too varied to hold in memory."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import functional as TF

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageFiles(Dataset):
    """Images decoded from files on access: RGB, resized to ``size`` x ``size`` (when not
    already that size), float [0, 1] tensors shaped (3, size, size), with integer labels."""

    def __init__(self, paths: Sequence[Path], labels: Sequence[int], size: int):
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
        self.paths, self.size = list(paths), size
        self.labels = torch.as_tensor(list(labels), dtype=torch.long)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):
        with Image.open(self.paths[i]) as img:
            img = img.convert("RGB")
            if img.size != (self.size, self.size):
                img = img.resize((self.size, self.size), Image.BILINEAR)
            x = TF.pil_to_tensor(img)
        return x.float().div_(255), self.labels[i]
