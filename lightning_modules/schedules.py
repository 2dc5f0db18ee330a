"""Training progress and the schedules that follow it (learning rate, attack eps).

Progress is the fraction of training done, in [0, 1]: the larger of steps done over
the planned steps and, when ``--trainer.max_time`` is set, time spent over the time
allowed. A run capped by time therefore still warms up and anneals fully.
"""
from __future__ import annotations

import math

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Timer

LR_SCHEDULES = ("constant", "cosine", "linear", "multistep")


def training_progress(trainer: "pl.Trainer | None") -> float:
    if trainer is None:
        return 0.0
    progress = 0.0
    total = trainer.estimated_stepping_batches
    if total and math.isfinite(total):
        progress = trainer.global_step / total
    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
    remaining = timer.time_remaining("train") if timer is not None else None
    if remaining is not None:
        elapsed = timer.time_elapsed("train")
        progress = max(progress, elapsed / max(1e-9, elapsed + remaining))
    return min(max(progress, 0.0), 1.0)


def lr_factor(schedule: str, progress: float, warmup: float = 0.0, milestones=(0.5, 0.75), gamma=0.1) -> float:
    """Multiplier of the base learning rate at ``progress``; linear warm-up over ``warmup``."""
    if warmup > 0 and progress < warmup:
        return progress / warmup
    if schedule == "constant":
        return 1.0
    rest = (progress - warmup) / max(1e-12, 1.0 - warmup)
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * rest))
    if schedule == "linear":
        return max(0.0, 1.0 - rest)
    if schedule == "multistep":
        return gamma ** sum(progress >= m for m in milestones)
    raise ValueError(f"unknown lr_schedule {schedule!r}; valid: {', '.join(LR_SCHEDULES)}")


def ramp(progress: float, warmup: float) -> float:
    """Linear ramp from 0 to 1 over the first ``warmup`` fraction of training."""
    return 1.0 if warmup <= 0 else min(1.0, progress / warmup)
