"""FMN (L-inf, L2, L1): invariants, determinism, strength, and the sweep's curve from one run.

FMN runs here with 100 steps (the paper's tables use 1000) on the 128-point toy model;
the properties tested do not depend on the step count. The comparison with adv-lib's
implementation lives in benchmarks/fmn_vs_adv_lib.py.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from attacks import attack_options, available_attacks, create_attack
from attacks.norms import L1Ball
from callbacks.sweep import minimum_norm_robust, sweep_batch
from tests.invariants import check_threat_model, perturbation_norms

NORMS = ("linf", "l2", "l1")
STEPS = 100
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def fmn(norm, **overrides):
    return create_attack({"name": "fmn", "norm": norm, "steps": STEPS, **overrides})


@pytest.fixture(scope="module")
def boundary_batch(trained_toy):
    """The first 32 toy points with a row of pixels at exactly 0 and one at exactly 1."""
    model, x, y = trained_toy
    x = x[:32].clone()
    x[:, :, 0, :] = 0.0
    x[:, :, -1, :] = 1.0
    return model, x, y[:32]


def unbounded_runs(model, x, y):
    """Per norm: (x_adv, last_info) of one unbounded run."""
    runs = {}
    for norm in NORMS:
        attack = fmn(norm)
        runs[norm] = (attack(model, x, y), {k: v.clone() for k, v in attack.last_info.items()})
    return runs


@pytest.fixture(scope="module")
def unbounded(boundary_batch):
    return unbounded_runs(*boundary_batch)


@pytest.fixture(scope="module")
def natural(trained_toy):
    """The first 64 toy points as they are, and one unbounded run per norm on them."""
    model, x, y = trained_toy
    x, y = x[:64], y[:64]
    return model, x, y, unbounded_runs(model, x, y)


def test_registered_with_its_options_and_config_round_trip():
    assert "fmn" in available_attacks()
    assert {"eps", "norm", "steps", "alpha_init", "gamma_init", "bn_mode", "seed"} <= set(attack_options("fmn"))
    for norm in NORMS:
        attack = create_attack({"name": "fmn", "norm": norm})
        assert attack.minimum_norm and attack.norm == norm and attack.eps == math.inf
        assert (attack.steps, attack.alpha_init, attack.alpha_final) == (100, 1.0, 0.01)
        assert (attack.gamma_init, attack.gamma_final) == (0.05, 0.001)
        assert create_attack(attack.config()).config() == attack.config()
    assert create_attack({"name": "fmn", "norm": "l1", "eps": "12"}).eps == 12.0
    wrapped = create_attack({"name": "autocast", "attack": {"name": "fmn", "norm": "l1"}, "eps": 3})
    assert wrapped.minimum_norm and wrapped.norm == "l1"  # the sweep runs it once too
    assert not create_attack({"name": "autocast"}).minimum_norm and not create_attack("pgd").minimum_norm


def test_invalid_options_are_refused():
    with pytest.raises(ValueError, match="valid norms: \\['l1', 'l2', 'linf'\\]"):
        create_attack({"name": "fmn", "norm": "l0"})
    with pytest.raises(ValueError, match="steps"):
        create_attack({"name": "fmn", "steps": 0})
    with pytest.raises(ValueError, match="gamma"):
        create_attack({"name": "fmn", "gamma_init": 0.001, "gamma_final": 0.05})
    with pytest.raises(ValueError, match="pixel units"):
        create_attack({"name": "fmn", "norm": "linf", "eps": 8})
    with pytest.raises(ValueError, match="valid norms"):  # PGD has no L1 steepest step: refused at once
        create_attack({"name": "pgd", "norm": "l1"})


def test_l1_projection_is_the_nearest_point_of_the_ball():
    """Duchi et al.'s projection: inside points unchanged; outside ones land on the sphere and
    no random point of the ball is nearer (per-sample radii, one of them 0)."""
    gen = torch.Generator().manual_seed(0)
    delta = torch.randn(6, 1, 4, 4, generator=gen)
    radius = torch.tensor([0.0, 1.0, 3.0, 5.0, 100.0, 2.0])
    projected = L1Ball(radius.view(-1, 1, 1, 1)).project(delta)
    l1 = projected.flatten(1).abs().sum(1)
    outside = delta.flatten(1).abs().sum(1) > radius
    assert torch.allclose(l1[outside], radius[outside], atol=1e-5)
    assert torch.equal(projected[~outside], delta[~outside])
    distance = (projected - delta).flatten(1).norm(dim=1)
    for _ in range(200):  # random points of each ball are never nearer
        z = torch.randn(6, 16, generator=gen)
        z = z / z.abs().sum(1, keepdim=True) * radius[:, None] * torch.rand(6, 1, generator=gen)
        assert ((z - delta.flatten(1)).norm(dim=1) >= distance - 1e-5).all()


@pytest.mark.parametrize("norm", NORMS)
def test_threat_model_and_budget(norm, boundary_batch, unbounded):
    """A finite budget returns exactly the found points that fit it, and x elsewhere."""
    model, x, y = boundary_batch
    free_adv, free_info = unbounded[norm]
    found = free_info[f"{norm}_norm"]
    eps = found[free_info["success"]].median().item()
    attack = fmn(norm, eps=eps)
    x_adv = check_threat_model(attack, model, x, y)
    fits = found <= eps
    assert fits.any() and (~fits).any()
    assert torch.equal(attack.last_info[f"{norm}_norm"], found), "the search must not depend on eps"
    assert torch.equal(x_adv[~fits], x[~fits]), "a point beyond the budget must give back x"
    assert torch.equal(x_adv[fits], free_adv[fits])


@pytest.mark.parametrize("norm", NORMS)
def test_last_info_matches_the_returned_points(norm, boundary_batch, unbounded):
    model, x, y = boundary_batch
    x_adv, info = unbounded[norm]
    assert set(info) == {"success", f"{norm}_norm"}
    with torch.no_grad():
        fooled = model(x_adv).argmax(1) != y
    assert torch.equal(info["success"], fooled)
    assert info["success"].any()
    ok = info["success"]
    measured = perturbation_norms(x_adv, x, norm)
    assert torch.allclose(info[f"{norm}_norm"][ok], measured[ok], rtol=0, atol=1e-6)
    assert torch.isinf(info[f"{norm}_norm"][~ok]).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_a_seed_gives_bitwise_equal_results(natural):
    """The search is deterministic; the L-inf refinement's random starts come from the seed."""
    model, x, y, _ = natural
    for norm in NORMS:
        first, second = fmn(norm, seed=123), fmn(norm, seed=123)
        assert torch.equal(first(model, x, y), second(model, x, y)), norm
        assert torch.equal(first.last_info[f"{norm}_norm"], second.last_info[f"{norm}_norm"])


@pytest.mark.parametrize("norm", NORMS)
def test_fools_almost_every_point_of_a_trained_model(norm, natural):
    model, x, y, runs = natural
    assert runs[norm][1]["success"].float().mean() >= 0.95


def test_finds_adversarials_where_cw_and_deepfool_do_with_no_larger_norms(natural):
    """FMN-L2 fools every point CW-L2 or DeepFool fools, and its median L2 norm on them
    is no larger than theirs (within 2%)."""
    model, x, y, runs = natural
    _, info = runs["l2"]
    for spec in ({"name": "deepfool"}, {"name": "cw_l2", "binary_search_steps": 5, "steps": 30,
                                        "lr": 0.05, "initial_const": 1.0}):
        other = create_attack(spec)
        other(model, x, y)
        theirs = other.last_info
        assert theirs["success"].any()
        assert not (theirs["success"] & ~info["success"]).any(), spec["name"]
        both = theirs["success"] & info["success"]
        assert info["l2_norm"][both].median() <= 1.02 * theirs["l2_norm"][both].median(), spec["name"]


@pytest.mark.parametrize("norm", NORMS)
def test_linear_model_distances_match_the_closed_form(norm):
    """For an affine classifier the minimum distance in norm p is
    min_k (Z_y - Z_k) / ||W_k - W_y||_dual: nothing can beat it, FMN gets within 3%."""
    gen = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(4, 64, generator=gen))
        model[1].bias.zero_()
    x = (0.5 + 0.02 * torch.randn(8, 1, 8, 8, generator=gen)).clamp(0, 1)
    with torch.no_grad():
        z = model(x)
        weight = model[1].weight
    y = z.argmax(1)
    dual = {"linf": 1, "l2": 2, "l1": math.inf}[norm]
    gaps = z.gather(1, y[:, None]) - z
    dist = gaps / (weight[None] - weight[y][:, None]).norm(p=dual, dim=2)
    dist[torch.arange(len(y)), y] = math.inf
    d_star = dist.min(1).values
    if norm == "linf":
        assert (d_star < 0.45).all(), "the box must not bind"
    attack = fmn(norm)
    attack(model, x, y)
    assert attack.last_info["success"].all()
    ratio = attack.last_info[f"{norm}_norm"] / d_star
    assert (ratio >= 1 - 1e-4).all() and (ratio <= 1.03).all(), ratio


def test_points_already_misclassified_cost_nothing(trained_toy):
    model, x, y = trained_toy
    x, y = x[:8], y[:8].clone()
    y[:3] = (y[:3] + 1) % 4
    attack = fmn("linf", steps=3)
    x_adv = attack(model, x, y)
    assert attack.last_info["success"][:3].all() and (attack.last_info["linf_norm"][:3] == 0).all()
    assert torch.equal(x_adv[:3], x[:3])


def test_works_under_autocast(trained_toy):
    model, x, y = trained_toy
    attack = fmn("l2", eps=2.0, steps=20)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x_adv = attack(model, x[:16], y[:16])
    assert x_adv.dtype == x.dtype and attack.last_info["l2_norm"].dtype == x.dtype
    check_threat_model(attack, model, x[:16], y[:16])


# -- the epsilon sweep: one run, the whole curve -------------------------------------------------


class CountingModel(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model, self.calls = model, 0

    def forward(self, x):
        self.calls += 1
        return self.model(x)


def test_sweep_runs_a_minimum_norm_attack_once_and_matches_per_eps_runs(trained_toy):
    """One FMN run gives the same per-eps results as running FMN at each eps (the search alone:
    the L-inf refinement's random starts differ between calls)."""
    model, x, y = trained_toy
    epsilons = [0.0, 0.1, 0.15, 0.2, 0.25]
    counting = CountingModel(model)
    sweep = sweep_batch(counting, x, y, [{"name": "fmn", "norm": "linf", "steps": STEPS, "refine_rounds": 0}], epsilons, seed=0)
    # clean check, STEPS steps + the attack's own confirmation pass, the sweep's re-evaluation
    assert counting.calls == 1 + STEPS + 1 + 1
    for e, eps in enumerate(epsilons):
        x_adv = fmn("linf", eps=eps, refine_rounds=0)(model, x, y)
        with torch.no_grad():
            assert torch.equal(sweep.robust[0, e], model(x_adv).argmax(1) == y), eps
    assert sweep.robust[0, 0].all() and not sweep.robust[0, -2].all() and sweep.robust[0, -2].any()


def test_linf_refinement_only_shrinks_the_points_found(trained_toy):
    """The refinement keeps every point the search found unless it finds a smaller adversarial one
    (never a larger norm, never a lost success), and it does find smaller ones."""
    model, x, y = trained_toy
    search = fmn("linf", refine_rounds=0)
    search(model, x, y)
    refined = fmn("linf", seed=0)
    x_adv = check_threat_model(refined, model, x, y)
    before, after = search.last_info["linf_norm"], refined.last_info["linf_norm"]
    assert (after <= before).all() and (after < before).any()
    assert torch.equal(refined.last_info["success"], search.last_info["success"])
    with torch.no_grad():
        assert torch.equal(model(x_adv).argmax(1) != y, refined.last_info["success"])


def _curve_and_per_eps(model, x, y, norm, epsilons):
    """Robust accuracy (%) per eps: FMN from one run, PGD-20 and APGD-CE-20 at each eps, and
    the per-sample worst case of those two, all from one sweep_batch call."""
    per_eps = [{"name": "pgd", "norm": norm, "steps": 20}, {"name": "apgd_ce", "norm": norm, "n_iter": 20}]
    sweep = sweep_batch(model, x, y, [{"name": "fmn", "norm": norm, "steps": 2 * STEPS}, *per_eps], epsilons, seed=0)
    accuracy = sweep.robust.float().mean(2) * 100
    return accuracy[0], accuracy[1:], sweep.robust[1:].all(0).float().mean(1) * 100


@pytest.mark.parametrize("norm,epsilons", [("linf", [0.0, 0.1, 0.15, 0.17, 0.2, 0.25]),
                                           ("l2", [0.0, 0.6, 0.9, 1.1, 1.3, 1.5])])
def test_curve_from_one_run_against_the_per_eps_attacks(norm, epsilons, trained_toy):
    """FMN's curve from one run is never more than 0.5 points above PGD-20's or
    APGD-CE-20's own curve at any eps of the sweep.

    NOT met on this toy: the issue's target against the per-sample worst case of the two,
    which FMN's curve exceeds by 1.6 points (2 of 128 samples) at one eps of each norm
    (L-inf 0.2, L2 1.3; adv-lib's FMN gives the same L-inf curve). The toy's radii are
    packed (the curve falls from 96% to 0% within +-25% of the median radius), so a norm
    a few percent above PGD's shows as points. The bound below pins that gap so that it
    cannot grow unnoticed; in a sweep, FMN belongs next to per-eps attacks."""
    model, x, y = trained_toy
    curve, each, worst = _curve_and_per_eps(model, x, y, norm, epsilons)
    table = list(zip(epsilons, curve.tolist(), each.T.tolist(), worst.tolist()))
    assert (curve <= each.min(0).values + 0.5).all(), table
    assert (curve <= worst + 2.0).all(), table
    assert 0 < curve[-2] < 100, "the sweep must reach the interesting part of the curve"


def test_feasible_gradient_finds_what_the_raw_gradient_misses(boundary_batch, unbounded):
    """With rows of pixels at 0 and at 1 the paper's raw gradient stalls short of the
    boundary (adv-lib's FMN too); dropping its infeasible part finds nearly every point."""
    model, x, y = boundary_batch
    raw = fmn("l2", feasible_gradient=False)
    raw(model, x, y)
    assert unbounded["l2"][1]["success"].float().mean() >= 0.9
    assert raw.last_info["success"].float().mean() <= 0.6
    assert not (raw.last_info["success"] & ~unbounded["l2"][1]["success"]).any()


def test_the_sweep_counts_only_points_that_are_adversarial_and_inside_the_ball(trained_toy):
    """minimum_norm_robust measures the distance and re-evaluates the model itself: a point
    that is not misclassified, or that lies beyond eps, never counts as fooled there."""
    model, x, y = trained_toy
    x, y = x[:32], y[:32]
    attack = fmn("l2", eps=2.0)
    robust = minimum_norm_robust(model, attack, x, y, [0.5, 1.2, 2.0])
    x_adv = fmn("l2", eps=2.0)(model, x, y)
    with torch.no_grad():
        fooled = model(x_adv).argmax(1) != y
    distance = (x_adv - x).flatten(1).norm(dim=1)
    for e, eps in enumerate([0.5, 1.2, 2.0]):
        assert torch.equal(~robust[e], fooled & (distance <= eps))
    # liars: they claim success at norm 0 for every sample, and return x, or points beyond eps
    claim = {"success": torch.ones_like(y, dtype=torch.bool), "l2_norm": torch.zeros(len(y))}
    for returned, expected in [(x, torch.ones_like(robust[:1])), (x_adv, ~(fooled & (distance <= 0.5))[None])]:
        liar = fmn("l2", eps=0.5)
        liar.perturb = lambda model, x, y, returned=returned, liar=liar: (liar.last_info.update(claim), returned)[1]
        assert torch.equal(minimum_norm_robust(model, liar, x, y, [0.5]), expected)


def test_the_epsilon_sweep_callback_takes_l1_and_l2_curves_beyond_eps_1(tmp_path):
    """RobustnessEvaluation with FMN: L2/L1 budgets above 1 are accepted (L-inf ones are not),
    an L1-only sweep skips the PGD masking probes (PGD has no L1), and the worst case row
    is the per-sample AND over the attacks."""
    import json

    import pytorch_lightning as pl

    from callbacks import RobustnessEvaluation
    from datamodules import SyntheticDataModule
    from lightning_modules import AdversarialClassifier

    with pytest.raises(ValueError, match="outside"):
        RobustnessEvaluation(attacks=[{"name": "fmn", "norm": "l2"}, {"name": "pgd"}], epsilons=[2.0])
    dm = SyntheticDataModule(batch_size=64, noise=0.3, num_train=256, num_test=64)
    model = AdversarialClassifier(backbone="mnist_small", num_classes=10, mean=dm.mean, std=dm.std,
                                  optimizer="adam", lr=1e-3, weight_decay=0.0)
    trainer = pl.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         default_root_dir=tmp_path, inference_mode=False)
    trainer.fit(model, dm)
    for name, attacks, epsilons in [
        ("l1.json", [{"name": "fmn", "norm": "l1", "steps": 20}], [2.0, 8.0]),
        ("l2.json", [{"name": "fmn", "norm": "l2", "steps": 20}, {"name": "pgd", "norm": "l2", "steps": 5}],
         [0.5, 2.0]),
    ]:
        callback = RobustnessEvaluation(attacks=attacks, epsilons=epsilons, num_samples=32, batch_size=16,
                                        filename=name, check_samples=16)
        callback.evaluate(trainer, model.eval(), "manual")
        result = json.loads((tmp_path / name).read_text())["evaluations"][0]
        rows = {(r["attack"], r["eps"]): r["correct"] for r in result["rows"]}
        fmn_label = result["attacks"][0]["label"]
        assert rows[(fmn_label, 0.0)] == result["clean_correct"]
        assert rows[(fmn_label, epsilons[-1])] < rows[(fmn_label, epsilons[0])] <= result["clean_correct"]
        for eps in [0.0, *epsilons]:
            assert rows[("worst_case", eps)] <= min(rows[(a["label"], eps)] for a in result["attacks"])
        assert ("probe_samples" in result["gradient_masking_checks"]) == (name == "l2.json")


@pytest.mark.parametrize("norm,eps", [("linf", 0.2), ("l2", 1.3)])
def test_warm_start_is_never_weaker_than_apgd_ce_at_eps(norm, eps, trained_toy):
    """warm_start: the search starts at APGD-CE's point at eps (same seed), shrunk towards x as
    far as it stays adversarial; so at eps the one-run curve never lies above APGD-CE's, the
    points stay inside the budget, and a seed reproduces the run."""
    model, x, y = trained_toy
    x_adv = check_threat_model(fmn(norm, eps=eps, warm_start=True, seed=1), model, x, y)
    robust = minimum_norm_robust(model, fmn(norm, eps=eps, warm_start=True, seed=1), x, y, [eps])[0]
    apgd = create_attack({"name": "apgd_ce", "norm": norm, "eps": eps, "seed": 1})
    with torch.no_grad():
        apgd_robust = model(apgd(model, x, y)).argmax(1) == y
    assert apgd_robust.float().mean() < 0.9, "APGD-CE must fool some points for the test to mean anything"
    assert not (robust & ~apgd_robust).any()
    assert torch.equal(x_adv, fmn(norm, eps=eps, warm_start=True, seed=1)(model, x, y))


def test_linf_step_is_checked():
    with pytest.raises(ValueError, match="valid: sign, l2"):
        fmn("linf", linf_step="l1")
