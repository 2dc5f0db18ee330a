"""Blur preprocessing defences (Jézéquel 2019, "Protecting networks against adversial attacks").

Each filter is a model layer on [0, 1] pixels, placed in front of the normaliser, so
training, evaluation, attacks and exported models all see the same blurred input.
Filtering is per channel (depthwise) with reflect padding; the output keeps the input's
shape and stays in [0, 1]. Kernels are non-persistent buffers: they follow the model's
device but add nothing to the state_dict (the filter is rebuilt from the hyperparameters).

- ``gaussian`` (:class:`GaussianBlur`): differentiable, attacks differentiate through it.
- ``median`` (:class:`MedianBlur`): piecewise linear; its exact gradient reaches only the
  pixel each window selects. ``straight_through = True`` makes its backward the identity
  (BPDA, Athalye et al. 2018), which the ``bpda`` attack switches on for its duration.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from attacks import Registry, as_float


def _check_fits(x: torch.Tensor, pad: int, what: str) -> None:
    if pad >= min(x.shape[-2:]):
        raise ValueError(f"{what} needs images larger than {pad} pixels per side for reflect padding, "
                         f"got {tuple(x.shape[-2:])}; use a smaller filter")


PREPROCESSING = Registry("preprocessing", plural="preprocessing layers", base=nn.Module)


@PREPROCESSING.register("gaussian")
class GaussianBlur(nn.Module):
    """Separable Gaussian filter, K(x, y) ~ exp(-(x^2 + y^2) / (2 sigma^2)), normalised to sum 1.

    sigma: standard deviation in pixels (0 = identity). kernel_size: odd width in pixels,
    default 2 * ceil(3 sigma) + 1 (covers +-3 sigma).
    """

    def __init__(self, sigma: float, kernel_size: Optional[int] = None):
        super().__init__()
        self.sigma = as_float(sigma)
        if self.sigma < 0:
            raise ValueError(f"gaussian: sigma must be >= 0 pixels, got {sigma}")
        self.kernel_size = 2 * math.ceil(3 * self.sigma) + 1 if kernel_size is None else int(kernel_size)
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"gaussian: kernel_size must be a positive odd number, got {kernel_size}")
        offsets = torch.arange(self.kernel_size, dtype=torch.float64) - self.kernel_size // 2
        kernel = torch.exp(-offsets**2 / (2 * self.sigma**2)) if self.sigma > 0 else (offsets == 0).double()
        self.register_buffer("kernel", (kernel / kernel.sum()).float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.kernel_size // 2
        if pad == 0:
            return x
        _check_fits(x, pad, f"gaussian blur of width {self.kernel_size}")
        channels = x.shape[1]
        k = self.kernel.to(x.dtype)
        x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        x = F.conv2d(x, k.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)  # along rows
        return F.conv2d(x, k.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)  # along columns

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, kernel_size={self.kernel_size}"


def median_filter(x: torch.Tensor, window: int) -> torch.Tensor:
    """Median over each ``window`` x ``window`` neighbourhood, per channel, reflect padding."""
    pad = window // 2
    if pad == 0:
        return x
    _check_fits(x, pad, f"median filter of window {window}")
    patches = F.pad(x, (pad, pad, pad, pad), mode="reflect").unfold(2, window, 1).unfold(3, window, 1)
    return patches.reshape(*x.shape, window * window).median(dim=-1).values


class _MedianStraightThrough(torch.autograd.Function):
    """Forward: the exact median filter. Backward: the identity (BPDA)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, window: int) -> torch.Tensor:
        return median_filter(x, window)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


@PREPROCESSING.register("median")
class MedianBlur(nn.Module):
    """Median filter over ``window`` x ``window`` pixels (odd window; 1 = identity).

    straight_through: False (default) backpropagates the exact gradient, to the pixel
    each window selects; True keeps the forward and makes the backward the identity
    (BPDA). The ``bpda`` attack sets it on every module that has it.
    """

    def __init__(self, window: int = 3):
        super().__init__()
        self.window = int(window)
        if self.window < 1 or self.window % 2 == 0 or self.window != window:
            raise ValueError(f"median: window must be a positive odd integer (3, 5, ...), got {window}")
        self.straight_through = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.straight_through:
            return _MedianStraightThrough.apply(x, self.window)
        return median_filter(x, self.window)

    def extra_repr(self) -> str:
        return f"window={self.window}, straight_through={self.straight_through}"


def create_preprocessing(spec: "str | Mapping[str, Any] | None") -> Optional[nn.Module]:
    """``{name: gaussian, sigma: 1.0}`` | ``{name: median, window: 3}`` | None -> the layer (or None)."""
    return None if spec is None else PREPROCESSING.create(spec)
