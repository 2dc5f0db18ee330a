"""Targeted attacks: fgsm_targeted, l2_iterative_targeted, lbfgs and their shared target rules."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import attacks.lbfgs  # noqa: F401  (registers "lbfgs")
import attacks.targeted  # noqa: F401  (registers "fgsm_targeted", "l2_iterative_targeted")
from attacks import available_attacks, create_attack
from attacks.lbfgs import LBFGS
from attacks.targeted import TARGET_RULES, FGSMTargeted, L2IterativeTargeted, choose_targets
from tests.invariants import check_threat_model

NAMES = ["fgsm_targeted", "l2_iterative_targeted", "lbfgs"]
# strong enough to reach targets on the trained toy model
STRONG = {
    "fgsm_targeted": {"name": "fgsm_targeted", "eps": 0.3},
    "l2_iterative_targeted": {"name": "l2_iterative_targeted"},
    "lbfgs": {"name": "lbfgs"},
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def predictions(model, x):
    with torch.no_grad():
        return model(x).argmax(1)


@pytest.fixture(scope="module")
def unbounded_runs(trained_toy):
    """L2 iterative and L-BFGS, unbounded, on the same points with the same (random) targets."""
    model, x, y = trained_toy
    iterative = create_attack({"name": "l2_iterative_targeted", "target_rule": "random", "seed": 0})
    x_it = iterative(model, x, y)
    lbfgs = create_attack({"name": "lbfgs", "target_rule": "given"})
    x_lb = lbfgs(model, x, y, target=iterative.last_info["target"])
    return {"l2_iterative_targeted": (x_it, iterative.last_info), "lbfgs": (x_lb, lbfgs.last_info)}


# -- registry and options ---------------------------------------------------------------
def test_registered_under_their_names():
    assert set(NAMES) <= set(available_attacks())
    assert create_attack("fgsm_targeted").__class__ is FGSMTargeted
    assert create_attack("l2-iterative-targeted").__class__ is L2IterativeTargeted
    assert create_attack("lbfgs").__class__ is LBFGS


def test_defaults_and_config_round_trip():
    fgsm = create_attack("fgsm_targeted")
    assert fgsm.eps == pytest.approx(8 / 255) and fgsm.norm == "linf" and fgsm.target_rule == "least_likely"
    it = create_attack("l2_iterative_targeted")
    assert it.eps == float("inf") and it.norm == "l2" and it.alpha == 0.1 and it.max_steps == 100
    lb = create_attack({"name": "lbfgs", "eps": "inf", "c_init": "1/100"})
    assert lb.eps == float("inf") and lb.norm == "l2" and lb.c_init == pytest.approx(0.01)
    assert (lb.binary_search_steps, lb.max_iter, lb.target_rule) == (5, 20, "least_likely")
    for attack in (fgsm, it, lb, create_attack({"name": "l2_iterative_targeted", "eps": 2, "target_rule": "random", "seed": 3})):
        assert create_attack(attack.config()).config() == attack.config()


def test_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match="valid target rules: given, least_likely, random"):
        create_attack({"name": "lbfgs", "target_rule": "most_likely"})
    with pytest.raises(ValueError, match="valid target rules"):
        create_attack({"name": "fgsm_targeted", "target_rule": "llc"})
    with pytest.raises(ValueError, match="alpha"):
        create_attack({"name": "l2_iterative_targeted", "alpha": 0})
    with pytest.raises(ValueError, match="c_init"):
        create_attack({"name": "lbfgs", "c_init": -1})
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        create_attack({"name": "fgsm_targeted", "eps": 8})
    with pytest.raises(ValueError, match="unknown norm"):
        create_attack({"name": "fgsm_targeted", "norm": "l1"})


# -- the invariants every attack must pass ------------------------------------------------


@pytest.mark.parametrize("name", ["l2_iterative_targeted", "lbfgs"])
def test_too_small_budget_gives_back_x_for_the_failures(name, trained_toy, unbounded_runs):
    model, x, y = trained_toy
    x_free, info_free = unbounded_runs[name]
    eps = float(info_free["l2_norm"].median())  # about half the samples need more than this
    attack = create_attack({"name": name, "eps": eps, "target_rule": "given"})
    x_adv = check_threat_model(attack, model, x, y, target=info_free["target"])
    info = attack.last_info
    failed = ~info["success"]
    assert failed.any() and info["success"].any()
    assert torch.equal(x_adv[failed], x[failed]) and (info["l2_norm"][failed] == 0).all()
    # the search does not depend on eps: inside the budget the unbounded result is kept, outside x
    over = info_free["l2_norm"] > eps
    assert torch.equal(x_adv[over], x[over])
    assert torch.equal(x_adv[~over], x_free[~over])
    assert torch.equal(info["success"], info_free["success"] & ~over)


# -- targeted strength and last_info --------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_reaches_random_targets_more_often_than_chance(name, trained_toy):
    model, x, y = trained_toy
    attack = create_attack({**STRONG[name], "target_rule": "random", "seed": 0})
    x_adv = attack(model, x, y)
    hit = (predictions(model, x_adv) == attack.last_info["target"]).float().mean().item()
    assert hit > 1 / (4 - 1), hit  # chance: a random class other than y
    if name != "fgsm_targeted":
        assert hit >= 0.9, hit  # the iterative attacks are unbounded: nearly always there


@pytest.mark.parametrize("rule", ["least_likely", "random"])
@pytest.mark.parametrize("name", NAMES)
def test_last_info_agrees_with_the_returned_points(name, rule, trained_toy):
    model, x, y = trained_toy
    attack = create_attack({**STRONG[name], "target_rule": rule, "seed": 1})
    x_adv = attack(model, x, y)
    info = attack.last_info
    expected = {"target", "success"} | ({"l2_norm"} if name != "fgsm_targeted" else set())
    expected |= {"steps"} if name == "l2_iterative_targeted" else set()
    assert set(info) == expected
    for value in info.values():
        assert value.shape == (x.shape[0],)
    assert info["target"].dtype == torch.long
    assert torch.equal(info["success"], predictions(model, x_adv) == info["target"])
    if "l2_norm" in info:
        assert torch.allclose(info["l2_norm"], (x_adv - x).flatten(1).norm(dim=1), atol=1e-6)
    if "steps" in info:
        assert ((info["steps"] >= 0) & (info["steps"] <= attack.max_steps)).all()


# -- target rules ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_least_likely_is_the_argmin_of_the_clean_logits(name, trained_toy):
    model, x, y = trained_toy
    attack = create_attack(STRONG[name])
    attack(model, x, y)
    with torch.no_grad():
        assert torch.equal(attack.last_info["target"], model(x).argmin(1))


def test_random_targets_avoid_y_and_follow_the_seed(trained_toy):
    model, x, y = trained_toy

    def draw(seed):
        attack = create_attack({"name": "fgsm_targeted", "target_rule": "random", "seed": seed})
        attack(model, x, y)
        return attack.last_info["target"]

    a, b, c = draw(5), draw(5), draw(6)
    assert (a != y).all() and (c != y).all()
    assert torch.equal(a, b) and not torch.equal(a, c)
    for cls in range(4):  # every other class turns up for each label
        assert set(a[y == cls].tolist()) == set(range(4)) - {cls}


def test_choose_targets_rules():
    logits = torch.tensor([[0.0, 1.0, -2.0], [3.0, -1.0, 0.5]])
    y = torch.tensor([1, 0])
    assert TARGET_RULES == ("given", "least_likely", "random")
    assert choose_targets("least_likely", logits, y).tolist() == [2, 1]
    assert choose_targets("given", logits, y, target=torch.tensor([0, 2])).tolist() == [0, 2]
    assert choose_targets("given", logits, y, target=2).tolist() == [2, 2]
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        assert (choose_targets("random", logits, y, generator=gen) != y).all()
    with pytest.raises(ValueError, match="target="):
        choose_targets("given", logits, y)
    with pytest.raises(ValueError, match="shape"):
        choose_targets("given", logits, y, target=torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        choose_targets("given", logits, y, target=torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="valid target rules"):
        choose_targets("nearest", logits, y)


@pytest.mark.parametrize("name", NAMES)
def test_given_targets_are_used_and_required(name, trained_toy):
    model, x, y = trained_toy
    targets = (y + 2) % 4
    attack = create_attack({**STRONG[name], "target_rule": "given"})
    x_adv = attack(model, x, y, target=targets)
    assert torch.equal(attack.last_info["target"], targets)
    assert (predictions(model, x_adv) == targets).float().mean() > 1 / 3
    with pytest.raises(ValueError, match="target"):
        attack(model, x, y)
    with pytest.raises(ValueError, match='target_rule="given"'):
        create_attack(STRONG[name])(model, x, y, target=targets)  # least_likely ignores no target silently


# -- each attack's own rule ------------------------------------------------------------------
def test_fgsm_targeted_is_the_closed_form(trained_toy):
    model, x, y = trained_toy
    targets = (y + 1) % 4
    xr = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(xr), targets, reduction="sum"), xr)
    expected = (x - 0.1 * grad.sign()).clamp(0, 1)
    attack = create_attack({"name": "fgsm_targeted", "eps": 0.1, "target_rule": "given"})
    assert torch.allclose(attack(model, x, y, target=targets), expected)


def test_l2_iterative_first_step_is_the_normalised_gradient(trained_toy):
    model, x, y = trained_toy
    targets = (y + 1) % 4  # the model predicts y everywhere, so every sample moves
    xr = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(xr), targets, reduction="sum"), xr)
    unit = grad / grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    expected = (x - 0.1 * unit).clamp(0, 1)
    attack = create_attack({"name": "l2_iterative_targeted", "max_steps": 1, "target_rule": "given"})
    x_adv = attack(model, x, y, target=targets)
    assert torch.allclose(x_adv, expected, atol=1e-6)
    assert (attack.last_info["steps"] == 1).all()
    assert (attack.last_info["l2_norm"] <= 0.1 + 1e-6).all()


def test_l2_iterative_stops_each_sample_at_its_target(trained_toy):
    model, x, y = trained_toy
    attack = create_attack({"name": "l2_iterative_targeted", "target_rule": "given"})
    # a sample already classified as its target never moves
    assert torch.equal(attack(model, x, y, target=y), x)
    assert (attack.last_info["steps"] == 0).all() and attack.last_info["success"].all()
    # the others stop as soon as they get there: one step less would not have reached it
    x_adv = attack(model, x, y, target=(y + 1) % 4)
    info = attack.last_info
    assert info["success"].all() and (info["steps"] >= 1).all()
    shorter = create_attack({"name": "l2_iterative_targeted", "target_rule": "given", "max_steps": 1})
    for k in range(0, 128, 16):  # the run to steps - 1 misses, the run to steps hits
        n = int(info["steps"][k])
        for steps, hits in ((n - 1, False), (n, True)):
            if steps == 0:
                continue
            shorter.max_steps = steps
            out = shorter(model, x, y, target=info["target"])  # same batch: the same trajectories
            assert bool(shorter.last_info["success"][k]) is hits
            if hits:
                assert torch.equal(out[k], x_adv[k])


def test_lbfgs_unbounded_reaches_most_targets(unbounded_runs):
    _, info = unbounded_runs["lbfgs"]
    assert info["success"].float().mean() >= 0.9


def test_lbfgs_search_over_c_shrinks_the_perturbation(trained_toy):
    """More rounds of the c search keep every earlier candidate, so no sample gets worse."""
    model, x, y = trained_toy
    one = create_attack({"name": "lbfgs", "binary_search_steps": 1})
    one(model, x, y)
    full = create_attack({"name": "lbfgs"})
    full(model, x, y)
    a, b = one.last_info, full.last_info
    assert b["success"].float().mean() >= a["success"].float().mean()
    both = a["success"] & b["success"]
    assert (b["l2_norm"][both] <= a["l2_norm"][both] + 1e-6).all()
    assert b["l2_norm"][both].mean() < 0.95 * a["l2_norm"][both].mean()


def test_lbfgs_is_about_as_small_as_the_l2_iterative_attack(unbounded_runs):
    """L-BFGS does not beat the L2 iterative attack here; it stays within 20% of it.

    Szegedy's objective c ||r||^2 + CE(f(x + r), t) asks, for each c, for the point of
    lowest cross-entropy at its distance; the smallest perturbation reaching the target
    is a different point, because CE is not constant on the decision boundary (it also
    rewards pushing down every other class). So even with an exact c search L-BFGS
    stops short of the minimal perturbation; on this near-linear toy model the L2
    iterative attack (steepest descent, stopped at the first step across the boundary,
    overshoot < alpha = 0.1) lands closer: measured mean L2 ~1.46 (L-BFGS) vs ~1.39
    (iterative), and a per-sample L-BFGS with 20 c rounds x 100 iterations gives the
    same picture. The justified property is that both find perturbations of the same
    size on the same targets.
    """
    _, it = unbounded_runs["l2_iterative_targeted"]
    _, lb = unbounded_runs["lbfgs"]
    both = it["success"] & lb["success"]
    assert both.float().mean() >= 0.9
    ratio = (lb["l2_norm"][both].mean() / it["l2_norm"][both].mean()).item()
    assert ratio < 1.2, ratio
    assert lb["l2_norm"][lb["success"]].mean() < 1.2 * it["l2_norm"][it["success"]].mean()


@pytest.mark.parametrize("name", NAMES)
def test_works_under_autocast(name, trained_toy):
    model, x, y = trained_toy
    spec = {**STRONG[name], "eps": 0.3 if name == "fgsm_targeted" else 2.0}
    attack = create_attack(spec)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x_adv = check_threat_model(attack, model, x[:32], y[:32])
    assert x_adv.dtype == x.dtype
