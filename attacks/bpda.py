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
from typing import Iterator

import torch
from torch import nn

from attacks.registry import register_attack
from attacks.wrapper import WrappedAttack

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
class BPDA(WrappedAttack):
    """Any registered attack, with identity gradients through non-differentiable preprocessing.

    attack: the inner attack's spec without eps (default ``{name: pgd, steps: 40}``).
    eps: the inner attack's budget in pixel units; None keeps the inner attack's default.
    bn_mode, seed: passed to the inner attack. ``last_info`` is the inner attack's.
    """

    @contextmanager
    def context(self, model: nn.Module, x: torch.Tensor) -> Iterator[None]:
        with straight_through(model) as switched:
            if not switched:
                warnings.warn(f"{self.label}: the model has no module with a '{SWITCH}' switch, so this is the "
                              f"plain {self.inner.name} attack", stacklevel=3)
            yield
