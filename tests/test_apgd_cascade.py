"""Our AutoAttack-style cascade (apgd_cascade, not the reference): worst case over its components, black-box-only points flagged."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from attacks import create_attack
from tests.conftest import toy_data
from tests.invariants import check_threat_model


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def accuracy(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def test_cascade_is_at_most_each_component(trained_toy):
    model, x, y = trained_toy
    cascade = create_attack({"name": "apgd_cascade", "eps": 0.15, "version": "standard", "seed": 0})
    cascade.components = lambda: [{**s, "n_iter": 20} if "n_iter" in s else {**s, "n_queries": 300}
                                  for s in type(cascade).components(cascade)]
    x_adv = cascade(model, x, y)
    worst = accuracy(model, x_adv, y)
    for spec in cascade.components():
        single = accuracy(model, create_attack(spec)(model, x, y), y)
        assert worst <= single + 1e-9, (spec["name"], worst, single)
    fooled_by = cascade.last_info["fooled_by"]
    assert ((fooled_by >= 0) == (model(x_adv).argmax(1) != y)).all()
    assert not cascade.last_info["black_box_only"].any(), "an honest model: white-box attacks do the work"


class MaskedGradients(nn.Module):
    """Quantised input: floor() has a zero gradient, so white-box attacks see no signal; Square is unaffected."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model((x * 8).floor() / 8)


def test_black_box_success_where_white_box_failed_is_flagged(trained_toy):
    model, x, y = trained_toy
    masked = MaskedGradients(model).eval()
    cascade = create_attack({"name": "apgd_cascade", "eps": 0.3, "version": "standard", "seed": 0})
    cascade.components = lambda: [{**s, "n_iter": 10} if "n_iter" in s else {**s, "n_queries": 300}
                                  for s in type(cascade).components(cascade)]
    cascade(masked, x, y)
    assert cascade.last_info["black_box_only"].sum() > 10


def test_unknown_version_lists_valid_ones():
    with pytest.raises(ValueError, match="valid versions: standard, apgd, cheap"):
        create_attack({"name": "apgd_cascade", "version": "plus"})


def test_two_class_task_skips_apgd_t_and_still_attacks():
    from tests.conftest import ToyNet

    torch.manual_seed(0)
    model = ToyNet(num_classes=2).eval()
    x, y = toy_data(32, num_classes=2)
    cascade = create_attack({"name": "apgd_cascade", "eps": 0.3, "version": "cheap", "seed": 0})
    x_adv = check_threat_model(cascade, model, x, y)
    assert cascade.last_info["skipped"] == ["apgd_t"]
    assert accuracy(model, x_adv, y) <= accuracy(model, x, y)
