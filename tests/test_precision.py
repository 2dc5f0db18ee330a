"""The autocast wrapper: the inner attack in bfloat16, the threat model in float32."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from attacks import create_attack
from callbacks import RobustnessEvaluation
from tests.invariants import check_threat_model

EPS = 0.1
PGD = {"name": "pgd", "steps": 10}


def autocast(eps=EPS, **options):
    return create_attack({"name": "autocast", "attack": PGD, "eps": eps, "seed": 0, **options})


class DtypeProbe(nn.Module):
    """Records the dtype of what the wrapped module returns."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module, self.seen = module, set()

    def forward(self, x):
        out = self.module(x)
        self.seen.add(out.dtype)
        return out


def test_the_model_runs_in_bfloat16_during_the_attack_only(trained_toy):
    model, x, y = trained_toy
    probe = DtypeProbe(model)
    x_adv = autocast()(probe, x, y)
    assert probe.seen == {torch.bfloat16}
    assert x_adv.dtype == torch.float32
    probe.seen.clear()
    with torch.no_grad():
        probe(x_adv)
    assert probe.seen == {torch.float32}, "autocast leaked out of the attack"


def test_about_as_strong_as_float32_pgd(trained_toy):
    """Low-precision gradients must not make the attack much weaker (here: a few samples at most)."""
    model, x, y = trained_toy
    with torch.no_grad():
        correct = lambda attack: (model(attack(model, x, y)).argmax(1) == y).sum().item()  # noqa: E731
        clean = (model(x).argmax(1) == y).sum().item()
    fp32 = correct(create_attack({**PGD, "eps": 0.2, "seed": 0}))
    bf16 = correct(autocast(0.2))
    assert fp32 < clean - 10, "the fp32 attack must bite for this comparison to mean anything"
    assert bf16 <= fp32 + max(2, len(y) // 100)


def test_eps_is_forwarded_and_reports_are_labelled(trained_toy):
    attack = autocast()
    attack.eps = 0.2  # what a sweep or an eps ramp does
    assert attack.inner.eps == 0.2 and attack.eps == 0.2 and attack.label == "bf16(pgd)"
    assert attack.config()["attack"] == PGD
    RobustnessEvaluation(attacks=[{"name": "autocast", "attack": PGD}], epsilons=[0.1])


def test_errors_name_the_fix():
    with pytest.raises(ValueError, match="unknown option.*dtype.*valid options: eps, attack, bn_mode, seed"):
        autocast(dtype="float16")
    with pytest.raises(ValueError, match="give eps on autocast itself"):
        create_attack({"name": "autocast", "attack": {"name": "pgd", "eps": 0.1}})
    with pytest.raises(ValueError, match="cannot be autocast itself"):
        create_attack({"name": "autocast", "attack": {"name": "autocast"}})


def test_composes_with_bpda(trained_toy):
    model, x, y = trained_toy
    attack = create_attack({"name": "bpda", "attack": {"name": "autocast", "attack": PGD}, "eps": EPS, "seed": 0})
    with pytest.warns(UserWarning, match="no module with a 'straight_through' switch"):
        check_threat_model(attack, model, x, y)
    assert attack.inner.inner.eps == EPS


def test_objectives_look_through_the_wrapper():
    from lightning_modules.objectives import create_objective

    trades = create_objective({"name": "trades", "beta": 6.0})
    trades.check_attack(create_attack({"name": "autocast", "attack": {"name": "pgd", "loss": "kl"}, "eps": EPS}))
    with pytest.raises(ValueError, match="use an attack with loss kl"):
        trades.check_attack(autocast())
