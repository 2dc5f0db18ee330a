"""Pre-generated adversarial training sets: crafted once on a fixed checkpoint, then trained on.

The mixed-batch paper's first defence (mixed-batch-adversarial-training.md, Sec. III.3):
train a model on clean data, generate one set of adversarial images with it, then fine-tune
the model on that set (``mix: adversarial``, the model initialised from the same checkpoint
with ``model.init_weights``). Unlike ``objective: mixed`` the set is static: it attacks the
checkpoint, not the model being trained.

Threat model of the stored examples: the attack spec's (e.g. L-inf FGSM), crafted white box
on ``checkpoint`` with the true labels of the base datamodule's training split; eps is in
[0, 1] pixel units. Validation and test splits are the base's, clean.

Storage: float32. uint8 would move a pixel by up to 0.5/255 ~ 0.002, a fifth of an eps of
0.01; float16's rounding (up to 2.4e-4 near 1) pushes pixels that FGSM puts exactly on the
eps-ball's surface out of it. float32 is exact; the cached file is memory-mapped, so a large
set costs disk, not RAM.

Cache: one file per key under ``cache_dir``; the key hashes the checkpoint's weights, the
attack's full config (defaults and seed included), the split, the base datamodule's class,
settings and a content probe, the generation batch size and device type (CPU and CUDA
streams differ). A rerun with the same key loads the file (logged as a hit); any change
regenerates (a miss). Files are written atomically. Under DDP the set is generated in
``prepare_data`` when fitting (local rank 0 of each node, while Lightning holds the other
ranks at a barrier; nodes that share ``cache_dir`` may both write it, harmlessly) and every
rank memory-maps it in ``setup``; outside a Trainer, ``setup`` generates a missing set itself.

The wrapper delegates everything else to the base datamodule: its splits, ``num_classes``,
``mean``, ``std``, ``input_shape``, loaders and batch hooks (its training augmentation also
applies to the adversarial images).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Optional, Union

import torch
from pytorch_lightning.utilities import rank_zero_info
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset, TensorDataset
from tqdm.auto import tqdm

from attacks import Attack, create_attack
from attacks.transfer import CHECKPOINT_LOADER, Loader, resolve_loader
from datamodules.base import ClassificationDataModule
from datamodules.identity import dataset_identity
from datamodules.splits import seeded_subset
from datamodules.wrapper import WrappedDataModule
from datamodules.storage import model_fingerprint, write_atomically

MIXES = ("adversarial", "mixed")
FORMAT_VERSION = 1


def generate_adversarial(model: nn.Module, dataset: Dataset, attack: Attack, batch_size: int,
                         device: torch.device, desc: str = "adversarial set") -> tuple[torch.Tensor, torch.Tensor]:
    """Attack every item of ``dataset`` in order: (float32 images, int64 labels) on the CPU."""
    if len(dataset) == 0:
        raise ValueError("cannot generate an adversarial set from an empty dataset")
    images = torch.empty((len(dataset), *dataset[0][0].shape), dtype=torch.float32)
    labels = torch.empty(len(dataset), dtype=torch.long)
    start = 0
    for x, y in tqdm(DataLoader(dataset, batch_size=batch_size), desc=desc, unit="batch"):
        end = start + len(y)
        images[start:end] = attack(model, x.to(device), y.to(device)).float().cpu()
        labels[start:end] = y
        start = end
    return images, labels


def cached_adversarial_set(datamodule: ClassificationDataModule, split: str, model: nn.Module,
                           attack: dict[str, Any], cache_dir: str, seed: int = 0, num_samples: Optional[int] = None,
                           batch_size: int = 256, device: Union[str, torch.device] = "cpu") -> TensorDataset:
    """The adversarial version of ``split`` (or of a seeded subset of ``num_samples`` items),
    crafted on ``model`` with ``attack`` (seeded with ``seed`` unless it names one): loaded
    from ``cache_dir`` when generated before, else generated on ``device`` and saved."""
    device = torch.device(device)
    dataset = seeded_subset(datamodule.dataset(split), num_samples, seed)
    attack = create_attack({"seed": seed, **attack})
    settings = {"format": FORMAT_VERSION, "model": model_fingerprint(model), "attack": attack.config(),
                "split": split, "num_samples": num_samples, "data": dataset_identity(datamodule, dataset),
                "batch_size": batch_size, "device": device.type}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:20]
    path = Path(cache_dir) / f"{attack.name}-{key}.pt"
    label = f"{attack.name} eps={attack.eps:g} on {len(dataset)} {split} images"
    if path.exists():
        rank_zero_info(f"adversarial set cache hit: {label} from {path}")
    else:
        rank_zero_info(f"adversarial set cache miss: generating {label} into {path}")
        images, labels = generate_adversarial(model.to(device), dataset, attack, batch_size, device,
                                              desc=f"adversarial set ({label})")
        record = {"images": images, "labels": labels, "settings": json.dumps(settings, default=str)}
        write_atomically(path, lambda tmp: torch.save(record, tmp))
    stored = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return TensorDataset(stored["images"], stored["labels"])


class PregeneratedAdversarialDataModule(WrappedDataModule):
    """Train on adversarial examples crafted once on a checkpoint; val and test are the base's.

    Args:
        base: the datamodule whose training split is attacked (any ClassificationDataModule).
        checkpoint: the advtrain checkpoint the examples are crafted on.
        attack: an attack spec (``{name: fgsm, eps: 0.1}``, pixel units) or a list of them
            (one adversarial copy of the split per spec).
        mix: ``adversarial`` (train on the adversarial images only: the paper's fine-tuning)
            or ``mixed`` (the clean training images plus every adversarial copy).
        num_samples: attack a seeded subset of this many training images (None = all).
        cache_dir: where generated sets are kept (see the module docstring for the key); default
            ``adversarial_sets`` under the trainer's ``default_root_dir`` (``runs`` without a trainer).
        seed: seeds the attack (unless its spec has a seed) and the subset.
        attack_batch_size: batch size of the generation (part of the cache key; the training
            batch size is not, so changing it reuses the set).
        device: where to generate (default: the trainer's device, else CUDA when available).
        checkpoint_loader: loads ``checkpoint`` as ``checkpoint_loader(path, data=(input shape, classes))``,
            checked to fit the base's data: a callable or its dotted name (default the suite's
            checkpoint loader, as for the transfer attack: :mod:`attacks.transfer`).
    """

    checkpoint_arg = "checkpoint"  # the argument's name in error messages

    def __init__(self, base: ClassificationDataModule, checkpoint: Optional[str] = None,
                 attack: Union[dict[str, Any], list[dict[str, Any]], None] = None, mix: str = "adversarial",
                 num_samples: Optional[int] = None, cache_dir: Optional[str] = None, seed: int = 0,
                 attack_batch_size: int = 256, device: Optional[str] = None,
                 checkpoint_loader: Loader = CHECKPOINT_LOADER):
        super().__init__(base)
        if mix not in MIXES:
            raise ValueError(f"unknown mix {mix!r}; valid: {', '.join(MIXES)}")
        self.checkpoint = checkpoint
        specs = attack if isinstance(attack, (list, tuple)) else [attack] if attack else []
        self.attacks = [dict(spec) for spec in specs]
        for spec in self.attacks:
            create_attack(spec)  # an unknown attack or option fails now, not after loading the data
        if self.attacks and not checkpoint:
            raise ValueError(f"{type(self).__name__} crafts its examples on a trained model: give "
                             f"--data.init_args.{self.checkpoint_arg} <path to an advtrain .ckpt>")
        if not self.attacks and mix == "adversarial":
            raise ValueError("mix: adversarial needs an attack, e.g. attack: {name: fgsm, eps: 0.1}")
        self.mix = mix
        self.num_samples = num_samples
        self.cache_dir = cache_dir
        self.seed = seed
        self.attack_batch_size = attack_batch_size
        self.device = device
        self.checkpoint_loader = checkpoint_loader

    def _cache_dir(self) -> Path:
        if self.cache_dir is not None:
            return Path(self.cache_dir)
        return Path(self.trainer.default_root_dir if self.trainer is not None else "runs") / "adversarial_sets"

    def _generation_device(self) -> torch.device:
        if self.device is not None:
            return torch.device(self.device)
        if self.trainer is not None:
            return self.trainer.strategy.root_device
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def adversarial_sets(self) -> list[TensorDataset]:
        """One adversarial copy of the training split per attack spec (cached on disk)."""
        if not self.attacks:
            return []
        load = resolve_loader(self.checkpoint_loader)
        model = load(self.checkpoint, data=(self.base.input_shape, self.base.num_classes))
        return [cached_adversarial_set(self._base(), "train", model, spec, self._cache_dir(), self.seed,
                                       self.num_samples, self.attack_batch_size,
                                       self._generation_device())
                for spec in self.attacks]

    def prepare_data(self) -> None:
        super().prepare_data()
        if self.trainer is None or self.trainer.state.fn == "fit":  # test/validate runs need no training set
            self.adversarial_sets()

    def train_dataset(self) -> Dataset:
        parts = ([self._base().dataset("train")] if self.mix == "mixed" else []) + self.adversarial_sets()
        return parts[0] if len(parts) == 1 else ConcatDataset(parts)

    def describe_training_set(self) -> dict[str, Any]:
        return {**super().describe_training_set(), "mix": self.mix, "checkpoint": self.checkpoint,
                "attacks": self.attacks, "num_samples": self.num_samples, "seed": self.seed}
