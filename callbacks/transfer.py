"""Transfer attacks: adversarial examples crafted on a source model, evaluated on another.

``{name: transfer, source: <advtrain checkpoint>, attack: {name: pgd, steps: 10}, eps: 8/255}``
runs the inner attack (any registered attack, at this eps) on the source model and hands
its output to the model under evaluation, whose gradients are never used: a black-box
evaluation of the target (cross-model-adversarial-augmentation.md crafts on ResNet-18
and evaluates ResNet-50/101). Threat model: the inner attack's eps-ball and [0, 1].
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Optional

import torch
from torch import nn

from attacks import Attack, create_attack, register_attack


@lru_cache(maxsize=8)
def load_source(path: str, device: str) -> nn.Module:
    """An advtrain checkpoint as a frozen eval-mode model on ``device`` (cached: loaded once)."""
    from lightning_modules import AdversarialClassifier

    model = AdversarialClassifier.load_from_checkpoint(path, map_location=device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@register_attack("transfer")
class TransferAttack(Attack):
    """Craft on ``source`` (checkpoint path) with ``attack`` (spec; its eps is set to ``eps``)."""

    black_box = True

    def __init__(self, eps: float = 8 / 255, source: str = "", attack: Optional[dict[str, Any]] = None,
                 bn_mode: str = "eval", seed: int | None = None):
        self.attack = dict(attack or {"name": "pgd", "steps": 10})
        inner_norm = create_attack({**self.attack, "eps": 0.0}).norm
        super().__init__(eps, norm=inner_norm, bn_mode=bn_mode, seed=seed)
        if not source:
            raise ValueError("transfer: give source=<path of the advtrain checkpoint to craft the examples on>")
        self.source = source

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, **kwargs) -> torch.Tensor:
        source = load_source(self.source, str(x.device))
        inner = create_attack({**self.attack, "eps": self.eps, "seed": self.seed, "bn_mode": self.bn_mode})
        return inner(source, x, y)
