"""The attack contract shared by every attack in the suite.

``attack(model, x, y) -> x_adv``: ``model`` maps [0, 1] pixels to logits, ``x`` is a
batch of [0, 1] pixels, ``y`` the labels. The output stays inside the attack's
eps-ball around ``x`` and inside [0, 1]; eps = 0 returns ``x`` unchanged. While the
attack runs the model's parameters are frozen and its modes are set by ``bn_mode``
(see :mod:`attacks.model_mode`); both are restored afterwards. Randomness comes from
a generator seeded with ``seed``, so a seed reproduces an attack; an attack without a
``seed`` seeds each call from torch's global generator, so ``seed_everything`` (and the
per-step reseeding of a training run, see :mod:`attacks.seeding`) reproduces it too.
"""
from __future__ import annotations

import inspect
from fractions import Fraction
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from attacks.model_mode import attack_mode
from attacks.seeding import draw_seed


def as_float(value: Any) -> float:
    """Read a number, or a number or fraction written as text ("8/255", "inf" in YAML)."""
    if isinstance(value, str):
        text = value.strip()
        try:
            return float(text)
        except ValueError:
            return float(Fraction(text))
    return float(value)


class Attack:
    """Base class: subclasses implement :meth:`perturb` on a frozen model."""

    name = "attack"
    black_box = False  # True for score-based attacks that use no gradients (Square)
    minimum_norm = False  # True when one run at the largest eps gives the result at every smaller eps

    def __init__(self, eps: float, norm: str = "linf", bn_mode: str = "eval", seed: int | None = None):
        self.eps = as_float(eps)
        self.norm = norm
        self.bn_mode = bn_mode
        self.seed = seed
        self._generators: dict[torch.device, torch.Generator] = {}
        self._call_seed = 0  # without a seed: drawn from torch's global generator at every call
        self.last_info: dict[str, torch.Tensor] = {}
        self._check_eps()

    def _check_eps(self) -> None:
        if self.eps < 0 or (self.norm == "linf" and self.eps > 1):
            raise ValueError(
                f"{self.name}: eps={self.eps} is outside [0, 1]; eps is in [0, 1] pixel units "
                "(write 8/255, not 8)"
            )

    # -- the public call -------------------------------------------------------------
    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, **kwargs) -> torch.Tensor:
        self._check_eps()
        self.last_info = {}
        x = x.detach()
        if not torch.isfinite(x).all():
            bad = int((~torch.isfinite(x)).flatten(1).any(dim=1).sum()) if x.dim() > 1 else 1
            raise ValueError(f"{self.name}: inputs hold NaN or infinite pixels ({bad} sample(s) of {len(x)}); "
                             "attacks need finite [0, 1] pixels: check the data (a corrupt file?) or the preprocessing")
        if x.numel() and (x.min() < 0 or x.max() > 1):
            raise ValueError(
                f"{self.name}: inputs must be [0, 1] pixels (got range [{x.min():.3g}, {x.max():.3g}]); "
                "normalisation belongs inside the model"
            )
        if self.eps == 0 or x.numel() == 0:
            return x.clone()
        if self.seed is None:
            self._generators, self._call_seed = {}, draw_seed()
        with attack_mode(model, self.bn_mode), torch.enable_grad():
            x_adv = self.perturb(model, x, y.detach(), **kwargs)
        return x_adv.detach()

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, **kwargs) -> torch.Tensor:
        """Return x_adv for a frozen model in attack mode; x is detached, grad mode is on."""
        raise NotImplementedError

    # -- helpers for subclasses ------------------------------------------------------
    def generator(self, device: torch.device) -> torch.Generator:
        """One generator per device. With ``seed``: seeded once, successive calls continue the
        stream. Without: seeded at every call from torch's global generator."""
        if device not in self._generators:
            gen = torch.Generator(device=device)
            gen.manual_seed(self._call_seed if self.seed is None else self.seed)
            self._generators[device] = gen
        return self._generators[device]

    @staticmethod
    def input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Gradient of the summed cross-entropy w.r.t. the input only (float32 loss)."""
        x = x.detach().requires_grad_(True)
        loss = F.cross_entropy(model(x).float(), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
        return grad

    def config(self) -> dict[str, Any]:
        """Name and constructor arguments: enough to rebuild the attack and to report it."""
        params = inspect.signature(type(self).__init__).parameters
        return {"name": self.name, **{k: getattr(self, k) for k in params if k != "self" and hasattr(self, k)}}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({args})"
