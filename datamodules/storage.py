"""Files the suite keeps on disk between processes and runs: atomic writes, an inter-process lock,
and the fingerprint of a model's weights that keys caches and results.

Plain Python and torch, importing nothing from the project. Used by the pre-generated adversarial
sets and dataset downloads here, and by the resumable evaluation and result files of callbacks/
(datamodules is the lowest package both sides may import). A reader only ever sees the old or the
complete new version of a file.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn


def write_atomically(path: Path, write: Callable[[str], None]) -> None:
    """Create ``path``'s folder, let ``write`` fill a temporary file beside it, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def exclusive_lock(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_file`` (created if needed): the processes of one machine
    take it in turn, for one read-modify-write or one download at a time."""
    with open(lock_file, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        yield


def model_fingerprint(model: nn.Module) -> str:
    """sha256 over the names and bytes of every tensor in the state_dict."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
