"""Preemption: SIGTERM or SIGUSR1 saves a checkpoint and ends the run with exit code 143.

Lightning turns SIGTERM into ``SIGTERMException`` at its next safe point (after a training
batch, or between evaluation batches; every process agrees through a broadcast). This
callback then saves ``last.ckpt`` when fitting, so ``--ckpt_path last`` resumes the run, and
makes the exit non-zero (Lightning's own exit code is 0, which schedulers read as success).
SIGUSR1 (SLURM's ``--signal=SIGUSR1@90``) takes the same path, unless Lightning's SLURM
auto-requeue already handles it (then Lightning saves its ``hpc_ckpt`` and requeues the job).
Evaluation callbacks stop between batches on the same signal (see
:meth:`callbacks.evaluation.EvaluationCallback.stop_if_preempted`); their cache stays valid.
"""
from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_warn
from pytorch_lightning.utilities.exceptions import SIGTERMException

PREEMPTED_EXIT_CODE = 128 + signal.SIGTERM


def _sigusr1_as_sigterm(signum, frame) -> None:
    os.kill(os.getpid(), signal.SIGTERM)


class Preemption(Callback):
    """Save ``last.ckpt`` on SIGTERM/SIGUSR1 during ``fit``; exit with code 143 in every stage."""

    def __init__(self):
        self._previous_sigusr1 = None

    def _install(self) -> None:
        # after Lightning registered its handlers (on_*_start runs after that): never replace its SLURM handler
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGUSR1) in (
                signal.SIG_DFL, None):
            self._previous_sigusr1 = signal.signal(signal.SIGUSR1, _sigusr1_as_sigterm)

    def on_train_start(self, trainer, pl_module) -> None:
        self._install()

    def on_test_start(self, trainer, pl_module) -> None:
        self._install()

    def teardown(self, trainer, pl_module, stage) -> None:
        if self._previous_sigusr1 is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGUSR1, self._previous_sigusr1)
            self._previous_sigusr1 = None

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException):
            return
        exception.code = PREEMPTED_EXIT_CODE
        if trainer.state.fn != "fit":
            rank_zero_warn("preempted (SIGTERM): stopped between batches; rerun the same command to continue")
            return
        path = last_checkpoint_path(trainer)
        trainer.save_checkpoint(path)
        rank_zero_warn(f"preempted (SIGTERM): saved {path}; resume with --ckpt_path last (or that path)")


def last_checkpoint_path(trainer) -> Path:
    """Where the run's ``last.ckpt`` goes: its ModelCheckpoint's folder, else ``default_root_dir``."""
    checkpoint = trainer.checkpoint_callback
    if checkpoint is None or checkpoint.dirpath is None:
        return Path(trainer.default_root_dir) / "last.ckpt"
    path = checkpoint.format_checkpoint_name({}, checkpoint.CHECKPOINT_NAME_LAST)
    checkpoint.last_model_path = path
    return Path(path)
