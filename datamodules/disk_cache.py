"""Files the on-disk caches share: atomic writes and a fingerprint of a model's weights.

Used by the pre-generated adversarial sets (datamodules) and the resumable evaluation
(callbacks). A reader only ever sees the old or the complete new version of a file.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable

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


def model_fingerprint(model: nn.Module) -> str:
    """sha256 over the names and bytes of every tensor in the state_dict."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
