"""A learnable synthetic dataset for tests and smoke runs: no files, no downloads.

Each class has a random prototype image; samples are the prototype plus noise,
clipped to [0, 1]. Deterministic given the seed.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch.utils.data import TensorDataset

from datamodules.base import ClassificationDataModule


class SyntheticDataModule(ClassificationDataModule):
    def __init__(self, num_classes: int = 10, input_shape: tuple[int, int, int] = (1, 28, 28),
                 num_train: int = 512, num_test: int = 256, noise: float = 0.15,
                 batch_size: int = 64, val_size: int = 64, test_size: Optional[int] = None,
                 num_workers: int = 0, seed: int = 0):
        super().__init__("", batch_size, val_size, None, test_size, num_workers, seed)
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
