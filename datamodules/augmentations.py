"""Batched training augmentations on [0, 1] float images, run on the batch's device.

Each augmentation draws its randomness per sample from torch's global generator (seeded
by ``seed_everything``), works on a whole (N, C, H, W) batch at once, and is applied to
training batches only (see ``ClassificationDataModule.augment``). The set follows the
cross-model adversarial augmentation paper (rotation, flipping, scaling, cropping,
brightness, random noise); geometric ones fill uncovered pixels with black. Every
augmentation takes ``p``, the probability that a sample is augmented at all.

    augment: [{name: crop, padding: 4}, {name: flip}, {name: rotation, degrees: 15}, {name: noise, std: 0.02}]

A bare name (``augment: [flip]``) uses the defaults. Output is clamped to [0, 1].
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, ClassVar, Sequence, Union

import torch
import torch.nn.functional as F

from attacks import Registry

AugmentSpec = Union[str, dict[str, Any]]
PADDING_MODES = ("zeros", "border", "reflection")


class Augmentation:
    """Base: ``transform`` augments every sample of a batch; ``__call__`` keeps each
    sample's augmented version with probability ``p``. Options are checked on construction."""

    name: ClassVar[str]  # the registry name
    p: float = 1.0

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise ValueError for out-of-range options (subclasses add theirs)."""
        if not 0 <= self.p <= 1:
            raise ValueError(f"{self.name}: p={self.p} must be in [0, 1]")

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.transform(x)
        if self.p >= 1:
            return out
        keep = torch.rand(x.shape[0], device=x.device) < self.p
        return torch.where(keep.view(-1, 1, 1, 1), out, x)


AUGMENTATIONS = Registry("augmentation", base=Augmentation)


def register(name: str) -> Callable[[type], type]:
    """Class decorator: an Augmentation subclass as a dataclass (its options are its fields), under ``name``."""
    return lambda cls: AUGMENTATIONS.register(name)(dataclasses.dataclass(cls))


def _uniform(n: int, low: float, high: float, like: torch.Tensor) -> torch.Tensor:
    return torch.empty(n, device=like.device, dtype=like.dtype).uniform_(low, high)


def _affine(x: torch.Tensor, matrix: torch.Tensor, padding_mode: str) -> torch.Tensor:
    """Resample each image with its own 2x3 matrix (output -> input, normalised coordinates)."""
    grid = F.affine_grid(matrix, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


def _check_padding_mode(aug: Augmentation, mode: str) -> None:
    if mode not in PADDING_MODES:
        raise ValueError(f"{aug.name}: padding_mode={mode!r}; valid: {', '.join(PADDING_MODES)}")


@register("crop")
class RandomCrop(Augmentation):
    """Random crop of the original size after zero-padding ``padding`` pixels on each side
    (shift by up to ``padding`` pixels)."""

    padding: int = 4
    p: float = 1.0

    def check(self) -> None:
        super().check()
        if self.padding < 0:
            raise ValueError(f"crop: padding={self.padding} must be >= 0")

    def transform(self, x):
        n, c, h, w = x.shape
        pad = self.padding
        padded = F.pad(x, (pad,) * 4)
        dy = torch.randint(0, 2 * pad + 1, (n,), device=x.device)
        dx = torch.randint(0, 2 * pad + 1, (n,), device=x.device)
        rows = (dy.view(n, 1) + torch.arange(h, device=x.device)).view(n, 1, h, 1)
        cols = (dx.view(n, 1) + torch.arange(w, device=x.device)).view(n, 1, 1, w)
        out = padded.gather(2, rows.expand(n, c, h, padded.shape[3]))
        return out.gather(3, cols.expand(n, c, h, w))


@register("flip")
class HorizontalFlip(Augmentation):
    """Mirror left-right with probability ``p``."""

    p: float = 0.5

    def transform(self, x):
        return x.flip(3)


@register("rotation")
class RandomRotation(Augmentation):
    """Rotate by an angle drawn uniformly from [-degrees, degrees] about the centre."""

    degrees: float = 15.0
    padding_mode: str = "zeros"
    p: float = 1.0

    def check(self) -> None:
        super().check()
        if self.degrees < 0:
            raise ValueError(f"rotation: degrees={self.degrees} must be >= 0")
        _check_padding_mode(self, self.padding_mode)

    def transform(self, x):
        n, _, h, w = x.shape
        angle = _uniform(n, -self.degrees, self.degrees, x) * (math.pi / 180)
        cos, sin = angle.cos(), angle.sin()
        aspect = w / h  # rotate in pixel space, not in the normalised square
        zero = torch.zeros_like(cos)
        matrix = torch.stack([torch.stack([cos, -sin / aspect, zero], 1),
                              torch.stack([sin * aspect, cos, zero], 1)], 1)
        return _affine(x, matrix, self.padding_mode)


@register("scale")
class RandomScale(Augmentation):
    """Zoom about the centre by a factor drawn uniformly from ``zoom`` (> 1 enlarges)."""

    zoom: Sequence[float] = (0.9, 1.1)
    padding_mode: str = "zeros"
    p: float = 1.0

    def check(self) -> None:
        super().check()
        if len(self.zoom) != 2 or not 0 < self.zoom[0] <= self.zoom[1]:
            raise ValueError(f"scale: zoom={list(self.zoom)} must be [low, high] with 0 < low <= high")
        _check_padding_mode(self, self.padding_mode)

    def transform(self, x):
        n = x.shape[0]
        inverse = 1 / _uniform(n, float(self.zoom[0]), float(self.zoom[1]), x)
        zero = torch.zeros_like(inverse)
        matrix = torch.stack([torch.stack([inverse, zero, zero], 1), torch.stack([zero, inverse, zero], 1)], 1)
        return _affine(x, matrix, self.padding_mode)


@register("brightness")
class RandomBrightness(Augmentation):
    """Add one offset per image, drawn uniformly from [-delta, delta] (pixel units)."""

    delta: float = 0.1
    p: float = 1.0

    def check(self) -> None:
        super().check()
        if not 0 <= self.delta <= 1:
            raise ValueError(f"brightness: delta={self.delta} must be in [0, 1] (pixel units)")

    def transform(self, x):
        return x + _uniform(x.shape[0], -self.delta, self.delta, x).view(-1, 1, 1, 1)


@register("noise")
class GaussianNoise(Augmentation):
    """Add i.i.d. Gaussian noise of standard deviation ``std`` (pixel units) to every pixel."""

    std: float = 0.02
    p: float = 1.0

    def check(self) -> None:
        super().check()
        if self.std < 0:
            raise ValueError(f"noise: std={self.std} must be >= 0")

    def transform(self, x):
        return x + self.std * torch.randn_like(x)


class Compose:
    """Augmentations applied in order; pixels clamped to [0, 1] after each one."""

    def __init__(self, augmentations: Sequence[Augmentation]):
        self.augmentations = list(augmentations)

    def __len__(self) -> int:
        return len(self.augmentations)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for aug in self.augmentations:
            x = aug(x).clamp_(0, 1)
        return x

    def __repr__(self) -> str:
        return f"Compose({self.augmentations})"


create_augmentation = AUGMENTATIONS.create  # ``"flip"`` | ``{name: rotation, degrees: 15, ...}`` -> the Augmentation


def create_augmentations(specs: Sequence[AugmentSpec]) -> Compose:
    """The composed pipeline of a list of specs (see the module docstring)."""
    if isinstance(specs, (str, dict)):
        raise ValueError(f"augment must be a list of augmentations, e.g. [{{name: flip}}], got {specs!r}")
    return Compose([create_augmentation(s) for s in specs])
