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
from lightning_modules.checkpoints import check_fits, load_classifier


@lru_cache(maxsize=8)
def load_source(path: str, device: str, input_shape: tuple[int, ...], num_classes: Optional[int]) -> nn.Module:
    """An advtrain checkpoint as a frozen eval-mode model on ``device``, checked to fit images
    shaped ``input_shape`` and ``num_classes`` classes (cached: loaded once)."""
    model = load_classifier(path, map_location=device)
    check_fits(model, input_shape, num_classes if num_classes is not None else model.hparams.num_classes,
               what=f"transfer source {path}")
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
        target_classes = getattr(model, "hparams", {}).get("num_classes")
        source = load_source(self.source, str(x.device), tuple(x.shape[1:]), target_classes)
        inner = create_attack({**self.attack, "eps": self.eps, "seed": self.seed, "bn_mode": self.bn_mode})
        return inner(source, x, y)
