"""Files several processes share: atomic writes and an inter-process lock.

Used by the pre-generated adversarial sets and dataset downloads (datamodules), the resumable
evaluation and the result files (callbacks). A reader only ever sees the old or the complete
new version of a file.
"""
from __future__ import annotations

import fcntl
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


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

