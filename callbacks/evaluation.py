"""The shape every evaluation callback shares: where it runs, what it evaluates, its results.

An evaluation runs at the end of ``fit`` and/or ``test`` (``run_on``) on a fixed, seeded
subset (``num_samples``) of the val or test split, cut into global batches of
``batch_size`` and sharded over processes (:mod:`callbacks.sharding`). Each run appends a
result dict to ``self.results``.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities.exceptions import SIGTERMException

from callbacks.sharding import NumberedBatches, global_batches


class EvaluationCallback(Callback):
    """Subclasses implement :meth:`evaluate`; ``STAGES`` lists the valid ``run_on`` values."""

    STAGES: tuple[str, ...] = ("fit_end", "test_end")
    skip_fast_dev_run = False  # True: a one-batch smoke run does not evaluate

    def __init__(self, split: str, num_samples: Optional[int], batch_size: int, run_on: Sequence[str],
                 seed: int, filename: str):
        unknown = set(run_on) - set(self.STAGES)
        if unknown:
            raise ValueError(f"unknown run_on {sorted(unknown)}; valid: {', '.join(self.STAGES)}")
        if split not in ("val", "test"):
            raise ValueError(f"split must be 'val' or 'test', got {split!r}")
        self.split, self.num_samples, self.batch_size = split, num_samples, batch_size
        self.run_on, self.seed, self.filename = tuple(run_on), seed, filename
        self.results: list[dict[str, Any]] = []

    def _runs(self, trainer, stage: str) -> bool:
        return stage in self.run_on and not (self.skip_fast_dev_run and trainer.fast_dev_run)

    def on_fit_end(self, trainer, pl_module):
        if self._runs(trainer, "fit_end") and not trainer.sanity_checking:
            self.evaluate(trainer, pl_module, "fit_end")

    def on_test_end(self, trainer, pl_module):
        if self._runs(trainer, "test_end"):
            self.evaluate(trainer, pl_module, "test_end")

    def require_gradients(self) -> None:
        """Attacks need gradients: refuse to run under inference mode, naming the fix."""
        if torch.is_inference_mode_enabled():
            raise RuntimeError(f"{type(self).__name__} needs gradients for its attacks: "
                               "set --trainer.inference_mode false")

    @staticmethod
    def stop_if_preempted(trainer) -> None:
        """Between two batches: on SIGTERM/SIGUSR1 stop here (finished batches stay cached) and exit
        non-zero (see :mod:`callbacks.preemption`); rerunning the same command continues."""
        if trainer.received_sigterm:
            raise SIGTERMException()

    def my_batches(self, trainer) -> NumberedBatches:
        """This process's share of the evaluated samples, as (global batch index, batch) pairs."""
        return global_batches(trainer.datamodule.dataset(self.split), self.num_samples, self.batch_size,
                              self.seed, trainer.global_rank, trainer.world_size)

    def evaluate(self, trainer, pl_module, stage: str) -> dict[str, Any]:
        raise NotImplementedError
