"""BPDA: Backward Pass Differentiable Approximation (Athalye, Carlini & Wagner 2018).

``{name: bpda, attack: {name: pgd, steps: 40}}`` runs the inner attack with every
submodule that has a ``straight_through`` attribute (duck typing: e.g. the median-filter
preprocessing layer) switched to True, so gradients pass through those layers as the
identity while their forward pass, and so every success check of the inner attack and
the final evaluation, is the real model's. The switches are restored afterwards, also
when the attack raises.

Threat model: the inner attack's (its norm's eps-ball and [0, 1]); ``eps`` is the inner
attack's, forwarded both ways, so a sweep or an eps ramp that sets ``attack.eps`` sets it.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Any, Iterator, Optional

import torch
from torch import nn

from attacks.base import Attack, as_float
from attacks.registry import create_attack, register_attack

SWITCH = "straight_through"


@contextmanager
def straight_through(model: nn.Module) -> Iterator[int]:
    """Set ``straight_through = True`` on every submodule that has it; yields how many; restores on exit."""
    switches = {m: getattr(m, SWITCH) for m in model.modules() if hasattr(m, SWITCH)}
    try:
        for m in switches:
            setattr(m, SWITCH, True)
        yield len(switches)
    finally:
        for m, flag in switches.items():
            setattr(m, SWITCH, flag)


@register_attack("bpda")
class BPDA(Attack):
    """Any registered attack, with identity gradients through non-differentiable preprocessing.

    attack: the inner attack's spec without eps (default ``{name: pgd, steps: 40}``).
    eps: the inner attack's budget in pixel units; None keeps the inner attack's default.
    bn_mode, seed: passed to the inner attack. ``last_info`` is the inner attack's.
    """

    def __init__(self, eps: Optional[float] = None, attack: Optional[dict[str, Any]] = None,
                 bn_mode: str = "eval", seed: int | None = None):
        self.attack = {"name": attack} if isinstance(attack, str) else dict(attack or {"name": "pgd", "steps": 40})
        for key in ("eps", "bn_mode", "seed"):
            if key in self.attack:
                raise ValueError(f"bpda: give {key} on bpda itself, not inside attack= (it is forwarded)")
        if self.attack.get("name") == "bpda":
            raise ValueError("bpda: the inner attack cannot be bpda itself")
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
    def label(self) -> str:
        """Short name for reports: ``bpda(pgd)``."""
        return f"bpda({self.inner.name})"

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, **kwargs) -> torch.Tensor:
        with straight_through(model) as switched:
            if not switched:
                warnings.warn(f"{self.label}: the model has no module with a '{SWITCH}' switch, so this is the "
                              f"plain {self.inner.name} attack", stacklevel=2)
            x_adv = self.inner(model, x, y, **kwargs)
        self.last_info = self.inner.last_info
        return x_adv
