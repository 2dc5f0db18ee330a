"""Auto-PGD (Croce & Hein 2020): schedule, DLR loss, strength against PGD (invariants: test_attack_conformance.py)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import attacks.apgd  # noqa: F401  (registers apgd_ce and apgd_t)
from attacks import create_attack
from attacks.apgd import APGD, APGDTargeted, apgd_checkpoints, dlr_loss, dlr_targeted_loss
from tests.conftest import toy_data

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def accuracy(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


# radii at which the trained toy model is partly, not wholly, robust
EPS = {"linf": 0.2, "l2": 1.5}
N_ITER = 10  # short runs keep the tests fast


def build(spec, **overrides):
    return create_attack({"eps": EPS[spec.get("norm", "linf")], "n_iter": N_ITER, **spec, **overrides})


def ids(spec):
    return "-".join(f"{v}" for v in spec.values())


# -- the contract -------------------------------------------------------------------------


def test_registry_names_and_classes():
    assert isinstance(create_attack("apgd_ce"), APGD)
    assert isinstance(create_attack("apgd-t"), APGDTargeted)
    attack = create_attack({"name": "apgd_ce", "eps": "8/255"})
    assert attack.eps == pytest.approx(8 / 255)
    assert (attack.norm, attack.n_iter, attack.n_restarts, attack.loss) == ("linf", 100, 1, "ce")
    assert create_attack("apgd_t").n_target_classes == 9
    for name in ("apgd_ce", "apgd_t"):
        attack = create_attack({"name": name, "norm": "l2", "eps": 0.5, "seed": 1})
        assert create_attack(attack.config()).config() == attack.config()


def test_unknown_loss_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown loss 'cw'; valid losses: ce, dlr"):
        create_attack({"name": "apgd_ce", "loss": "cw"})
    with pytest.raises(ValueError, match="unknown norm"):
        create_attack({"name": "apgd_ce", "norm": "l1"})
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        create_attack({"name": "apgd_t", "eps": 8})


def test_dlr_needs_enough_classes():
    x, y = toy_data(16, num_classes=3)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    with pytest.raises(ValueError, match="at least 4 classes"):
        create_attack({"name": "apgd_t", "n_iter": 2})(model, x, y)
    with pytest.raises(ValueError, match="at least 3 classes"):
        dlr_loss(torch.randn(4, 2), torch.zeros(4, dtype=torch.long))


# -- the step-size schedule ---------------------------------------------------------------


def schedule_by_recurrence(n_iter):
    """The paper's recurrence in integer hundredths: p_0 = 0, p_1 = 22,
    p_{j+1} = p_j + max(p_j - p_{j-1} - 3, 6); w_j = ceil(p_j * n_iter / 100)."""
    p = [0, 22]
    while p[-1] + max(p[-1] - p[-2] - 3, 6) <= 100:
        p.append(p[-1] + max(p[-1] - p[-2] - 3, 6))
    return sorted({-(-q * n_iter // 100) for q in p})


def test_checkpoints_follow_the_recurrence():
    assert schedule_by_recurrence(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]
    assert apgd_checkpoints(100) == schedule_by_recurrence(100)
    assert create_attack("apgd_ce").checkpoints() == schedule_by_recurrence(100)
    for n_iter in (1, 5, 10, 37, 250, 1000):
        assert apgd_checkpoints(n_iter) == schedule_by_recurrence(n_iter), n_iter
        assert apgd_checkpoints(n_iter) == sorted({math.ceil(p * n_iter / 100 - 1e-9) for p in
                                                   (0, 22, 41, 57, 70, 80, 87, 93, 99)})


# -- the DLR loss --------------------------------------------------------------------------


def test_dlr_is_invariant_to_shift_and_positive_scale():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn((64, 10), generator=gen, dtype=torch.float64)
    y = torch.randint(0, 10, (64,), generator=gen)
    t = (y + 1 + torch.randint(0, 9, (64,), generator=gen)) % 10
    shift = 5.0 * torch.randn((64, 1), generator=gen, dtype=torch.float64)
    # the losses are computed in float32, hence the tolerance
    for scale in (0.1, 3.0, 250.0):
        for loss in (lambda a: dlr_loss(a, y), lambda a: dlr_targeted_loss(a, y, t)):
            assert torch.allclose(loss(z), loss(scale * z + shift), rtol=1e-3, atol=1e-4)
            assert torch.allclose(loss(z), loss(scale * z), rtol=1e-5, atol=1e-6)


def test_dlr_values_match_the_definition():
    z = torch.tensor([[4.0, 1.0, 3.0, 0.0], [1.0, 5.0, 2.0, -1.0]])
    y = torch.tensor([0, 0])
    # sample 0: correct, z_y - max other = 1, z_pi1 - z_pi3 = 3; sample 1: wrong, 1 - 5 = -4, 5 - 1 = 4
    assert torch.allclose(dlr_loss(z, y), torch.tensor([-1 / 3, 1.0]))
    t = torch.tensor([2, 3])
    # targeted denominators: 4 - (1 + 0)/2 = 3.5 and 5 - (1 - 1)/2 = 5
    assert torch.allclose(dlr_targeted_loss(z, y, t), torch.tensor([-1 / 3.5, -2 / 5]))


# -- strength -------------------------------------------------------------------------------


def test_apgd_ce_is_at_least_as_strong_as_pgd(trained_toy):
    model, x, y = trained_toy
    eps, steps = 0.2, 20
    pgd = accuracy(model, create_attack({"name": "pgd", "eps": eps, "steps": steps, "seed": 0})(model, x, y), y)
    apgd = create_attack({"name": "apgd_ce", "eps": eps, "n_iter": steps, "seed": 0})
    x_adv = apgd(model, x, y)
    robust = accuracy(model, x_adv, y)
    assert 0 < pgd < accuracy(model, x, y), "choose eps so PGD is neither useless nor perfect"
    assert robust <= pgd, (robust, pgd)
    # per-sample report: a fooled flag means the returned point is misclassified
    info = apgd.last_info
    assert info["fooled"].shape == info["loss"].shape == y.shape
    with torch.no_grad():
        wrong = model(x_adv).argmax(1) != y
    assert torch.equal(info["fooled"], wrong)
    assert (info["loss"] > F.cross_entropy(model(x), y, reduction="none").detach() - 1e-6)[~wrong].all()


def test_apgd_t_fools_some_points(trained_toy):
    model, x, y = trained_toy
    clean = accuracy(model, x, y)
    attack = create_attack({"name": "apgd_t", "eps": 0.2, "n_iter": 20, "seed": 0})
    x_adv = attack(model, x, y)
    robust = accuracy(model, x_adv, y)
    assert robust <= clean and robust < clean, (robust, clean)
    targets = attack.last_info["target"]
    fooled = attack.last_info["fooled"]
    assert ((targets >= 0) & (targets < 4) & (targets != y))[fooled].all()
    with torch.no_grad():
        logits = model(x)
    # targets are classes other than y, capped at num_classes - 1 = 3
    order = APGDTargeted.target_classes(logits, y, 9)
    assert order.shape == (len(y), 3) and not (order == y[:, None]).any()
    assert (logits.gather(1, order).diff(dim=1) <= 0).all()


@pytest.mark.parametrize("spec", [{"name": "apgd_ce", "norm": "linf"}, {"name": "apgd_t", "norm": "l2"}], ids=ids)
def test_early_stop_returns_the_same_points_with_fewer_model_rows(spec, trained_toy):
    """Samples are independent in eval mode, so dropping the fooled ones changes nothing else:
    the output is bitwise that of the full run, and the model sees fewer rows."""
    from benchmarks.autoattack_fast import CountRows

    model, x, y = trained_toy
    outputs, rows = [], []
    for early_stop in (False, True):
        counter = CountRows(model).eval()
        outputs.append(build(spec, seed=3, early_stop=early_stop)(counter, x, y))
        rows.append(sum(counter.rows.values()))
    assert torch.equal(outputs[0], outputs[1])
    assert accuracy(model, outputs[1], y) < accuracy(model, x, y), "some points must fall for the test to mean anything"
    assert rows[1] < rows[0]


def test_early_stop_needs_eval_mode():
    with pytest.raises(ValueError, match="early_stop needs bn_mode eval"):
        create_attack({"name": "apgd_ce", "early_stop": True, "bn_mode": "train"})
