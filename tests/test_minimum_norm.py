"""Minimum-norm L2 attacks (CW-L2, DeepFool): invariants, minimality, bookkeeping.

CW runs here with fewer, larger Adam steps than its defaults (lr 0.05, 30 steps per
c, c from 1) so the file stays fast on a shared CPU; the properties tested do not
depend on those settings.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import attacks.minimum_norm  # noqa: F401  (registers cw_l2 and deepfool)
from attacks import attack_options, available_attacks, create_attack
from tests.invariants import check_threat_model

N = 32
FAST_CW = {"name": "cw_l2", "binary_search_steps": 5, "steps": 30, "lr": 0.05, "initial_const": 1.0}
DEEPFOOL = {"name": "deepfool"}
SPECS = {"cw_l2": FAST_CW, "deepfool": DEEPFOOL}
PGD_EPS = 1.2  # PGD-L2 (50 steps) fools most (~94%) of the test points at this radius


def build(name, **overrides):
    return create_attack({**SPECS[name], **overrides})


def l2(x_adv, x):
    return (x_adv - x).flatten(1).norm(dim=1)


@pytest.fixture(scope="module")
def boundary_batch(trained_toy):
    """The first N toy points with a row of pixels at exactly 0 and one at exactly 1."""
    model, x, y = trained_toy
    x = x[:N].clone()
    x[:, :, 0, :] = 0.0
    x[:, :, -1, :] = 1.0
    return model, x, y[:N]


@pytest.fixture(scope="module")
def unbounded(boundary_batch):
    """Each attack (and CW with only 2 binary-search steps) run once with eps = inf."""
    model, x, y = boundary_batch
    runs = {}
    for key, attack in [("cw_l2", build("cw_l2")), ("deepfool", build("deepfool")),
                        ("cw_l2_short", build("cw_l2", binary_search_steps=2))]:
        x_adv = attack(model, x, y)
        runs[key] = (x_adv, {k: v.clone() for k, v in attack.last_info.items()})
    return runs


def test_registered_with_l2_threat_model_and_config_round_trip():
    assert {"cw_l2", "deepfool"} <= set(available_attacks())
    for name in ("cw_l2", "deepfool"):
        attack = create_attack({"name": name})
        assert attack.norm == "l2" and attack.eps == math.inf
        assert {"eps", "bn_mode", "seed"} <= set(attack_options(name))
        again = create_attack(attack.config())
        assert again.config() == attack.config()
    cw = create_attack({"name": "cw_l2", "eps": "inf", "lr": "0.02"})
    assert cw.eps == math.inf and cw.lr == pytest.approx(0.02)
    assert (cw.binary_search_steps, cw.steps, cw.confidence) == (9, 100, 0.0)
    df = create_attack({"name": "deepfool", "eps": "0.5"})
    assert (df.eps, df.candidates, df.max_steps, df.overshoot) == (0.5, 10, 50, 0.02)


def test_invalid_options_are_refused():
    with pytest.raises(ValueError, match="binary_search_steps"):
        create_attack({"name": "cw_l2", "steps": 0})
    with pytest.raises(ValueError, match="confidence"):
        create_attack({"name": "cw_l2", "confidence": -1})
    with pytest.raises(ValueError, match="candidates"):
        create_attack({"name": "deepfool", "candidates": 1})
    with pytest.raises(ValueError, match="valid options"):
        create_attack({"name": "deepfool", "norm": "linf"})


@pytest.mark.parametrize("name", ["cw_l2", "deepfool"])
def test_threat_model_and_budget(name, boundary_batch, unbounded):
    """A finite budget returns exactly the found points that fit it, and x elsewhere."""
    model, x, y = boundary_batch
    free_adv, free_info = unbounded[name]
    found = free_info["l2_norm"]
    eps = found[free_info["success"]].median().item()
    attack = build(name, eps=eps)
    x_adv = check_threat_model(attack, model, x, y)
    fits = found <= eps
    assert fits.any() and (~fits).any()
    assert torch.equal(attack.last_info["l2_norm"], found), "the search must not depend on eps"
    assert torch.equal(attack.last_info["success"], free_info["success"] & fits)
    assert torch.equal(x_adv[~fits], x[~fits]), "a point beyond the budget must give back x"
    assert torch.equal(x_adv[fits], free_adv[fits])


@pytest.mark.parametrize("name", ["cw_l2", "deepfool"])
def test_unbounded_attack_fools_most_points(name, boundary_batch, unbounded):
    model, x, y = boundary_batch
    x_adv, info = unbounded[name]
    assert info["success"].float().mean() >= 0.9
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert torch.equal(x_adv[~info["success"]], x[~info["success"]])


@pytest.mark.parametrize("name", ["cw_l2", "deepfool"])
def test_last_info_matches_the_returned_points(name, boundary_batch, unbounded):
    model, x, y = boundary_batch
    x_adv, info = unbounded[name]
    assert set(info) == {"success", "l2_norm"}
    assert info["success"].dtype == torch.bool and info["success"].shape == (N,)
    assert info["l2_norm"].is_floating_point() and info["l2_norm"].shape == (N,)
    with torch.no_grad():
        fooled = model(x_adv).argmax(1) != y
    assert torch.equal(info["success"], fooled)
    ok = info["success"]
    assert torch.allclose(info["l2_norm"][ok], l2(x_adv, x)[ok], rtol=0, atol=1e-6)
    assert torch.isinf(info["l2_norm"][~ok]).all(), "with eps = inf only unfound points fail"


def test_minimum_norm_attacks_beat_pgd_at_its_own_radius(boundary_batch, unbounded):
    """PGD's perturbations sit at the ball's edge; minimum-norm ones stay well inside."""
    model, x, y = boundary_batch
    pgd = create_attack({"name": "pgd", "norm": "l2", "eps": PGD_EPS, "steps": 50, "seed": 0})
    x_pgd = pgd(model, x, y)
    with torch.no_grad():
        pgd_fooled = model(x_pgd).argmax(1) != y
    assert pgd_fooled.float().mean() >= 0.75
    assert l2(x_pgd, x)[pgd_fooled].median() > 0.9 * PGD_EPS
    for name in ("cw_l2", "deepfool"):
        _, info = unbounded[name]
        both = pgd_fooled & info["success"]
        assert both.float().mean() >= 0.7
        assert info["l2_norm"][both].median() < 0.95 * PGD_EPS, name


def test_more_binary_search_steps_never_give_larger_norms(unbounded):
    """The first binary-search steps of a longer run are the shorter run exactly, and the
    best point is only ever replaced by a smaller one: per sample, more steps never lose
    a success and never give a larger norm."""
    _, short = unbounded["cw_l2_short"]
    _, full = unbounded["cw_l2"]
    assert short["success"].any()
    assert not (short["success"] & ~full["success"]).any()
    both = short["success"] & full["success"]
    assert (full["l2_norm"][both] <= short["l2_norm"][both]).all()
    assert full["l2_norm"][both].mean() <= short["l2_norm"][both].mean()
    assert full["l2_norm"][both].mean() < short["l2_norm"][both].mean(), "the search should help"


def test_deepfool_more_steps_keep_early_successes(boundary_batch, unbounded):
    model, x, y = boundary_batch
    full_adv, full = unbounded["deepfool"]
    short_attack = build("deepfool", max_steps=4)
    short_adv = short_attack(model, x, y)
    early = short_attack.last_info["success"]
    assert early.any() and (full["success"] & ~early).any()
    assert torch.equal(short_adv[early], full_adv[early])
    assert torch.equal(short_attack.last_info["l2_norm"][early], full["l2_norm"][early])


def test_linear_model_distances_match_the_closed_form():
    """For an affine classifier the minimum L2 distance is min_k (Z_y - Z_k) / ||W_k - W_y||:
    DeepFool reaches it in one step (times 1 + overshoot, plus its 1e-4), CW approaches it
    from above; nothing can beat it."""
    gen = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(4, 64, generator=gen))
        model[1].bias.zero_()
    x = (0.5 + 0.02 * torch.randn(8, 1, 8, 8, generator=gen)).clamp(0, 1)  # box never binds
    with torch.no_grad():
        z = model(x)
        weight = model[1].weight
    y = z.argmax(1)
    gaps = z.gather(1, y[:, None]) - z
    dist = gaps / (weight[None] - weight[y][:, None]).norm(dim=2)
    dist[torch.arange(len(y)), y] = math.inf
    d_star = dist.min(1).values

    deepfool = build("deepfool")
    deepfool(model, x, y)
    assert deepfool.last_info["success"].all()
    expected = (1 + deepfool.overshoot) * (d_star + 1e-4)
    assert torch.allclose(deepfool.last_info["l2_norm"], expected, rtol=1e-4, atol=0)

    cw = create_attack({"name": "cw_l2", "binary_search_steps": 5, "steps": 50, "initial_const": 1.0})
    cw(model, x, y)
    assert cw.last_info["success"].all()
    ratio = cw.last_info["l2_norm"] / d_star
    assert (ratio >= 1 - 1e-4).all() and (ratio <= 1.1).all(), ratio


@pytest.mark.parametrize("name", ["cw_l2", "deepfool"])
def test_points_already_misclassified_cost_nothing(name, trained_toy):
    model, x, y = trained_toy
    x, y = x[:8], y[:8].clone()
    y[:3] = (y[:3] + 1) % 4  # the model (100% clean accuracy) now misclassifies these
    fast = {"binary_search_steps": 1, "steps": 2} if name == "cw_l2" else {"max_steps": 2}
    attack = build(name, **fast)
    x_adv = attack(model, x, y)
    assert attack.last_info["success"][:3].all()
    assert (attack.last_info["l2_norm"][:3] == 0).all()
    assert torch.equal(x_adv[:3], x[:3])


@pytest.mark.parametrize("name", ["cw_l2", "deepfool"])
def test_works_under_autocast(name, trained_toy):
    model, x, y = trained_toy
    x, y = x[:16], y[:16]
    fast = {"binary_search_steps": 2, "steps": 10} if name == "cw_l2" else {}
    attack = build(name, eps=2.0, **fast)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x_adv = attack(model, x, y)
    assert x_adv.dtype == x.dtype and attack.last_info["l2_norm"].dtype == x.dtype
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (l2(x_adv, x) <= 2.0 + 1e-5).all()
