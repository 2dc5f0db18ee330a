"""The error for a dataset that is not on disk and could not be downloaded."""
from __future__ import annotations

from pathlib import Path
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
