"""Images held in memory as uint8, and decoding a file-based dataset into them once.

A decoded image costs C x H x W bytes (12 KB at 3x64x64), a quarter of float storage;
items come out as float [0, 1] tensors bit-identical to the decoded files' (both are
``uint8 / 255`` in float32).
"""
from __future__ import annotations

from typing import Optional

import torch
from pytorch_lightning.utilities import rank_zero_only
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset, TensorDataset
from tqdm.auto import tqdm


class UInt8Images(Dataset):
    """In-memory images stored as uint8 (N, C, H, W); items are float [0, 1] tensors."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"expected uint8 images shaped (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, torch.as_tensor(labels).long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i].float().div_(255), self.labels[i]


class _AsUInt8(Dataset):
    """Items of a [0, 1] float dataset as uint8 (exact for images decoded from 8-bit files)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i):
        x, y = self.dataset[i]
        return x.mul(255).round_().to(torch.uint8), torch.as_tensor(y)


def _already_in_memory(dataset: Dataset) -> Optional[UInt8Images]:
    """The same items as a UInt8Images when ``dataset`` is UInt8Images composed through
    Subset/ConcatDataset (a cheap index, no decoding); else None."""
    if isinstance(dataset, UInt8Images):
        return dataset
    if isinstance(dataset, Subset):
        base = _already_in_memory(dataset.dataset)
        if base is None:
            return None
        index = torch.as_tensor(dataset.indices, dtype=torch.long)
        return UInt8Images(base.images[index], base.labels[index])
    if isinstance(dataset, ConcatDataset):
        parts = [_already_in_memory(d) for d in dataset.datasets]
        if any(p is None for p in parts):
            return None
        return UInt8Images(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]))
    return None


def _leaves(dataset: Dataset):
    """The datasets at the bottom of Subset/ConcatDataset compositions."""
    if isinstance(dataset, Subset):
        yield from _leaves(dataset.dataset)
    elif isinstance(dataset, ConcatDataset):
        for d in dataset.datasets:
            yield from _leaves(d)
    else:
        yield dataset


def to_memory(dataset: Dataset, description: str = "decoding into memory", num_workers: int = 0,
              batch_size: int = 256) -> Dataset:
    """Decode every item of ``dataset`` (float [0, 1] images from 8-bit files, all the same
    shape) once into a uint8 tensor, in ``num_workers`` loader processes, with a progress
    bar on rank zero. Datasets already held as tensors are returned without decoding."""
    ready = _already_in_memory(dataset)
    if ready is not None:
        return ready
    if all(isinstance(leaf, (UInt8Images, TensorDataset)) for leaf in _leaves(dataset)):
        return dataset  # float tensors already in memory: nothing to decode, and no 8-bit rounding
    if len(dataset) == 0:
        raise ValueError(f"{description}: the dataset is empty")
    loader = DataLoader(_AsUInt8(dataset), batch_size=batch_size, num_workers=num_workers)
    images, labels = None, []
    start = 0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # per-image ops are tiny: intra-op threads only contend (10x slower on 2 busy cores)
    try:
        with tqdm(total=len(dataset), desc=description, unit="img", disable=rank_zero_only.rank != 0) as bar:
            for x, y in loader:
                if images is None:
                    images = torch.empty((len(dataset), *x.shape[1:]), dtype=torch.uint8)
                images[start:start + len(x)] = x
                labels.append(y)
                start += len(x)
                bar.update(len(x))
    finally:
        torch.set_num_threads(threads)
    return UInt8Images(images, torch.cat(labels))


def as_tensors(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """``dataset`` as two tensors (images, labels): uint8 images of a UInt8Images as they are
    (no copy for one held whole), any other dataset's float items stacked once."""
    held = _already_in_memory(dataset)
    if held is not None:
        return held.images, held.labels
    if len(dataset) == 0:
        raise ValueError("cannot hold an empty dataset on the device")
    images, labels = zip(*(dataset[i] for i in range(len(dataset))))
    return torch.stack(images), torch.as_tensor(labels).long()


class DeviceBatches:
    """Batches cut from a split held whole on one device: images (uint8, or float [0, 1])
    and labels, indexed there in the order of ``sampler`` (every index of the split when
    None). One copy of the order per epoch, none per batch; no worker processes. Batches
    equal a ``DataLoader(UInt8Images(images, labels), batch_size, sampler=sampler)``'s bit
    for bit (both compute ``uint8 / 255`` in float32). ``sampler`` is exposed, so Lightning
    sets its epoch as it does a DataLoader's."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, sampler=None):
        self.images, self.labels, self.batch_size, self.sampler = images, labels, batch_size, sampler
        self.batch_sampler = None  # read by Lightning as on a DataLoader

    def __len__(self) -> int:
        n = len(self.sampler) if self.sampler is not None else len(self.labels)
        return -(-n // self.batch_size)

    def __iter__(self):
        device = self.images.device
        order = torch.arange(len(self.labels), device=device) if self.sampler is None else \
            torch.tensor(list(self.sampler), dtype=torch.long).to(device)
        for index in order.split(self.batch_size):
            x = self.images[index]
            yield (x.float().div_(255) if x.dtype == torch.uint8 else x), self.labels[index]
