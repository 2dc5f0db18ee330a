"""Put a model in attack mode and give it back exactly as it was.

During an attack the parameters are frozen (no weight gradients are computed, none
leak into ``.grad``) and every submodule gets a chosen train/eval flag. On exit each
submodule's own flag, each parameter's ``requires_grad`` and (when BatchNorm runs in
train mode) the BatchNorm running statistics are restored.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

BN_MODES = ("eval", "train")


def _batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._NormBase]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._NormBase)]


@contextmanager
def attack_mode(model: nn.Module, bn_mode: str = "eval") -> Iterator[nn.Module]:
    """Freeze parameters and set modes for an attack.

    bn_mode="eval": every submodule in eval mode (BatchNorm uses running statistics,
    dropout off). bn_mode="train": BatchNorm uses batch statistics, everything else in
    eval mode; the running statistics are left untouched by the attack's forward passes.
    """
    if bn_mode not in BN_MODES:
        raise ValueError(f"bn_mode must be one of {BN_MODES}, got {bn_mode!r}")
    modes = {m: m.training for m in model.modules()}
    grads = {p: p.requires_grad for p in model.parameters()}
    saved_stats = {}
    try:
        model.eval()
        if bn_mode == "train":
            for bn in _batchnorms(model):
                bn.train()
                saved_stats[bn] = {k: v.clone() for k, v in bn.named_buffers(recurse=False)}
        for p in grads:
            p.requires_grad_(False)
        yield model
    finally:
        for bn, buffers in saved_stats.items():
            with torch.no_grad():
                for k, v in buffers.items():
                    getattr(bn, k).copy_(v)
        for p, flag in grads.items():
            p.requires_grad_(flag)
        for m, flag in modes.items():
            m.training = flag
