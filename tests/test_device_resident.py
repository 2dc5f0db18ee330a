"""``device_resident: true``: a split held whole on the device gives the ordinary loader's
batches bit for bit (order, sharding, resume position, augmentation), and a run resumed
mid-epoch ends as the uninterrupted one did. On CPU, the device is the CPU."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, DistributedSampler

from datamodules import CIFAR100DataModule, SyntheticDataModule
from datamodules.in_memory import DeviceBatches, UInt8Images
from tests.test_cli import SYNTHETIC, csv_logger
from tests.test_data_pipeline import _Recorder, write_cifar100
from tests.test_fault_tolerance import TRAIN, assert_bitwise_equal, last_checkpoint, run_ok, weights


def _cifar100(root, **kwargs):
    return CIFAR100DataModule(str(root), download=False, val_size=10, batch_size=8, seed=3, augment=False, **kwargs)


def _batches(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def _assert_same_batches(a, b):
    assert len(a) == len(b) and a, "no batches"
    for (xa, ya), (xb, yb) in zip(a, b):
        assert xa.dtype == xb.dtype == torch.float32 and torch.equal(xa, xb) and torch.equal(ya, yb)


def _fake_trainer(world: int, rank: int):
    return SimpleNamespace(world_size=world, global_rank=rank, strategy=SimpleNamespace(root_device=torch.device("cpu")),
                           state=SimpleNamespace(fn=None))


@pytest.mark.parametrize("world,rank", [(1, 0), (2, 0), (2, 1)])
def test_same_batches_as_the_ordinary_loader_in_every_epoch_shard_and_resume(world, rank, tmp_path):
    write_cifar100(tmp_path, n_train=70, n_test=20)
    plain, resident = _cifar100(tmp_path), _cifar100(tmp_path, device_resident=True)
    for dm in (plain, resident):
        dm.trainer = _fake_trainer(world, rank)
    assert resident.in_memory and isinstance(resident.dataset("train"), UInt8Images)
    for epoch in (0, 1):
        loaders = [dm.train_dataloader() for dm in (plain, resident)]
        assert isinstance(loaders[1], DeviceBatches) and len(loaders[0]) == len(loaders[1])
        for loader in loaders:
            loader.sampler.set_epoch(epoch)  # what Lightning does with a DataLoader's sampler, and with ours
        _assert_same_batches(*map(_batches, loaders))
    # resumed two batches into epoch 1: both continue with the same third batch
    for dm in (plain, resident):
        dm.load_state_dict({"train_position": {"epoch": 1, "batches_done": 2}})
    resumed = [_batches(dm.train_dataloader()) for dm in (plain, resident)]
    _assert_same_batches(*resumed)
    assert len(resumed[0]) == len(plain.train_dataloader()) - 2
    for split in ("val", "test"):  # in order; under DDP sharded as Lightning shards a DataLoader (padded)
        data = plain.dataset(split)
        lightning = DistributedSampler(data, world, rank, shuffle=False) if world > 1 else None
        _assert_same_batches(_batches(plain.loader(data, sampler=lightning)),
                             _batches(resident.loader(resident.dataset(split))))


def test_uint8_images_are_copied_to_the_device_once_and_float_datasets_kept_exact():
    dm = SyntheticDataModule(num_train=40, val_size=8, batch_size=16, device_resident=True)
    first, second = dm.train_dataloader(), dm.train_dataloader()
    assert first.images is second.images, "the split is held once, not copied per loader"
    plain = SyntheticDataModule(num_train=40, val_size=8, batch_size=16)
    x = torch.cat([b[0] for b in DeviceBatches(first.images, first.labels, 16)])
    assert torch.equal(x, torch.cat([b[0] for b in DataLoader(plain.dataset("train"), batch_size=16)]))


def test_augmented_training_batches_equal_the_ordinary_path_in_a_real_trainer():
    """Through Lightning (transfer, on_after_batch_transfer, seeded augmentation): bitwise the same pixels."""
    seen = []
    for resident in (False, True):
        dm = SyntheticDataModule(num_train=96, val_size=16, batch_size=16, device_resident=resident,
                                 augment=[{"name": "crop", "padding": 2}, {"name": "flip"}, {"name": "noise"}])
        model = _Recorder()
        trainer = pl.Trainer(max_steps=7, limit_val_batches=1, num_sanity_val_steps=0, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             accelerator="cpu")
        trainer.fit(model, dm)
        seen.append(model.seen)
    assert len(seen[0]["train"]) == 7, "the run spans two epochs (5 batches each)"
    for split in ("train", "val"):
        assert all(torch.equal(a, b) for a, b in zip(seen[0][split], seen[1][split], strict=True)), split


@pytest.mark.slow
def test_resumed_mid_epoch_equals_the_uninterrupted_run_and_the_ordinary_path(tmp_path):
    """Real processes: PGD-AT with augmentation and shuffling, 3 epochs of 6 batches. Held on the
    device, the weights equal the ordinary loader's bit for bit, and a run resumed from the
    mid-epoch checkpoint of step 4 ends with the same weights too."""
    checkpoints = ["--trainer.callbacks+=ModelCheckpoint", "--trainer.callbacks.every_n_train_steps", "4",
                   "--trainer.callbacks.save_top_k", "-1"]
    args = [*TRAIN, *checkpoints, "--trainer.max_epochs", "3", "--trainer.limit_train_batches", "6"]
    assert args[:len(SYNTHETIC)] == SYNTHETIC
    resident = ["--data.device_resident", "true"]
    run_ok(["fit", *args, *csv_logger(tmp_path / "plain")], tmp_path)
    run_ok(["fit", *args, *resident, *csv_logger(tmp_path / "whole")], tmp_path)
    assert_bitwise_equal(weights(last_checkpoint(tmp_path / "plain")), weights(last_checkpoint(tmp_path / "whole")))
    (mid_epoch,) = (tmp_path / "whole").rglob("*step=4.ckpt")
    run_ok(["fit", *args, *resident, *csv_logger(tmp_path / "resumed"), "--ckpt_path", str(mid_epoch)], tmp_path)
    assert_bitwise_equal(weights(last_checkpoint(tmp_path / "whole")), weights(last_checkpoint(tmp_path / "resumed")))
