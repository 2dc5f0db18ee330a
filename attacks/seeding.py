"""Seeds derived from a run seed and an identity (stage, step, batch, rank, ...).

Every random draw of a run comes from a seed derived here, never from the OS, so a fixed
run seed reproduces a run bitwise on CPU, and a run resumed at step k draws what the
uninterrupted run drew at step k. The run seed is Lightning's ``seed_everything`` value
(the ``PL_GLOBAL_SEED`` environment variable it sets), 0 when none was set.
"""
from __future__ import annotations

import hashlib
import os

import torch


def run_seed() -> int:
    """The run's seed: ``seed_everything``'s value (``PL_GLOBAL_SEED``), 0 when unset."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


def derive_seed(*identity: object) -> int:
    """A stable 63-bit seed from any identity tuple, the same on every process and platform."""
    digest = hashlib.sha256(":".join(map(str, identity)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def draw_seed() -> int:
    """A seed drawn from torch's global generator: what unseeded attacks start from, so that
    ``seed_everything`` and the per-step reseeding of a run reach them."""
    return int(torch.randint(0, 2**62, (1,)).item())
