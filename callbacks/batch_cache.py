"""Per-batch counts on disk, so an interrupted evaluation resumes where it stopped.

Each entry holds one batch's named counts (:mod:`callbacks.evaluation`). Results are keyed by the model's weights and every setting that changes them (attacks,
epsilons, split, subset, seed, batch size, and the datamodule's identity: its class, every
setting that selects the samples, and a hash of a few of them). Each global batch is one
small file, written atomically, that also records the key it was written for, the batch's
sample count, a hash of the batch's images and labels, and a checksum; a restarted
evaluation, on any number of processes, loads finished batches instead of attacking them
again. An entry that is unreadable, corrupt, written for other settings or other data, or
holds impossible counts is named in a warning and recomputed.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Optional

import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn

from datamodules.storage import model_fingerprint, write_atomically

FORMAT_VERSION = 3  # 3: named counts


def batch_fingerprint(x: torch.Tensor, y: torch.Tensor) -> str:
    """sha256 of a batch's images and labels (their bytes, shapes and dtypes)."""
    digest = hashlib.sha256()
    for t in (x, y):
        t = t.detach().cpu().contiguous()
        digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
        digest.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _checksum(counts: dict[str, torch.Tensor], header: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(header, sort_keys=True, default=str).encode())
    for name in sorted(counts):
        digest.update(name.encode())
        digest.update(counts[name].contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class BatchCache:
    """Entries of named counts with these ``shapes`` ({name: shape}), for ``model`` and ``settings``."""

    def __init__(self, root: Path, model: nn.Module, settings: dict[str, Any], shapes: dict[str, tuple[int, ...]]):
        self.key = hashlib.sha256(json.dumps({"format": FORMAT_VERSION, "model": model_fingerprint(model), **settings},
                                             sort_keys=True, default=str).encode()).hexdigest()
        self.folder = Path(root) / self.key[:16]
        self.shapes = {name: tuple(shape) for name, shape in shapes.items()}

    def _path(self, batch_index: int) -> Path:
        return self.folder / f"batch_{batch_index:06d}.pt"

    def _header(self, batch_index: int, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        return {"key": self.key, "batch_index": batch_index, "samples": len(y), "data": batch_fingerprint(x, y)}

    def load(self, batch_index: int, x: torch.Tensor, y: torch.Tensor) -> Optional[dict[str, torch.Tensor]]:
        """The counts saved for this batch of ``x``, ``y``; None (recompute) when absent or not valid."""
        path = self._path(batch_index)
        if not path.exists():
            return None
        problem = None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unreadable entry is recomputed
            entry, problem = None, f"unreadable ({type(err).__name__})"
        if problem is None:
            problem = self._problem(entry, self._header(batch_index, x, y))
        if problem is None:
            return entry["counts"]
        rank_zero_warn(f"evaluation cache entry {path} is {problem}; recomputing it")
        return None

    def _problem(self, entry: Any, header: dict[str, Any]) -> Optional[str]:
        """Why ``entry`` cannot be used for the batch described by ``header`` (None: it can)."""
        if (not isinstance(entry, dict) or not isinstance(entry.get("counts"), dict)
                or not all(isinstance(c, torch.Tensor) for c in entry["counts"].values())
                or not isinstance(entry.get("header"), dict)):
            return "not a cache entry"
        counts = entry["counts"]
        if entry.get("checksum") != _checksum(counts, entry["header"]):
            return "corrupt (checksum mismatch)"
        saved = entry["header"]
        for field, why in (("key", "written for other settings or another model"), ("batch_index", "for another batch"),
                           ("samples", "for a batch of another size"), ("data", "for other data")):
            if saved.get(field) != header[field]:
                return f"stale ({why})"
        if any(name not in self.shapes or tuple(c.shape) != self.shapes[name] or c.dtype != torch.long
               for name, c in counts.items()):
            return "malformed (counts of other names, shapes or types)"
        if any(c.numel() and (c.min() < 0 or c.max() > header["samples"]) for c in counts.values()):
            return f"forged (a count outside [0, {header['samples']}], the batch's sample count)"
        return None

    def save(self, batch_index: int, x: torch.Tensor, y: torch.Tensor, counts: dict[str, torch.Tensor]) -> None:
        counts = {name: c.detach().cpu().long() for name, c in counts.items()}
        header = self._header(batch_index, x, y)
        entry = {"counts": counts, "header": header, "checksum": _checksum(counts, header)}
        write_atomically(self._path(batch_index), lambda tmp: torch.save(entry, tmp))
