"""Perturbation balls in pixel units: the geometry every first-order attack shares.

A ball knows how to draw a random start inside itself, take a steepest-ascent step
for its norm, and project a perturbation back onto itself. Images are [0, 1] pixels;
``eps`` is the ball's radius in the same units (L-inf: per pixel, L2 and L1: whole
image); it may also be a per-sample tensor shaped like ``per_sample(eps, x)``.
``dual_norm`` measures a gradient in the dual norm (the linearised distance to a
boundary is |margin| / dual_norm(grad)). The L1 ball only measures and projects
(no random start or steepest step): it serves minimum-norm attacks (FMN).
"""
from __future__ import annotations

import torch

TINY = 1e-12  # floor under a norm or a denominator (every attack uses this one)


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

    @staticmethod
    def dual_norm(grad: torch.Tensor) -> torch.Tensor:
        return grad.flatten(1).abs().sum(dim=1)

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
        direction = direction / (_per_sample_norm(direction) + TINY)
        dims = like[0].numel()
        u = torch.rand((like.shape[0],), generator=generator, device=like.device, dtype=like.dtype)
        radius = self.eps * u.pow(1.0 / dims)
        return direction * per_sample(radius, like)

    def step(self, grad: torch.Tensor, alpha: float) -> torch.Tensor:
        return alpha * grad / (_per_sample_norm(grad) + TINY)

    def project(self, delta: torch.Tensor) -> torch.Tensor:
        factor = (self.eps / (_per_sample_norm(delta) + TINY)).clamp(max=1.0)
        return delta * factor

    def norm(self, delta: torch.Tensor) -> torch.Tensor:
        return l2_norms(delta)

    @staticmethod
    def dual_norm(grad: torch.Tensor) -> torch.Tensor:
        return l2_norms(grad)

    def project_around(self, x: torch.Tensor, x_new: torch.Tensor) -> torch.Tensor:
        """Project onto ball(x), then clip to [0, 1] (clipping never leaves the ball)."""
        return (x + self.project(x_new - x)).clamp_(0, 1)


class L1Ball:
    """L1 ball: Euclidean projection by Duchi et al. (2008), "Efficient Projections onto the
    l1-Ball for Learning in High Dimensions", ICML (sort-based, O(d log d) per sample)."""

    name = "l1"

    def __init__(self, eps):
        self.eps = eps

    def norm(self, delta: torch.Tensor) -> torch.Tensor:
        return delta.flatten(1).abs().sum(dim=1)

    @staticmethod
    def dual_norm(grad: torch.Tensor) -> torch.Tensor:
        return grad.flatten(1).abs().amax(dim=1)

    def project(self, delta: torch.Tensor) -> torch.Tensor:
        """The nearest point (in L2) of the ball: soft-threshold |delta| by the theta that
        brings its L1 norm down to eps; samples already inside are left as they are."""
        flat = delta.flatten(1)
        n, d = flat.shape
        radius = torch.as_tensor(self.eps, dtype=flat.dtype, device=flat.device).flatten()
        radius = radius.expand(n) if radius.numel() == 1 else radius
        magnitude = flat.abs()
        outside = magnitude.sum(dim=1) > radius
        if not outside.any():
            return delta
        mu = magnitude.sort(dim=1, descending=True).values
        cumsum = mu.cumsum(dim=1)
        k = torch.arange(1, d + 1, device=flat.device, dtype=flat.dtype)
        # rho: the number of entries left non-zero, the largest k with mu_k > (sum_{i<=k} mu_i - eps) / k
        rho = ((mu * k > cumsum - radius[:, None]) * k).amax(dim=1).clamp_min(1)
        theta = (cumsum.gather(1, rho.long()[:, None] - 1).squeeze(1) - radius) / rho
        shrunk = (magnitude - theta[:, None]).clamp_min(0) * flat.sign()
        return torch.where(outside[:, None], shrunk, flat).view_as(delta)

    def project_around(self, x: torch.Tensor, x_new: torch.Tensor) -> torch.Tensor:
        """Project onto ball(x), then clip to [0, 1] (clipping only shrinks |delta|)."""
        return (x + self.project(x_new - x)).clamp_(0, 1)


BALLS = {"linf": LinfBall, "l2": L2Ball}  # balls with a random start and a steepest step (PGD, APGD, ...)
MEASURE_BALLS = {**BALLS, "l1": L1Ball}  # norm, dual norm and projection only (minimum-norm attacks)


def make_ball(norm: str, eps, kinds: dict = BALLS):
    try:
        return kinds[norm](eps)
    except KeyError:
        raise ValueError(f"unknown norm {norm!r}; valid norms: {sorted(kinds)}") from None
