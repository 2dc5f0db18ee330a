"""Transfer attacks: adversarial examples crafted on a source model, evaluated on another.

``{name: transfer, source: <advtrain checkpoint>, attack: {name: pgd, steps: 10}, eps: 8/255}``
runs the inner attack (any registered attack, at this eps) on the source model and hands
its output to the model under evaluation, whose gradients are never used: a black-box
evaluation of the target (cross-model-adversarial-augmentation.md crafts on ResNet-18
and evaluates ResNet-50/101). Threat model: the inner attack's eps-ball and [0, 1].

The source is a loaded model or a checkpoint path. A path is loaded at the first call by
``checkpoint_loader``, a function ``checkpoint_loader(path, map_location=device, data=(input shape, classes), what=...)``
returning an eval-mode model checked to fit that data (errors name it as ``what``), given as a callable or by its dotted
name in the project's packages; the default names the suite's one checkpoint loader,
:func:`lightning_modules.checkpoints.load_classifier`, imported only then. So this module
imports nothing from the rest of the project, and ``create_attack("transfer", ...)`` works
whatever was imported before.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Callable, Optional, Union

import torch
from torch import nn

from attacks.base import Attack
from attacks.registry import create_attack, import_project_object, register_attack

CHECKPOINT_LOADER = "lightning_modules.checkpoints.load_classifier"
Loader = Union[str, Callable[..., nn.Module]]


def resolve_loader(loader: Loader) -> Callable[..., nn.Module]:
    """A checkpoint loader given as a callable, or by its dotted name in the project's packages."""
    return import_project_object(loader, "checkpoint loader") if isinstance(loader, str) else loader


@lru_cache(maxsize=8)
def _load_source(loader: Loader, path: str, device: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The checkpoint at ``path`` as a frozen eval-mode model on ``device`` (cached: loaded once)."""
    model = resolve_loader(loader)(path, map_location=device, data=(input_shape, num_classes), what="transfer source")
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@register_attack("transfer")
class TransferAttack(Attack):
    """Craft on ``source`` (a model or a checkpoint path) with ``attack`` (a spec; its eps is set to ``eps``).

    ``checkpoint_loader`` loads a path source (see the module docstring), checked against the input
    shape and the target model's number of classes.
    """

    black_box = True

    def __init__(self, eps: float = 8 / 255, source: Union[str, nn.Module, None] = None,
                 attack: Optional[dict[str, Any]] = None, checkpoint_loader: Loader = CHECKPOINT_LOADER,
                 bn_mode: str = "eval", seed: int | None = None):
        self.attack = dict(attack or {"name": "pgd", "steps": 10})
        inner_norm = create_attack({**self.attack, "eps": 0.0}).norm
        super().__init__(eps, norm=inner_norm, bn_mode=bn_mode, seed=seed)
        if not isinstance(source, nn.Module) and not source:
            raise ValueError("transfer: give source=<path of the advtrain checkpoint to craft the examples on> "
                             "(or a loaded model)")
        self.source = source
        self.checkpoint_loader = checkpoint_loader

    def source_model(self, target: nn.Module, x: torch.Tensor) -> nn.Module:
        """The source model, loaded on ``x``'s device and checked to fit ``x`` and the target's classes."""
        if isinstance(self.source, nn.Module):
            return self.source
        classes = getattr(target, "hparams", {}).get("num_classes")
        if classes is None:
            with torch.no_grad():
                classes = target(x[:1]).shape[1]
        return _load_source(self.checkpoint_loader, str(self.source), str(x.device), tuple(x.shape[1:]), int(classes))

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, **kwargs) -> torch.Tensor:
        inner = create_attack({**self.attack, "eps": self.eps, "seed": self.seed, "bn_mode": self.bn_mode})
        return inner(self.source_model(model, x), x, y)
