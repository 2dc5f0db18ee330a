"""Provenance of every result: which weights, which training run, which code, data and machines.

:func:`provenance` is the one place a result's ``provenance`` block is built; every result
writer (robustness.json, post_train.json, perturbation_score.json, transfer_matrix.json)
calls it. :class:`RunTracker`, added to every ``advtrain`` trainer by the CLI, stores the
training run's identity in each checkpoint (under ``advtrain_run``) so an evaluation of
that checkpoint, in another process or on another day, can name the run it came from; it
also logs the learning rate (``lr``) every training step.
"""
from __future__ import annotations

import os
import platform
import socket
import subprocess
import time
from datetime import datetime, timezone
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import WandbLogger

from callbacks.run_dir import run_directory
from lightning_modules.checkpoints import read_checkpoint
from datamodules.storage import model_fingerprint

RUN_KEY = "advtrain_run"  # top-level key of a checkpoint: the identity of the run that saved it


class RunTracker(Callback):
    """Stores the run's identity in every checkpoint it saves and logs the learning rate."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        for i, optimizer in enumerate(trainer.optimizers):
            key = "lr" if len(trainer.optimizers) == 1 else f"lr/optimizer_{i}"
            pl_module.log(key, float(optimizer.param_groups[0]["lr"]), on_step=True, on_epoch=False)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        if trainer.is_global_zero:  # only rank zero writes the file; other ranks' loggers are dummies
            checkpoint[RUN_KEY] = current_run(trainer)


def current_run(trainer: "pl.Trainer") -> dict[str, Any]:
    """The run this trainer logs to: id, W&B path, group, name, job type, run folder, seed. Rank zero."""
    folder = run_directory(trainer).resolve()
    run: dict[str, Any] = {"id": folder.name if trainer.logger is not None else None, "wandb_path": None,
                           "group": None, "name": None, "job_type": None, "log_model": False, "run_dir": str(folder),
                           "seed": _global_seed()}
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            exp = logger.experiment
            run.update(id=exp.id, wandb_path=exp.path, group=exp.group or None, name=exp.name,
                       job_type=exp.job_type or None, log_model=bool(getattr(logger, "_log_model", False)),
                       offline=bool(getattr(exp, "offline", False)))
            break
    return run


def _global_seed() -> Optional[int]:
    seed = os.environ.get("PL_GLOBAL_SEED")
    return int(seed) if seed is not None and seed.lstrip("-").isdigit() else None


@lru_cache(maxsize=16)
def _checkpoint_header(path: str, mtime_ns: int, size: int) -> dict[str, Any]:
    ckpt = read_checkpoint(path, mmap=True)
    return {"epoch": ckpt.get("epoch"), "global_step": ckpt.get("global_step"), "run": ckpt.get(RUN_KEY)}


def checkpoint_header(path: str | Path) -> dict[str, Any]:
    """Epoch, global step and the saving run's identity (None for checkpoints saved before
    provenance existed) of an advtrain checkpoint, without keeping its weights."""
    stat = Path(path).stat()
    return dict(_checkpoint_header(str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size))


@lru_cache(maxsize=1)
def code_version() -> dict[str, Any]:
    """advtrain's version, and the git commit (with a dirty flag) when run from a checkout."""
    try:
        version = metadata.version("advtrain")
    except metadata.PackageNotFoundError:
        version = None
    repo = Path(__file__).resolve().parents[1]
    commit = dirty = None
    try:
        git = ["git", "-C", str(repo)]
        commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                                check=True).stdout.strip() or None
        status = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                text=True, timeout=10, check=True).stdout
        dirty = bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return {"advtrain_version": version, "git_commit": commit, "git_dirty": dirty}


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({platform.processor() or platform.machine()})"


def _all_device_names(trainer, device: torch.device) -> list[str]:
    """The device of every process (a collective: call on every rank)."""
    name = _device_name(device)
    if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        names: list[Any] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(names, name)
        return [str(n) for n in names]
    return [name]


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def provenance(trainer: "pl.Trainer", pl_module: "pl.LightningModule", started: float,
               evaluation: Any = None) -> dict[str, Any]:
    """The ``provenance`` block of a result. Call on every rank (device names are gathered);
    the rest is filled on rank zero only (others get ``{}``).

    ``evaluation`` (an EvaluationCallback, or anything with ``split``, ``num_samples``, ``seed``)
    describes the evaluated subset.
    """
    devices = _all_device_names(trainer, pl_module.device)
    if not trainer.is_global_zero:
        return {}
    ckpt_path = getattr(trainer, "ckpt_path", None)
    checkpoint: dict[str, Any] = {"path": None, "fingerprint": model_fingerprint(pl_module)}
    if ckpt_path and trainer.state.fn != "fit" and Path(ckpt_path).exists():
        header = checkpoint_header(ckpt_path)
        checkpoint.update(path=str(Path(ckpt_path).resolve()), epoch=header["epoch"],
                          global_step=header["global_step"], weights="loaded from the checkpoint")
        training_run = header["run"] or {"note": "checkpoint saved without advtrain run metadata"}
    else:  # fit: the weights in memory; the run itself is the training run
        callback = trainer.checkpoint_callback
        latest = (callback.last_model_path or callback.best_model_path) if callback is not None else ""
        checkpoint.update(path=str(Path(latest).resolve()) if latest else None, epoch=trainer.current_epoch,
                          global_step=trainer.global_step,
                          weights="in memory at evaluation time; path is the run's latest checkpoint")
        training_run = None
    run = current_run(trainer)
    data: dict[str, Any] = {}
    datamodule = trainer.datamodule
    if hasattr(datamodule, "describe"):
        data.update(datamodule.describe())
    if evaluation is not None:
        split = getattr(evaluation, "split", None)
        data.update(split=split, subset_size=getattr(evaluation, "num_samples", None),
                    subset_seed=getattr(evaluation, "seed", None))
        if split and hasattr(datamodule, "dataset"):
            data["split_size"] = len(datamodule.dataset(split))
    finished = time.time()
    return {
        "checkpoint": checkpoint,
        "training_run": training_run or {k: run[k] for k in ("id", "wandb_path", "group", "name", "run_dir")},
        "run": run,
        "code": code_version(),
        "seed": {"run": _global_seed(), "evaluation": getattr(evaluation, "seed", None),
                 "training": (training_run or run).get("seed")},
        "data": data,
        "world_size": trainer.world_size, "num_nodes": trainer.num_nodes, "devices": devices,
        "precision": str(trainer.precision), "host": socket.gethostname(),
        "timing": {"started": _iso(started), "finished": _iso(finished), "seconds": round(finished - started, 2)},
    }
