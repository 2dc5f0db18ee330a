"""The first-order attacks (FGSM, FGSM-RS, BIM, PGD): strength, closed forms, step rules, bn_mode, errors.

The invariants every attack shares (threat model, eps 0, side effects, seeds, dtype) are in
test_attack_conformance.py."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attacks import attack_mode, available_attacks, create_attack
from tests.conftest import ToyNet, toy_data
from tests.invariants import check_no_side_effects, check_threat_model

EPS = 0.1
# the foundation's first-order attacks, plus the L2 and restart variants of PGD
SPECS = [{"name": n} for n in ("fgsm", "fgsm_rs", "bim", "pgd")] + [
    {"name": "pgd", "norm": "l2", "eps": 0.5, "steps": 5},
    {"name": "pgd", "restarts": 3, "steps": 5},
    {"name": "fgsm", "norm": "l2", "eps": 0.5},
]


def build(spec, **overrides):
    return create_attack({"eps": EPS, **spec, **overrides})


def ids(spec):
    return "-".join(f"{v}" for v in spec.values())


def test_registry_lists_the_foundation_attacks():
    assert {"fgsm", "fgsm_rs", "bim", "pgd"} <= set(available_attacks())


@pytest.mark.parametrize("spec", SPECS, ids=ids)
def test_loss_increases_over_clean_loss(spec, trained_toy):
    model, x, y = trained_toy
    x_adv = build(spec)(model, x, y)
    with torch.no_grad():
        clean, adv = F.cross_entropy(model(x), y), F.cross_entropy(model(x_adv), y)
    assert adv > clean * 1.5, (clean.item(), adv.item())


def test_bn_mode_decides_which_statistics_the_attack_sees():
    model = ToyNet()
    model.features[1].running_mean.fill_(5.0)  # eval-mode BN then behaves very differently
    x, y = toy_data(16)
    seen = {}
    for mode in ("eval", "train"):
        with attack_mode(model, mode):
            seen[mode] = model.features[1].training
    assert seen == {"eval": False, "train": True}
    g_eval = build({"name": "fgsm"}, bn_mode="eval")(model, x, y)
    g_train = build({"name": "fgsm"}, bn_mode="train")(model, x, y)
    assert not torch.equal(g_eval, g_train)


def test_fgsm_is_the_closed_form(trained_toy):
    model, x, y = trained_toy
    xr = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(xr), y, reduction="sum"), xr)
    expected = (x + EPS * grad.sign()).clamp(0, 1)
    assert torch.allclose(build({"name": "fgsm"})(model, x, y), expected)


def test_fgsm_rs_defaults_to_step_one_and_a_quarter_eps():
    assert build({"name": "fgsm_rs"}).step_size() == pytest.approx(1.25 * EPS)


def test_bim_uses_kurakins_step_rule():
    bim = create_attack({"name": "bim", "eps": "8/255"})
    assert bim.num_steps() == 10  # min(8 + 4, 1.25 * 8)
    assert bim.step_size() == pytest.approx(1 / 255)
    assert not bim.random_start


def test_pgd_is_stronger_than_fgsm_and_restarts_never_hurt(trained_toy):
    model, x, y = trained_toy

    def acc(spec):
        with torch.no_grad():
            return (model(build(spec, eps=0.15, seed=0)(model, x, y)).argmax(1) == y).float().mean().item()

    fgsm, pgd1, pgd3 = acc({"name": "fgsm"}), acc({"name": "pgd", "steps": 20}), acc({"name": "pgd", "steps": 20, "restarts": 3})
    assert pgd1 <= fgsm
    assert pgd3 <= pgd1


def test_works_under_autocast(trained_toy):
    model, x, y = trained_toy
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x_adv = build({"name": "pgd", "steps": 3})(model, x, y)
    assert x_adv.dtype == x.dtype
    assert (x_adv - x).abs().max() <= EPS + 1e-5 and x_adv.min() >= 0 and x_adv.max() <= 1


def test_errors_name_the_fix(trained_toy):
    model, x, y = trained_toy
    with pytest.raises(ValueError, match="valid attacks: .*pgd"):
        create_attack({"name": "pgdd"})
    with pytest.raises(ValueError, match="valid options: eps, alpha, steps"):
        create_attack({"name": "pgd", "epsilon": 0.3})
    with pytest.raises(ValueError, match=r"outside \[0, 1\].*8/255"):
        create_attack({"name": "pgd", "eps": 8})
    with pytest.raises(ValueError, match="unknown norm"):
        create_attack({"name": "pgd", "norm": "l3"})
    with pytest.raises(ValueError, match=r"\[0, 1\] pixels"):
        create_attack({"name": "fgsm", "eps": 0.1})(model, x * 2 - 1, y)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("name", ["fgsm", "pgd", "apgd_ce", "square", "deepfool", "cw_l2"])
def test_non_finite_pixels_are_refused(trained_toy, name, bad):
    """NaN passes a [0, 1] range check (every comparison with NaN is false): it must not pass the attack."""
    model, x, y = trained_toy
    x = x[:4].clone()
    x[1, 0, 2, 3] = bad
    with pytest.raises(ValueError, match=r"NaN or infinite pixels \(1 sample\(s\) of 4\)"):
        create_attack({"name": name, "eps": 0.1})(model, x, y[:4])


def test_fraction_strings_and_config_round_trip():
    attack = create_attack({"name": "pgd", "eps": "8/255", "alpha": "2/255", "steps": 7})
    assert attack.eps == pytest.approx(8 / 255) and attack.alpha == pytest.approx(2 / 255)
    again = create_attack(attack.config())
    assert again.config() == attack.config()


def test_attack_spec_forms_agree():
    by_name = create_attack("pgd")
    dashed = create_attack({"name": "APGD-T", "eps": "8/255"})
    class_path = create_attack({"class_path": "attacks.PGD", "init_args": {"steps": 7, "eps": 0.1}})
    assert by_name.config()["name"] == "pgd" and dashed.name == "apgd_t"
    assert class_path.config() == create_attack({"name": "pgd", "steps": 7, "eps": 0.1}).config()
    with pytest.raises(ValueError, match="not a registered attack"):
        create_attack({"class_path": "torch.nn.Linear"})


class _CountingModel(torch.nn.Module):
    """Wraps a model and counts the samples it is run on."""

    def __init__(self, model):
        super().__init__()
        self.model, self.samples = model, 0

    def forward(self, x):
        self.samples += len(x)
        return self.model(x)


@pytest.mark.parametrize("norm,eps", [("linf", 0.15), ("l2", 1.5)])
def test_early_stop_is_never_weaker_and_skips_fooled_samples(trained_toy, norm, eps):
    model, x, y = trained_toy
    spec = {"name": "pgd", "norm": norm, "eps": eps, "steps": 20, "seed": 0}
    plain = build(spec)(model, x, y)
    counting = _CountingModel(model)
    early_attack = build(spec, early_stop=True)
    early = check_threat_model(early_attack, counting, x, y)
    with torch.no_grad():
        fooled_plain = model(plain).argmax(1) != y
        fooled_early = model(early).argmax(1) != y
    assert fooled_plain.any() and (~fooled_plain).any(), "the test needs both outcomes to mean anything"
    assert (fooled_early | ~fooled_plain).all(), "a sample plain PGD fools must stay fooled with early_stop"
    # same start and steps: a sample early_stop never fooled followed plain PGD's path exactly
    kept = ~fooled_early
    assert torch.allclose(early[kept], plain[kept])
    assert counting.samples < 20 * len(x), "fooled samples were still forwarded"
    check_no_side_effects(early_attack, x, y)


def test_early_stop_refuses_batch_statistics():
    with pytest.raises(ValueError, match="bn_mode eval"):
        create_attack({"name": "pgd", "early_stop": True, "bn_mode": "train"})
