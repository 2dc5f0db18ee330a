"""Per-batch results on disk, so an interrupted evaluation resumes where it stopped.

Results are keyed by the model's weights and every setting that changes them (attacks,
epsilons, split, subset, seed, batch size, dataset). Each global batch is one small file,
written atomically; a restarted evaluation, on any number of processes, loads finished
batches instead of attacking them again.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from datamodules.disk_cache import model_fingerprint, write_atomically


class BatchCache:
    def __init__(self, root: Path, model: nn.Module, settings: dict[str, Any]):
        key = hashlib.sha256(json.dumps({"model": model_fingerprint(model), **settings}, sort_keys=True,
                                        default=str).encode()).hexdigest()[:16]
        self.folder = Path(root) / key

    def _path(self, batch_index: int) -> Path:
        return self.folder / f"batch_{batch_index:06d}.pt"

    def load(self, batch_index: int) -> Optional[torch.Tensor]:
        path = self._path(batch_index)
        return torch.load(path, weights_only=True) if path.exists() else None

    def save(self, batch_index: int, counts: torch.Tensor) -> None:
        write_atomically(self._path(batch_index), lambda tmp: torch.save(counts.cpu(), tmp))
