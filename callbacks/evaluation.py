"""The template every evaluation callback follows; a subclass says how to count one batch and how to summarise.

An evaluation runs at the end of ``fit`` and/or ``test`` (``run_on``) on a fixed, seeded
subset (``num_samples``) of the val or test split, cut into global batches of
``batch_size`` and sharded over processes (:mod:`callbacks.sharding`). The base class owns
the sequence: refuse inference mode, shard, show progress, count each batch (from the
cache when one is set), stop between batches on preemption, sum the counts over processes,
summarise, add the common fields and provenance, append the result to ``self.results``
(kept in checkpoints) and to ``<run folder>/<filename>``, report.

Counts are named tensors: :meth:`EvaluationCallback.zero_counts` gives every name with its
shape and dtype, :meth:`EvaluationCallback.count_batch` returns some of them for one batch,
:meth:`EvaluationCallback.summarise` reads their sums (on CPU) by name.

Under ``fast_dev_run`` evaluations stand down, as Lightning's own callbacks do, unless
``run_under_fast_dev_run`` asks for them.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_info
from pytorch_lightning.utilities.exceptions import SIGTERMException
from tqdm.auto import tqdm

from callbacks.batch_cache import BatchCache
from callbacks.provenance import provenance
from callbacks.report import append_json
from callbacks.run_dir import run_directory
from callbacks.sharding import NumberedBatches, global_batches
from datamodules.identity import dataset_identity

Counts = dict[str, torch.Tensor]
#: the model's hyperparameters every result names under ``model``
MODEL_KEYS = ("backbone", "source", "num_classes", "objective", "attack", "preprocessing")


def zeros(dtype: torch.dtype = torch.long, **shapes: tuple[int, ...]) -> Counts:
    """``zeros(samples=(), robust=(3, 2))``: named zero counts of these shapes."""
    return {name: torch.zeros(shape, dtype=dtype) for name, shape in shapes.items()}


class EvaluationCallback(Callback):
    """Subclasses implement :meth:`zero_counts`, :meth:`count_batch` and :meth:`summarise`, and may
    override :meth:`prepare`, :meth:`report` and :meth:`settings`. ``STAGES``: the valid ``run_on`` values."""

    STAGES: tuple[str, ...] = ("fit_end", "test_end")
    cache_dir: Optional[str] = None  # a subclass that sets it keeps each batch's counts there (BatchCache)

    def __init__(self, split: str, num_samples: Optional[int], batch_size: int, run_on: Sequence[str],
                 seed: int, filename: str, run_under_fast_dev_run: bool = False):
        unknown = set(run_on) - set(self.STAGES)
        if unknown:
            raise ValueError(f"unknown run_on {sorted(unknown)}; valid: {', '.join(self.STAGES)}")
        if split not in ("val", "test"):
            raise ValueError(f"split must be 'val' or 'test', got {split!r}")
        self.split, self.num_samples, self.batch_size = split, num_samples, batch_size
        self.run_on, self.seed, self.filename = tuple(run_on), seed, filename
        self.run_under_fast_dev_run = run_under_fast_dev_run
        self.results: list[dict[str, Any]] = []

    # -- when it runs ------------------------------------------------------------------
    def setup(self, trainer, pl_module, stage: str) -> None:
        if trainer.fast_dev_run and not self.run_under_fast_dev_run:
            rank_zero_info(f"{type(self).__name__} stands down under fast_dev_run (a smoke run); "
                           "set run_under_fast_dev_run: true to evaluate anyway")

    def runs(self, trainer, stage: str) -> bool:
        """Whether to evaluate at ``stage`` (one of STAGES) now."""
        return (stage in self.run_on and not trainer.sanity_checking
                and (self.run_under_fast_dev_run or not trainer.fast_dev_run))

    def on_fit_end(self, trainer, pl_module):
        if self.runs(trainer, "fit_end"):
            self.evaluate(trainer, pl_module, "fit_end")

    def on_test_end(self, trainer, pl_module):
        if self.runs(trainer, "test_end"):
            self.evaluate(trainer, pl_module, "test_end")

    # -- what a subclass says ----------------------------------------------------------
    def zero_counts(self, trainer, pl_module) -> Counts:
        """Every count of this evaluation by name, zero (see :func:`zeros`)."""
        raise NotImplementedError

    def count_batch(self, pl_module, x: torch.Tensor, y: torch.Tensor, batch_index: int) -> Counts:
        """Counts of one global batch (on the model's device); names of :meth:`zero_counts`."""
        raise NotImplementedError

    def summarise(self, trainer, pl_module, counts: Counts) -> dict[str, Any]:
        """The result's own fields from the counts summed over every batch and process (CPU tensors)."""
        raise NotImplementedError

    def prepare(self, trainer, pl_module) -> None:
        """Before the first batch (on every process): build what count_batch needs."""

    def report(self, trainer, result: dict[str, Any], path: Path) -> None:
        """Rank zero, after ``result`` was appended to ``path``: log it and print it."""

    def settings(self) -> dict[str, Any]:
        """What the counts depend on besides the model and the data: names the callback's
        checkpointed state and keys its cache."""
        return {"split": self.split, "num_samples": self.num_samples, "seed": self.seed}

    def progress_label(self) -> str:
        return f"{type(self).__name__} ({self.split})"

    # -- the sequence ------------------------------------------------------------------
    def evaluate(self, trainer, pl_module, stage: str) -> dict[str, Any]:
        self.require_gradients()
        started = time.time()
        self.prepare(trainer, pl_module)
        counts = {name: c.to(pl_module.device) for name, c in self.zero_counts(trainer, pl_module).items()}
        batches = self.my_batches(trainer)
        cache = self._cache(trainer, pl_module)
        bar = tqdm(total=len(batches), desc=self.progress_label(), disable=trainer.global_rank != 0, leave=False,
                   dynamic_ncols=True)
        for batch_index, (x, y) in batches:
            batch_counts = cache.load(batch_index, x, y) if cache else None
            if batch_counts is None:
                batch_counts = self.count_batch(pl_module, x.to(pl_module.device), y.to(pl_module.device),
                                                batch_index)
                if cache:
                    cache.save(batch_index, x, y, batch_counts)
            for name, value in batch_counts.items():
                counts[name] += value.to(counts[name].device)
            bar.update(1)
            self.stop_if_preempted(trainer)
        bar.close()
        if trainer.world_size > 1:  # every process calls every collective, in the same order
            counts = {name: trainer.strategy.reduce(c, reduce_op="sum") for name, c in counts.items()}
        hparams = dict(getattr(pl_module, "hparams", {}))
        result = {"stage": stage, "split": self.split, "epoch": trainer.current_epoch,
                  "global_step": trainer.global_step,
                  **self.summarise(trainer, pl_module, {name: c.cpu() for name, c in counts.items()}),
                  "model": {k: hparams[k] for k in MODEL_KEYS if k in hparams},
                  "data": trainer.datamodule.describe() if hasattr(trainer.datamodule, "describe") else {},
                  "world_size": trainer.world_size, "seconds": round(time.time() - started, 2),
                  "provenance": provenance(trainer, pl_module, started, self)}
        if trainer.is_global_zero:  # the evaluated checkpoint's epoch and step (a test loop restores neither)
            result.update(epoch=result["provenance"]["checkpoint"]["epoch"],
                          global_step=result["provenance"]["checkpoint"]["global_step"])
        self.results.append(result)
        if trainer.is_global_zero:
            path = run_directory(trainer) / self.filename
            append_json(path, result)
            self.report(trainer, result, path)
        return result

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

    def _cache(self, trainer, pl_module) -> Optional[BatchCache]:
        if self.cache_dir is None:
            return None
        datamodule = trainer.datamodule
        shapes = {name: tuple(c.shape) for name, c in self.zero_counts(trainer, pl_module).items()}
        settings = {**self.settings(), "batch_size": self.batch_size, "counts": shapes,
                    "data": datamodule.describe() if hasattr(datamodule, "describe") else None,
                    "data_identity": dataset_identity(datamodule, datamodule.dataset(self.split))}
        return BatchCache(Path(self.cache_dir), pl_module, settings, shapes)

    # -- resume ------------------------------------------------------------------------
    @property
    def state_key(self) -> str:
        """Several evaluations of one kind in a run (e.g. APGD on a subset beside the full sweep) keep their own state."""
        return self._generate_state_key(**self.settings())

    def state_dict(self) -> dict[str, Any]:
        return {"results": self.results}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.results = list(state_dict.get("results", []))
