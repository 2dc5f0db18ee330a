"""Our AutoAttack-style cascade (apgd_cascade, not the reference): worst case over its components, black-box-only points flagged."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from attacks import create_attack
from tests.conftest import toy_data
from tests.invariants import check_eps_zero_identity, check_threat_model, with_boundary_pixels


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


def test_fast_version_invariants(trained_toy):
    model, x, y = trained_toy
    x = with_boundary_pixels(x)
    spec = {"name": "apgd_cascade", "version": "fast", "seed": 0}
    x_adv = check_threat_model(create_attack({**spec, "eps": 0.15}), model, x, y)
    assert accuracy(model, x_adv, y) < accuracy(model, x, y)
    check_eps_zero_identity(lambda e: create_attack({**spec, "eps": e}), model, x, y)
    with pytest.raises(ValueError, match="needs bn_mode eval.*use version standard"):
        create_attack({**spec, "bn_mode": "train"})


@pytest.mark.slow
def test_fast_version_gives_the_reference_standard_answer_with_a_third_of_its_work(trained_mnist_small):
    """benchmarks/autoattack_fast.py in small: on mnist_small trained clean for 150 steps, the first
    200 test images at eps 0.1, the fast version leaves the reference standard version's robust
    accuracy within one image (0.5 points; 0.2 points cannot be stated on 200 images, and the
    reference's own answer moves by an image or two between seeds) with at most a third of its
    model rows (forward passes x batch rows: the work, independent of the machine's load)."""
    pytest.importorskip("pyautoattack")
    from benchmarks.autoattack_fast import FAST, CountRows, reference_profiled
    from benchmarks.autoattack_validation import robust

    model, x, y = trained_mnist_small
    reference, _, profile, _ = reference_profiled(model, 0.1, x, y, seed=0)
    counter = CountRows(model).eval()
    fast, _, _ = robust(counter, FAST, 0.1, x, y, seed=0)
    assert 0 < reference.sum() < 0.9 * len(y), "eps 0.1 should leave a non-trivial robust fraction"
    assert abs(int(fast.sum()) - int(reference.sum())) <= 1, (int(fast.sum()), int(reference.sum()))
    assert 3 * sum(counter.rows.values()) <= sum(entry["rows"] for entry in profile.values())
