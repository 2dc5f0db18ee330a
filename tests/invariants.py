"""Checks every attack must pass (run over the whole registry by test_attack_conformance.py; also
called by attack-specific tests).

- ``with_boundary_pixels``: inputs on the edge of [0, 1], where clipping matters.
- ``check_threat_model``: output shaped like x, inside [0, 1] and inside the eps-ball.
- ``check_eps_zero_identity``: eps = 0 returns the input unchanged.
- ``check_no_side_effects``: each submodule's mode, each parameter's requires_grad and
  every buffer (BatchNorm statistics) are as before; no parameter .grad was created.
"""
from __future__ import annotations

import torch

from tests.conftest import ToyNet


def with_boundary_pixels(x: torch.Tensor) -> torch.Tensor:
    """A copy of x whose first samples sit on the [0, 1] boundary: all 0, all 1, and half 0 / half 1."""
    x = x.clone()
    x[:8] = 0.0
    x[8:16] = 1.0
    x[16:24, :, : x.shape[2] // 2] = 0.0
    x[16:24, :, x.shape[2] // 2:] = 1.0
    return x


def perturbation_norms(x_adv: torch.Tensor, x: torch.Tensor, norm: str) -> torch.Tensor:
    delta = (x_adv - x).flatten(1)
    if norm == "l1":
        return delta.abs().sum(1)
    return delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)


def check_threat_model(attack, model, x, y, **call_kwargs) -> torch.Tensor:
    x_adv = attack(model, x, y, **call_kwargs)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert x_adv.min() >= 0 and x_adv.max() <= 1, "output left [0, 1]"
    norms = perturbation_norms(x_adv, x, attack.norm)
    assert (norms <= attack.eps + 1e-5).all(), f"output left the {attack.norm} ball: max {norms.max()} > {attack.eps}"
    return x_adv


def check_eps_zero_identity(make_attack, model, x, y, **call_kwargs) -> None:
    """``make_attack(eps)`` builds the attack under test with the given eps."""
    assert torch.equal(make_attack(0.0)(model, x, y, **call_kwargs), x)


def check_no_side_effects(attack, x, y, **call_kwargs) -> None:
    """Run ``attack`` on a fresh ToyNet in mixed train/eval modes, one parameter frozen."""
    model = ToyNet(num_classes=int(y.max()) + 1)
    model.train()
    model.head.eval()
    frozen = model.features[0].bias
    frozen.requires_grad_(False)
    modes = {name: m.training for name, m in model.named_modules()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    attack(model, x, y, **call_kwargs)
    assert {name: m.training for name, m in model.named_modules()} == modes, "a submodule's mode changed"
    assert all(p.grad is None for p in model.parameters()), "the attack left weight gradients behind"
    assert not frozen.requires_grad and all(p.requires_grad for p in model.parameters() if p is not frozen)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), f"{k} changed during the attack"
