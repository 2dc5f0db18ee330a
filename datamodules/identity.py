"""The identity of a datamodule's split: its class, its content-relevant settings and a probe of its
items. Keys the caches of adversarial sets and of evaluation batches, and names the data in results."""
from __future__ import annotations

import hashlib
import inspect
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import Dataset

# datamodule arguments that change how batches are served, not which images are in a split
NOT_CONTENT = {"batch_size", "num_workers", "augment", "download", "in_memory", "pin_memory", "persistent_workers",
               "prefetch_factor", "checkpoint_loader", "device_resident"}


def content_probe(dataset: Dataset, samples: int = 16) -> str:
    """Hash of a few evenly spaced items: tells apart splits whose settings look alike."""
    digest = hashlib.sha256(str(len(dataset)).encode())
    for i in torch.linspace(0, len(dataset) - 1, min(samples, len(dataset))).long().unique().tolist():
        x, y = dataset[i]
        digest.update(x.detach().float().contiguous().numpy().tobytes())
        digest.update(str(int(y)).encode())
    return digest.hexdigest()


def dataset_identity(datamodule: pl.LightningDataModule, dataset: Dataset) -> dict[str, Any]:
    """The datamodule's class and content-relevant constructor settings (those of every class
    in its hierarchy, as subclasses pass the base's on as ``**kwargs``), plus a content probe."""
    return {**_settings(datamodule), "size": len(dataset), "probe": content_probe(dataset)}


def _settings(datamodule: pl.LightningDataModule) -> dict[str, Any]:
    """Class and content-relevant settings; a wrapped datamodule (``base``) by its own settings."""
    names = {name for cls in type(datamodule).__mro__ if issubclass(cls, pl.LightningDataModule)
             for name in inspect.signature(cls.__init__).parameters if name != "self"}
    settings = {k: getattr(datamodule, k) for k in sorted(names - NOT_CONTENT) if hasattr(datamodule, k)}
    settings = {k: _settings(v) if isinstance(v, pl.LightningDataModule) else v for k, v in settings.items()}
    return {"class": f"{type(datamodule).__module__}.{type(datamodule).__qualname__}", "settings": settings}
