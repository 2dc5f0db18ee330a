"""Any registered attack with the model run in bfloat16 (``torch.autocast``).

``{name: autocast, attack: {name: pgd, steps: 20}, eps: 8/255}`` runs the inner attack's
forward and backward passes under ``torch.autocast(dtype=torch.bfloat16)``: on hardware
with bfloat16 units (tensor-core GPUs, CPUs with AVX-512 BF16/AMX) each attack step is
about 2x faster. Only the model runs in low precision: the perturbation, the projection
onto the eps-ball and [0, 1], and every loss are float32, so the threat model is exactly
the inner attack's. bfloat16 keeps float32's exponent range, so small input gradients do
not underflow to zero (float16 would need loss scaling, so it is not offered).

What can change is the attack's strength: gradients (and, in attacks that use them,
success checks and loss comparisons) come from bfloat16 logits. An evaluation callback
scores the returned x_adv with the model in its own precision, so a weaker attack shows
as a higher accuracy, never as a false success; ``benchmarks/attacks_vs_torchattacks.py``
measures both the speed and the robust accuracy against float32 attacks. Pair it with
its float32 twin in a sweep and the per-sample worst case covers any point it misses.
"""
from __future__ import annotations

from contextlib import AbstractContextManager

import torch
from torch import nn

from attacks.registry import register_attack
from attacks.wrapper import WrappedAttack


@register_attack("autocast")
class Autocast(WrappedAttack):
    """The inner attack with the model under ``torch.autocast(dtype=torch.bfloat16)``.

    attack: the inner attack's spec without eps (default ``{name: pgd, steps: 40}``).
    eps: the inner attack's budget in pixel units; None keeps its default.
    bn_mode, seed: passed to the inner attack.
    """

    @property
    def label(self) -> str:
        """Short name for reports: ``bf16(pgd)``."""
        return f"bf16({self.inner.name})"

    def context(self, model: nn.Module, x: torch.Tensor) -> AbstractContextManager:
        return torch.autocast(x.device.type, dtype=torch.bfloat16)
