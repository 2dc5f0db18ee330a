"""TRADES and MART objectives, PGD's KL loss, and fine-tuning from init_weights."""
from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from attacks import create_attack
from datamodules import SyntheticDataModule
from lightning_modules import AdversarialClassifier
from lightning_modules.objectives import create_objective
from tests.conftest import ToyNet, toy_data


def _mart_reference(clean, adv, y, beta):
    """MART's loss written as in the authors' code (argsort for the strongest wrong class)."""
    adv_probs = F.softmax(adv, dim=1)
    top2 = torch.argsort(adv_probs, dim=1)[:, -2:]
    wrong = torch.where(top2[:, -1] == y, top2[:, -2], top2[:, -1])
    loss_adv = F.cross_entropy(adv, y) + F.nll_loss(torch.log(1.0 - adv_probs + 1e-12), wrong)
    nat_probs = F.softmax(clean, dim=1)
    true_probs = nat_probs.gather(1, y[:, None]).squeeze(1)
    kl = (nat_probs * (torch.log(nat_probs + 1e-12) - torch.log(adv_probs + 1e-12))).sum(1)
    return loss_adv + beta * (kl * (1.0 - true_probs)).mean()


class _FixedAttack:
    """Returns a preset x_adv, to test an objective's formula in isolation."""

    loss = "kl"

    def __init__(self, x_adv):
        self.x_adv = x_adv

    def __call__(self, model, x, y):
        return self.x_adv


def test_trades_is_cross_entropy_plus_beta_kl():
    torch.manual_seed(0)
    model = ToyNet().eval()
    x, y = toy_data(16)
    x_adv = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    out = create_objective({"name": "trades", "beta": 3.0})(model, _FixedAttack(x_adv), x, y)
    clean, adv = model(x), model(x_adv)
    kl = (F.softmax(clean, 1) * (F.log_softmax(clean, 1) - F.log_softmax(adv, 1))).sum(1).mean()
    assert kl > 0
    assert torch.allclose(out.loss, F.cross_entropy(clean, y) + 3.0 * kl, atol=1e-5)
    # no perturbation: the robustness term vanishes
    same = create_objective({"name": "trades", "beta": 3.0})(model, _FixedAttack(x), x, y)
    assert torch.allclose(same.loss, F.cross_entropy(clean, y), atol=1e-6)


def test_mart_matches_the_reference_formula():
    torch.manual_seed(1)
    model = ToyNet().eval()
    x, y = toy_data(32)
    x_adv = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    out = create_objective({"name": "mart", "beta": 6.0})(model, _FixedAttack(x_adv), x, y)
    expected = _mart_reference(model(x), model(x_adv), y, 6.0)
    assert torch.allclose(out.loss, expected, atol=1e-4)
    assert set(out.logits) == {"clean", "adv"}


def test_objectives_are_specs_checked_before_training():
    model = AdversarialClassifier(backbone="mnist_small", objective={"name": "trades", "beta": 3.0},
                                  attack={"name": "pgd", "eps": 0.1, "loss": "kl"})
    assert model.objective.beta == 3.0 and model.hparams.objective == {"name": "trades", "beta": 3.0}
    assert create_objective("mixed").adversarial_fraction == 0.5
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['beta'\] for objective 'mixed'; valid options: "
                                         "adversarial_fraction"):
        create_objective({"name": "mixed", "beta": 6})
    with pytest.raises(ValueError, match="unknown objective 'madry'; valid objectives: adversarial, clean, mart"):
        create_objective({"name": "madry"})
    with pytest.raises(ValueError, match="adversarial_fraction must be in"):
        create_objective({"name": "mixed", "adversarial_fraction": 2})


def test_trades_refuses_a_cross_entropy_attack():
    with pytest.raises(ValueError, match="loss: kl"):
        AdversarialClassifier(backbone="mnist_small", objective="trades", attack={"name": "pgd", "eps": 0.1})


def test_pgd_kl_loss_stays_in_the_ball_and_moves_the_prediction(trained_toy):
    model, x, y = trained_toy
    attack = create_attack({"name": "pgd", "eps": 0.3, "steps": 10, "loss": "kl", "seed": 0})
    x_adv = attack(model, x, y)  # its threat model and side effects: test_attack_conformance.py
    with torch.no_grad():
        clean = F.log_softmax(model(x), 1)
        kl_adv = F.kl_div(F.log_softmax(model(x_adv), 1), clean, reduction="sum", log_target=True)
        start = create_attack({"name": "pgd", "eps": 0.3, "steps": 1, "alpha": 0.0, "loss": "kl", "seed": 0})(model, x, y)
        kl_start = F.kl_div(F.log_softmax(model(start), 1), clean, reduction="sum", log_target=True)
    assert kl_adv > 2 * kl_start  # the ascent really increases the divergence from the clean prediction
    with pytest.raises(ValueError, match="random_start"):
        create_attack({"name": "pgd", "loss": "kl", "random_start": False})
    with pytest.raises(ValueError, match="valid: ce, kl"):
        create_attack({"name": "pgd", "loss": "hinge"})


def _fit(model, tmp_path, steps=3):
    trainer = pl.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         inference_mode=False, limit_val_batches=1, default_root_dir=tmp_path)
    trainer.fit(model, SyntheticDataModule(batch_size=16))
    return trainer


@pytest.mark.parametrize("objective,attack", [("trades", {"name": "pgd", "eps": 0.1, "steps": 2, "loss": "kl"}),
                                              ("mart", {"name": "pgd", "eps": 0.1, "steps": 2})])
def test_trades_and_mart_train_through_lightning(tmp_path, objective, attack):
    dm = SyntheticDataModule()
    model = AdversarialClassifier(backbone="mnist_small", num_classes=dm.num_classes, mean=dm.mean, std=dm.std,
                                  objective=objective, attack=attack, lr=0.01)
    before = [p.detach().clone() for p in model.parameters()]
    trainer = _fit(model, tmp_path)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


def test_init_weights_starts_fitting_from_another_checkpoint(tmp_path):
    dm = SyntheticDataModule()
    source = AdversarialClassifier(backbone="mnist_small", num_classes=dm.num_classes, mean=dm.mean, std=dm.std)
    trainer = _fit(source, tmp_path / "source")
    trainer.save_checkpoint(tmp_path / "source.ckpt")
    target = AdversarialClassifier(backbone="mnist_small", num_classes=dm.num_classes, mean=dm.mean, std=dm.std,
                                   init_weights=str(tmp_path / "source.ckpt"))
    target.setup("fit")
    for (name, a), b in zip(source.net.state_dict().items(), target.net.state_dict().values()):
        assert torch.equal(a, b), name
    other = AdversarialClassifier(backbone="mnist_cnn", num_classes=dm.num_classes, mean=dm.mean, std=dm.std,
                                  init_weights=str(tmp_path / "source.ckpt"))
    with pytest.raises(ValueError, match="another architecture"):
        other.setup("fit")
