"""What the suite keeps on disk between processes and runs: atomic writes, an inter-process lock,
and the fingerprint of a model's weights that keys caches and results.

Plain Python and torch, importing nothing from the project: datamodules, callbacks and experiments
all use it (attacks, storage <- lightning_modules, datamodules <- callbacks <- experiments).
"""
from storage.files import exclusive_lock, write_atomically
from storage.fingerprint import model_fingerprint

__all__ = ["exclusive_lock", "model_fingerprint", "write_atomically"]
