"""Fine-tuned post-train pairs shared by the processes of one distributed evaluation, each fine-tuned once.

The processes see one folder (under the run's ``default_root_dir``). The first process that needs
a pair claims it by creating ``<a>_<b>.claim`` exclusively (an atomic file creation: exactly one
process wins), fine-tunes it at once and writes its weights to ``<a>_<b>.pt`` (written aside, then
renamed, so a reader never sees half a file). Every other process that needs the pair, now or
later, loads those weights instead of fine-tuning. Nobody waits on anything but a fine-tune in
progress, so there is no deadlock, and the pairs a process needs may appear at any time: the
pairs of its batches, or of the adaptive attack's iterates.

The fine-tune of a pair depends only on (seed, pair, base weights) (see post_train.pair_seed), so
the weights are the same whichever process fine-tunes them, and the counts equal one process's.
The processes must share the folder's filesystem (one machine, or a shared run folder, as
checkpoints need); a process that waits longer than ``timeout`` seconds for a claimed pair stops
with an error that says so.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import torch
from torch import nn


class PairExchange:
    """The folder where the processes of one evaluation claim and share fine-tuned pairs (sorted (a, b))."""

    def __init__(self, folder: Path, timeout: float = 7200.0, poll: float = 0.05):
        self.folder, self.timeout, self.poll = Path(folder), timeout, poll
        self.folder.mkdir(parents=True, exist_ok=True)

    def claim(self, pair: tuple[int, int]) -> bool:
        """True for exactly one caller in all processes: the one that fine-tunes ``pair`` and then publishes it."""
        try:
            os.close(os.open(self._path(pair, ".claim"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return True
        except FileExistsError:
            return False

    def publish(self, pair: tuple[int, int], model: nn.Module) -> None:
        """Write the fine-tuned copy's weights for the other processes."""
        path = self._path(pair, ".pt")
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        torch.save(model.state_dict(), partial)
        os.replace(partial, path)

    def load(self, pair: tuple[int, int], model: nn.Module) -> nn.Module:
        """``model`` (a copy of the base model) with the weights another process fine-tuned for ``pair``,
        waiting while they are being fine-tuned."""
        path, started = self._path(pair, ".pt"), time.monotonic()
        while not path.exists():
            if time.monotonic() - started > self.timeout:
                raise TimeoutError(f"post-train: pair {pair} was claimed in {self.folder} but its weights did not "
                                   f"appear within {self.timeout:.0f} s: the process fine-tuning it died, or the "
                                   "processes do not share this folder (give them a shared default_root_dir)")
            time.sleep(self.poll)
        device = next(model.parameters()).device
        model.load_state_dict(torch.load(path, map_location=device, weights_only=True))
        return model

    def remove(self) -> None:
        """Delete the folder (once every process is done with it)."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def _path(self, pair: tuple[int, int], suffix: str) -> Path:
        return self.folder / f"{pair[0]}_{pair[1]}{suffix}"
