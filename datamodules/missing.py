"""The error for a dataset that is not on disk and could not be downloaded."""
from __future__ import annotations

from pathlib import Path
from contextlib import contextmanager
from typing import Iterable


class DatasetNotFoundError(FileNotFoundError):
    def __init__(self, name: str, folder: Path, expected: Iterable[str], cause: Exception | None = None):
        files = "\n  ".join(str(folder / f) for f in expected)
        why = f" (download failed: {type(cause).__name__}: {cause})" if cause else ""
        super().__init__(
            f"{name} not found{why}. Expected these files:\n  {files}\n"
            f"Put them there, or point --data.data_dir at the folder that holds them."
        )


def missing_files(folder: Path, expected: Iterable[str]) -> list[str]:
    return [f for f in expected if not (folder / f).exists()]


def listing(items: list[str], limit: int = 10) -> list[str]:
    """At most ``limit`` items, then a count of the rest (for long lists of missing files)."""
    return items if len(items) <= limit else items[:limit] + [f"... and {len(items) - limit} more"]


@contextmanager
def nothing_created_on_failure(folder: Path):
    """Around a download into ``folder``: if it fails, the folders it created on the way to
    ``folder`` are removed again (empty ones only: nothing already there is ever deleted)."""
    folder = Path(folder).absolute()
    new = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    try:
        yield
    except BaseException:
        for path in new:
            try:
                path.rmdir()
            except OSError:  # not empty (or already gone): leave it
                pass
        raise
