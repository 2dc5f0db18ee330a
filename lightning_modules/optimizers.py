"""Optimisers by name: the one place the classifier's training and post-train's fine-tuning build theirs."""
from __future__ import annotations

from typing import Iterable

import torch

OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


def check_optimizer(name: str, what: str = "optimizer") -> None:
    """Refuse an unknown optimiser name, listing the valid ones (before any work starts)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown {what} {name!r}; valid: {', '.join(OPTIMIZERS)}")


def create_optimizer(name: str, params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float,
                     momentum: float = 0.9, nesterov: bool = False) -> torch.optim.Optimizer:
    """``sgd`` (with ``momentum``, and Nesterov's when ``nesterov`` and momentum > 0), ``adam`` or
    ``adamw``; momentum and nesterov apply to SGD only."""
    check_optimizer(name)
    kwargs = {"lr": lr, "weight_decay": weight_decay}
    if name == "sgd":
        kwargs.update(momentum=momentum, nesterov=nesterov and momentum > 0)
    return OPTIMIZERS[name](params, **kwargs)
