"""An attack that runs another registered attack inside a context (BPDA, autocast).

``{name: <wrapper>, attack: {name: pgd, steps: 40}, eps: ...}``: the inner attack is built
from its spec; ``eps``, ``bn_mode`` and ``seed`` are given on the wrapper and forwarded, so a
sweep or an eps ramp that sets ``attack.eps`` sets the inner attack's. The threat model is
the inner attack's (its norm's eps-ball and [0, 1]), and ``last_info`` is the inner attack's.
"""
from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Optional

import torch
from torch import nn

from attacks.base import Attack, as_float
from attacks.registry import create_attack

FORWARDED = ("eps", "bn_mode", "seed")


class WrappedAttack(Attack):
    """Base class: subclasses say in :meth:`context` what surrounds the inner attack."""

    default_inner: dict[str, Any] = {"name": "pgd", "steps": 40}

    def __init__(self, eps: Optional[float] = None, attack: Optional[dict[str, Any]] = None,
                 bn_mode: str = "eval", seed: int | None = None):
        self.attack = {"name": attack} if isinstance(attack, str) else dict(attack or self.default_inner)
        for key in FORWARDED:
            if key in self.attack:
                raise ValueError(f"{self.name}: give {key} on {self.name} itself, not inside attack= (it is forwarded)")
        if str(self.attack.get("name", "")).lower() == self.name:
            raise ValueError(f"{self.name}: the inner attack cannot be {self.name} itself")
        budget = {} if eps is None else {"eps": as_float(eps)}
        self.inner = create_attack({**self.attack, **budget, "bn_mode": bn_mode, "seed": seed})
        super().__init__(self.inner.eps, norm=self.inner.norm, bn_mode=bn_mode, seed=seed)

    @property
    def eps(self) -> float:
        return self.inner.eps

    @eps.setter
    def eps(self, value: float) -> None:
        self.inner.eps = as_float(value)

    @property
    def minimum_norm(self) -> bool:
        """A wrapped minimum-norm attack still gives every smaller eps from one run."""
        return self.inner.minimum_norm

    @property
    def label(self) -> str:
        """Short name for reports, e.g. ``bpda(pgd)``."""
        return f"{self.name}({self.inner.name})"

    def context(self, model: nn.Module, x: torch.Tensor) -> AbstractContextManager:
        raise NotImplementedError

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, **kwargs) -> torch.Tensor:
        with self.context(model, x):
            x_adv = self.inner(model, x, y, **kwargs)
        self.last_info = self.inner.last_info
        return x_adv
