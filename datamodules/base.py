"""The shared shape of every datamodule: [0, 1] pixels, deterministic splits, loaders,
and the data options every dataset gets from one YAML line.

Subclasses provide the training pool and the test set; this base holds out a
deterministic validation part of the pool (seeded) or, with ``split``, pools all the
data and splits it by fractions; it then optionally keeps fixed subsets, balances the
training split, decodes file-based splits into memory, and builds the loaders.
``batch_size`` is per process: under DDP with N processes the effective batch is
N x batch_size. Images are float tensors in [0, 1], never normalised; ``mean`` and
``std`` are exposed for the model's normalisation layer. Training batches are augmented
on the device, after the transfer, when ``augment`` lists augmentations.
"""
from __future__ import annotations

import warnings
from typing import Any, Optional, Sequence, Union

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities.warnings import PossibleUserWarning
from torch.utils.data import ConcatDataset, DataLoader, Dataset, DistributedSampler, Sampler, Subset

from attacks.seeding import derive_seed, run_seed
from datamodules.augmentations import AugmentSpec, Compose, create_augmentations
from datamodules.in_memory import DeviceBatches, UInt8Images, as_tensors, to_memory
from datamodules.samplers import ResumableSampler, UnpaddedDistributedSampler
from datamodules.splits import (BALANCE_MODES, check_fractions, fraction_split, labels_of, seeded_subset,
                                undersample)

SPLITS = ("train", "val", "test")
# Lightning cannot see that the datamodule restores the training position itself (ResumableSampler)
warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended",
                        category=PossibleUserWarning)
__all__ = ["ClassificationDataModule", "UInt8Images", "UnpaddedDistributedSampler", "seeded_subset", "SPLITS"]


class ClassificationDataModule(pl.LightningDataModule):
    """Base datamodule. Subclasses set ``num_classes``, ``mean``, ``std``, ``input_shape``
    and implement :meth:`load_train_pool` and :meth:`load_test` (or :meth:`load_all`).

    Args:
        data_dir: where the dataset lives (or is downloaded to when online).
        batch_size: per-process batch size.
        val_size: images held out from the training pool for validation (seeded).
        train_size, test_size: keep only a fixed random subset (quick runs); None = all.
        num_workers: DataLoader workers per process.
        seed: seed of the splits, the subsets and the balancing.
        augment: training-batch augmentations, e.g. ``[{name: crop, padding: 4}, {name: flip}]``
            (see datamodules/augmentations.py); ``true`` = the dataset's ``default_augment``,
            ``false``/``null``/``[]`` = none.
        balance: ``undersample`` cuts every class of the training split to the smallest
            class's count (seeded; after train_size); null = keep all.
        split: ``[train, val, test]`` fractions: pool all labelled data (training pool and
            test set) and split it, seeded; ``val_size`` is then unused. null = the
            dataset's own train/test split.
        in_memory: decode every split once into a uint8 tensor (file-based datasets; the
            images must share one size) instead of decoding files on every epoch.
        device_resident: hold each split whole on the training device (uint8 for images
            from 8-bit files: 150 MB for CIFAR-10) and cut, shuffle and augment batches there:
            no loader workers, no host-to-device copy per batch, the same pixels and order as
            the ordinary path. For datasets that fit in device memory; implies in_memory.
        pin_memory: pin loader batches; null = when CUDA is available.
        persistent_workers: keep loader workers alive between epochs (with num_workers > 0).
        prefetch_factor: batches each worker loads ahead (with num_workers > 0); null = torch's.
        skip_corrupt: file-based datasets: decode every file once up front and leave out (and
            count) the unreadable ones; false = a file that fails to decode is an error naming it.
    """

    num_classes: int
    mean: Sequence[float]
    std: Sequence[float]
    input_shape: tuple[int, int, int]
    default_augment: Sequence[AugmentSpec] = ()

    def __init__(self, data_dir: str = "data", batch_size: int = 128, val_size: int = 5000,
                 train_size: Optional[int] = None, test_size: Optional[int] = None,
                 num_workers: int = 0, seed: int = 0,
                 augment: Union[bool, Sequence[AugmentSpec], None] = None,
                 balance: Optional[str] = None, split: Optional[Sequence[float]] = None,
                 in_memory: bool = False, pin_memory: Optional[bool] = None,
                 persistent_workers: bool = True, prefetch_factor: Optional[int] = None, skip_corrupt: bool = False,
                 device_resident: bool = False):
        super().__init__()
        self.data_dir = data_dir
        self.batch_size = batch_size
        self.val_size = val_size
        self.train_size = train_size
        self.test_size = test_size
        self.num_workers = num_workers
        self.seed = seed
        self.augment = self._augment_specs(augment)
        self.augmentations: Compose = create_augmentations(self.augment)
        if balance not in (None, *BALANCE_MODES):
            raise ValueError(f"unknown balance {balance!r}; valid: {', '.join(BALANCE_MODES)} (or null)")
        self.balance = balance
        self.split = None if split is None else check_fractions(split)
        self.in_memory = in_memory or device_resident
        self.device_resident = device_resident
        self._on_device: dict[int, tuple[Dataset, torch.Tensor, torch.Tensor]] = {}  # id(dataset) -> its tensors
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.persistent_workers = persistent_workers
        self.prefetch_factor = prefetch_factor
        self.skip_corrupt = skip_corrupt
        self.split_indices: dict[str, list[int]] = {}  # with `split`: indices into load_all()
        self._all: Optional[Dataset] = None
        self._splits: dict[str, Dataset] = {}
        self._train_sampler: Optional[ResumableSampler] = None
        self._resume_position: Optional[dict[str, int]] = None

    def _augment_specs(self, augment) -> list:
        if augment is None or augment is False:
            return []
        if augment is True:
            if not self.default_augment:
                raise ValueError(f"{type(self).__name__} has no default augmentation: list them, "
                                 "e.g. augment: [{name: crop, padding: 4}, {name: flip}]")
            return list(self.default_augment)
        if isinstance(augment, (str, dict)):
            raise ValueError(f"augment must be a list, e.g. [{{name: flip}}]; got {augment!r}")
        return list(augment)

    # -- what subclasses provide ------------------------------------------------------------
    def load_train_pool(self) -> Dataset:
        raise NotImplementedError

    def load_test(self) -> Dataset:
        raise NotImplementedError

    def load_all(self) -> Dataset:
        """Every labelled item, for ``split``: the training pool followed by the test set.
        Datasets without an official test set override this."""
        return ConcatDataset([self.load_train_pool(), self.load_test()])

    # -- splits ------------------------------------------------------------------------------
    def setup(self, stage: Optional[str] = None) -> None:
        fit = stage in (None, "fit", "validate") and "train" not in self._splits
        test = stage in (None, "test", "predict") and "test" not in self._splits
        if not (fit or test):
            return
        if self.split is not None:
            if self._all is None:
                self._all = self.load_all()
            pool = self._all
            if not self.split_indices:
                self.split_indices = fraction_split(len(pool), self.split, self.seed)
            parts = {s: Subset(pool, self.split_indices[s]) for s in SPLITS}
        else:
            parts = {}
            if fit:
                pool = self.load_train_pool()
                if not 0 <= self.val_size < len(pool):
                    raise ValueError(f"val_size={self.val_size} must be in [0, {len(pool)}) for this training pool")
                order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(self.seed)).tolist()
                parts["val"], parts["train"] = Subset(pool, order[: self.val_size]), Subset(pool, order[self.val_size:])
            if test:
                parts["test"] = self.load_test()
        if fit:
            train = seeded_subset(parts["train"], self.train_size, self.seed)
            if self.balance == "undersample":
                before = len(train)
                train = undersample(train, self.seed)
                classes = len(labels_of(train).unique())
                rank_zero_info(f"{type(self).__name__}: balanced the training split by undersampling, "
                               f"{before} -> {len(train)} images ({len(train) // classes} per class)")
            self._splits["train"], self._splits["val"] = self._finish(train, "train"), self._finish(parts["val"], "val")
        if test:
            self._splits["test"] = self._finish(seeded_subset(parts["test"], self.test_size, self.seed), "test")

    def _finish(self, dataset: Dataset, split: str) -> Dataset:
        if not self.in_memory or len(dataset) == 0:
            return dataset
        return to_memory(dataset, f"{type(self).__name__} {split}: decoding into memory", self.num_workers)

    def dataset(self, split: str) -> Dataset:
        """The dataset of ``split`` (train | val | test), loading it if needed."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
        if split not in self._splits:
            self.setup("test" if split == "test" else "fit")
        return self._splits[split]

    # -- loaders -----------------------------------------------------------------------------
    def loader(self, dataset: Dataset, shuffle: bool = False, batch_size: Optional[int] = None,
               sampler: Optional[Sampler] = None) -> DataLoader:
        """A loader in index order (or by ``sampler``), or with ``shuffle`` the resumable training
        order: seeded by the run seed and the epoch, shared out over the trainer's processes."""
        batch_size = batch_size or self.batch_size
        trainer = self.trainer
        if shuffle:
            world, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
            sampler = self._train_sampler = ResumableSampler(dataset, world, rank, derive_seed(run_seed(), "shuffle"),
                                                             batch_size)
            if self._resume_position is not None:
                self._train_sampler.resume(self._resume_position)
                self._resume_position = None
        if self.device_resident:
            if sampler is None and trainer is not None and trainer.world_size > 1:  # what Lightning gives a DataLoader
                sampler = DistributedSampler(dataset, trainer.world_size, trainer.global_rank, shuffle=False)
            return DeviceBatches(*self._tensors_on_device(dataset), batch_size, sampler)
        kwargs: dict[str, Any] = {"num_workers": self.num_workers, "pin_memory": self.pin_memory}
        if self.num_workers > 0:
            kwargs.update(persistent_workers=self.persistent_workers, prefetch_factor=self.prefetch_factor)
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, **kwargs)

    def _tensors_on_device(self, dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
        """``dataset``'s images and labels on the trainer's device (the CPU without one), copied once."""
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        held = self._on_device.get(id(dataset))
        if held is None or held[0] is not dataset or held[1].device != device:
            held = (dataset, *(t.to(device) for t in as_tensors(dataset)))
            self._on_device[id(dataset)] = held
        return held[1], held[2]

    # -- the training position, in every checkpoint ---------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        trainer = self.trainer
        if self._train_sampler is None or trainer is None:
            return {}
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return {"train_position": self._train_sampler.position(done, trainer.num_training_batches)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # restored before Lightning asks for the training loader, which then starts there
        self._resume_position = state_dict.get("train_position")

    def evaluation_loader(self, dataset: Dataset) -> DataLoader:
        """Outside ``fit``, under a multi-process strategy, each process gets its own share of
        the items and nothing is padded, so metrics reduced over processes count every item once.
        (While fitting, Lightning's padding sampler stays: DDP's wrapped forward is a collective,
        so every process must run the same number of validation batches.)"""
        trainer = self.trainer
        if trainer is None or trainer.world_size == 1 or trainer.state.fn == TrainerFn.FITTING:
            return self.loader(dataset)
        return self.loader(dataset, sampler=UnpaddedDistributedSampler(dataset, trainer.world_size, trainer.global_rank))

    def train_dataloader(self):
        return self.loader(self.dataset("train"), shuffle=True)

    def val_dataloader(self):
        return self.evaluation_loader(self.dataset("val"))

    def test_dataloader(self):
        return self.evaluation_loader(self.dataset("test"))

    def predict_dataloader(self):
        return self.evaluation_loader(self.dataset("test"))

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Augment training batches on the device (validation, test and attacks see clean images)."""
        if len(self.augmentations) and self.trainer is not None and self.trainer.training:
            x, y = batch
            # the draws of step k depend on (run seed, k, rank) only, so a resumed run repeats them
            with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
                torch.manual_seed(derive_seed(run_seed(), "augment", self.trainer.global_step, self.trainer.global_rank))
                batch = (self.augmentations(x), y)
        return batch

    def describe(self) -> dict:
        return {"dataset": type(self).__name__, "data_dir": str(self.data_dir), "num_classes": self.num_classes,
                "augment": self.augment, "balance": self.balance,
                "split": list(self.split) if self.split else None, "in_memory": self.in_memory,
                "device_resident": self.device_resident}
