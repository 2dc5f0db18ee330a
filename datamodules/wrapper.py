"""A datamodule around another one (``base``): the base's data, with a training split of its own.

Data-level defences (pre-generated adversarial sets, cross-model augmentation) wrap any
datamodule this way. Validation and test splits, ``num_classes``, ``mean``, ``std``,
``input_shape``, the loaders (the resumable training order included) and the batch hooks
are the base's, so the base's training augmentation also applies to the new training
images; a subclass only says how its training split is made (:meth:`train_dataset`).
"""
from __future__ import annotations

from typing import Any, Optional

import pytorch_lightning as pl
from torch.utils.data import DataLoader, Dataset


def _from_base(name: str) -> property:
    return property(lambda self: getattr(self.base, name), doc=f"The base datamodule's ``{name}``.")


class WrappedDataModule(pl.LightningDataModule):
    """The base's data with the training split of :meth:`train_dataset` (built once, on first use)."""

    def __init__(self, base: pl.LightningDataModule):
        super().__init__()
        self.base = base
        self._train: Optional[Dataset] = None

    num_classes = _from_base("num_classes")
    mean = _from_base("mean")
    std = _from_base("std")
    input_shape = _from_base("input_shape")
    batch_size = _from_base("batch_size")
    data_dir = _from_base("data_dir")

    def train_dataset(self) -> Dataset:
        """This datamodule's training split (a subclass builds it, e.g. from the base's)."""
        raise NotImplementedError

    def describe_training_set(self) -> dict[str, Any]:
        """What :meth:`train_dataset` adds, for results' provenance."""
        return {"wrapper": type(self).__name__}

    def _base(self) -> pl.LightningDataModule:
        """The base datamodule, attached to this one's trainer (its hooks look at trainer.training)."""
        self.base.trainer = self.trainer
        return self.base

    def dataset(self, split: str) -> Dataset:
        if split != "train":
            return self._base().dataset(split)
        if self._train is None:
            self._train = self.train_dataset()
        return self._train

    def describe(self) -> dict[str, Any]:
        return {**self.base.describe(), "training_set": self.describe_training_set()}

    # -- the Lightning datamodule interface: the base's, with this training split ---------------
    def prepare_data(self) -> None:
        self._base().prepare_data()

    def setup(self, stage: Optional[str] = None) -> None:
        self._base().setup(stage)
        if stage in (None, "fit"):
            self.dataset("train")

    def teardown(self, stage: Optional[str] = None) -> None:
        self._base().teardown(stage)

    def loader(self, dataset: Dataset, shuffle: bool = False, batch_size: Optional[int] = None) -> DataLoader:
        return self._base().loader(dataset, shuffle=shuffle, batch_size=batch_size)

    def train_dataloader(self) -> DataLoader:
        return self.loader(self.dataset("train"), shuffle=True)

    def val_dataloader(self):
        return self._base().val_dataloader()

    def test_dataloader(self):
        return self._base().test_dataloader()

    def predict_dataloader(self):
        return self._base().predict_dataloader()

    def state_dict(self) -> dict[str, Any]:  # the training position lives with the base's sampler
        return self._base().state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._base().load_state_dict(state_dict)

    def on_before_batch_transfer(self, batch, dataloader_idx):
        return self._base().on_before_batch_transfer(batch, dataloader_idx)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return self._base().transfer_batch_to_device(batch, device, dataloader_idx)

    def on_after_batch_transfer(self, batch, dataloader_idx):
        return self._base().on_after_batch_transfer(batch, dataloader_idx)
