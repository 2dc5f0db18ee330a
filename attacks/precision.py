"""Any registered attack with the model run in reduced precision (``torch.autocast``).

``{name: autocast, attack: {name: pgd, steps: 20}, eps: 8/255}`` runs the inner attack's
forward and backward passes under ``torch.autocast`` in ``dtype`` (bfloat16 by default,
or float16 on CUDA): on hardware with fast reduced-precision units (tensor cores, CPUs
with AVX-512 BF16/AMX) each attack step is about 2x faster. Only the model runs in low
precision: the perturbation, the projection onto the eps-ball and [0, 1], and every loss
are float32, so the threat model is exactly the inner attack's.

What can change is the attack's strength: gradients (and, in attacks that use them,
success checks and loss comparisons) come from low-precision logits. An evaluation
callback scores the returned x_adv with the model in its own precision, so a weaker
low-precision attack shows as a higher accuracy, never as a false success;
``benchmarks/attacks_vs_torchattacks.py`` measures both the speed and the robust accuracy
against float32 attacks. Pair it with its float32 twin in a sweep and the per-sample
worst case covers any point the low-precision attack misses.
"""
from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Optional

import torch
from torch import nn

from attacks.registry import register_attack
from attacks.wrapper import WrappedAttack

DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
SHORT = {torch.bfloat16: "bf16", torch.float16: "fp16"}


@register_attack("autocast")
class Autocast(WrappedAttack):
    """The inner attack with the model under ``torch.autocast(dtype)``.

    attack: the inner attack's spec without eps (default ``{name: pgd, steps: 40}``).
    dtype: "bfloat16" (default; CPU and CUDA) or "float16" (CUDA only).
    eps: the inner attack's budget in pixel units; None keeps its default.
    bn_mode, seed: passed to the inner attack.
    """

    def __init__(self, eps: Optional[float] = None, attack: Optional[dict[str, Any]] = None,
                 dtype: str = "bfloat16", bn_mode: str = "eval", seed: int | None = None):
        if dtype not in DTYPES:
            raise ValueError(f"autocast: unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
        self.dtype = dtype
        super().__init__(eps, attack=attack, bn_mode=bn_mode, seed=seed)

    @property
    def label(self) -> str:
        """Short name for reports: ``bf16(pgd)``."""
        return f"{SHORT[DTYPES[self.dtype]]}({self.inner.name})"

    def context(self, model: nn.Module, x: torch.Tensor) -> AbstractContextManager:
        dtype = DTYPES[self.dtype]
        if dtype == torch.float16 and x.device.type != "cuda":
            raise ValueError(f"autocast: float16 runs on CUDA only (input is on {x.device.type}); use bfloat16")
        return torch.autocast(x.device.type, dtype=dtype)
