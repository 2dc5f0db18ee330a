"""Where a run's files go: the same folder Lightning gives the run's checkpoints."""
from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl


def run_directory(trainer: "pl.Trainer") -> Path:
    """``<save_dir>/<name>/<version>`` of the first logger (the log dir for CSV/TensorBoard),
    or ``default_root_dir`` without a logger. Call on rank zero: it may start the logger."""
    logger = trainer.logger
    if logger is None:
        return Path(trainer.default_root_dir)
    if getattr(logger, "log_dir", None):
        return Path(logger.log_dir)
    save_dir = logger.save_dir or trainer.default_root_dir
    version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
    return Path(save_dir) / str(logger.name) / version
