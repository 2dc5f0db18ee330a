"""Per-sample robustness of one batch over attacks x epsilons (pure torch).

For every epsilon and every attack the result says, per sample, whether the model
still classifies the attacked input correctly. Only samples the model gets right on
clean inputs are attacked (a wrong clean prediction is never robust). The worst case
over the attacks is the per-sample AND of their results.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from attacks import create_attack


def sweep_batch(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attacks: Sequence[Mapping[str, Any]],
    epsilons: Sequence[float],
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``clean_correct`` (N,) and ``robust`` (num_attacks, num_eps, N), both bool.

    Attack ``a`` at epsilon ``e`` is built from its spec with ``eps=e`` and a seed
    derived from ``seed``, ``a`` and ``e`` only, so results do not depend on which
    process evaluates the batch.
    """
    with torch.no_grad():
        clean_correct = model(x).argmax(1) == y
    robust = torch.zeros(len(attacks), len(epsilons), x.shape[0], dtype=torch.bool, device=x.device)
    idx = clean_correct.nonzero().flatten()
    if idx.numel() == 0:
        return clean_correct, robust
    for a, spec in enumerate(attacks):
        for e, eps in enumerate(epsilons):
            attack = create_attack({**spec, "eps": eps, "seed": seed + 7919 * a + 104729 * e})
            x_adv = attack(model, x[idx], y[idx])
            with torch.no_grad():
                robust[a, e, idx] = model(x_adv).argmax(1) == y[idx]
    return clean_correct, robust
