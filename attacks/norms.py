"""Perturbation balls in pixel units: the geometry every first-order attack shares.

A ball knows how to draw a random start inside itself, take a steepest-ascent step
for its norm, and project a perturbation back onto itself. Images are [0, 1] pixels;
``eps`` is the ball's radius in the same units (L-inf: per pixel, L2: whole image).
"""
from __future__ import annotations

import torch

_TINY = 1e-12


def per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-sample vector (N,) shaped to broadcast against a batch ``like`` (N, C, H, W)."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def l2_norms(t: torch.Tensor) -> torch.Tensor:
    """L2 norm of each sample of a batch, shape (N,)."""
    return t.flatten(1).norm(dim=1)


def _per_sample_norm(t: torch.Tensor) -> torch.Tensor:
    """L2 norm of each sample, shaped to broadcast against ``t``."""
    return per_sample(l2_norms(t), t)


class LinfBall:
    name = "linf"

    def __init__(self, eps: float):
        self.eps = eps

    def random_point(self, like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        noise = torch.rand(like.shape, generator=generator, device=like.device, dtype=like.dtype)
        return (2 * noise - 1) * self.eps

    def step(self, grad: torch.Tensor, alpha: float) -> torch.Tensor:
        return alpha * grad.sign()

    def project(self, delta: torch.Tensor) -> torch.Tensor:
        return delta.clamp(-self.eps, self.eps)

    def norm(self, delta: torch.Tensor) -> torch.Tensor:
        return delta.flatten(1).abs().amax(dim=1)

    def project_around(self, x: torch.Tensor, x_new: torch.Tensor) -> torch.Tensor:
        """The point of ball(x) and [0, 1] nearest ``x_new``: a clamp per pixel."""
        return torch.min(torch.max(x_new, x - self.eps), x + self.eps).clamp_(0, 1)


class L2Ball:
    name = "l2"

    def __init__(self, eps: float):
        self.eps = eps

    def random_point(self, like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Uniform in the ball: Gaussian direction, radius eps * U^(1/d)."""
        direction = torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)
        direction = direction / (_per_sample_norm(direction) + _TINY)
        dims = like[0].numel()
        u = torch.rand((like.shape[0],), generator=generator, device=like.device, dtype=like.dtype)
        radius = self.eps * u.pow(1.0 / dims)
        return direction * per_sample(radius, like)

    def step(self, grad: torch.Tensor, alpha: float) -> torch.Tensor:
        return alpha * grad / (_per_sample_norm(grad) + _TINY)

    def project(self, delta: torch.Tensor) -> torch.Tensor:
        factor = (self.eps / (_per_sample_norm(delta) + _TINY)).clamp(max=1.0)
        return delta * factor

    def norm(self, delta: torch.Tensor) -> torch.Tensor:
        return l2_norms(delta)

    def project_around(self, x: torch.Tensor, x_new: torch.Tensor) -> torch.Tensor:
        """Project onto ball(x), then clip to [0, 1] (clipping never leaves the ball)."""
        return (x + self.project(x_new - x)).clamp_(0, 1)


BALLS = {"linf": LinfBall, "l2": L2Ball}


def make_ball(norm: str, eps: float):
    try:
        return BALLS[norm](eps)
    except KeyError:
        raise ValueError(f"unknown norm {norm!r}; valid norms: {sorted(BALLS)}") from None
