"""A learnable synthetic dataset for tests and smoke runs: no files, no downloads.

Each class has a random prototype image; samples are the prototype plus noise,
clipped to [0, 1]. Deterministic given the seed.
"""
from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

from datamodules.base import ClassificationDataModule


class SyntheticDataModule(ClassificationDataModule):
    """Args (besides the base ones, see ClassificationDataModule): num_classes, input_shape,
    num_train and num_test images, noise (standard deviation around the prototypes)."""

    def __init__(self, num_classes: int = 10, input_shape: tuple[int, int, int] = (1, 28, 28),
                 num_train: int = 512, num_test: int = 256, noise: float = 0.15,
                 batch_size: int = 64, val_size: int = 64, **kwargs):
        super().__init__(data_dir="", batch_size=batch_size, val_size=val_size, **kwargs)
        self.num_classes = num_classes
        self.input_shape = tuple(input_shape)
        self.mean = (0.5,) * self.input_shape[0]
        self.std = (0.25,) * self.input_shape[0]
        self.num_train, self.num_test, self.noise = num_train, num_test, noise

    def _make(self, n: int, stream: int) -> TensorDataset:
        gen = torch.Generator().manual_seed(self.seed)
        prototypes = torch.rand((self.num_classes, *self.input_shape), generator=gen)
        gen.manual_seed(self.seed * 1000 + stream + 1)
        labels = torch.arange(n) % self.num_classes
        noise = self.noise * torch.randn((n, *self.input_shape), generator=gen)
        return TensorDataset((prototypes[labels] + noise).clamp(0, 1), labels)

    def load_train_pool(self):
        return self._make(self.num_train, stream=0)

    def load_test(self):
        return self._make(self.num_test, stream=1)
