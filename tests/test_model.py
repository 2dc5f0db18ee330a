"""The model contract: [0, 1] in, logits out, normalisation inside, checkpoints self-contained."""
from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from datamodules import SyntheticDataModule
from lightning_modules import AdversarialClassifier, Normalize
from lightning_modules.objectives import create_objective
from lightning_modules.schedules import lr_factor, ramp
from tests.conftest import ToyNet, toy_data

MNIST_STATS = {"mean": (0.1307,), "std": (0.3081,)}


@pytest.mark.parametrize("backbone,shape", [("mnist_cnn", (1, 28, 28)), ("mnist_small", (1, 28, 28)),
                                            ("cifar_resnet18", (3, 32, 32)), ("preact_resnet18", (3, 32, 32)),
                                            ("resnet18", (3, 32, 32))])
def test_forward_maps_pixels_to_logits(backbone, shape):
    c = shape[0]
    model = AdversarialClassifier(backbone=backbone, num_classes=7, mean=(0.5,) * c, std=(0.25,) * c).eval()
    x = torch.rand(2, *shape)
    logits = model(x)
    assert logits.shape == (2, 7)
    # normalisation is the first layer and really applied: same result as normalising by hand
    assert isinstance(model.net[0], Normalize)
    assert torch.allclose(logits, model.net.backbone((x - 0.5) / 0.25), atol=1e-5)


def test_checkpoint_round_trip_needs_nothing_but_the_path(tmp_path):
    dm = SyntheticDataModule(batch_size=32)
    model = AdversarialClassifier(backbone="mnist_small", num_classes=dm.num_classes, mean=dm.mean, std=dm.std,
                                  objective="adversarial", attack={"name": "pgd", "eps": "0.1", "steps": 2})
    trainer = pl.Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         inference_mode=False, limit_val_batches=1, default_root_dir=tmp_path)
    trainer.fit(model, dm)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)

    torch.load(path, weights_only=True)  # plain types only: safe to load
    loaded = AdversarialClassifier.load_from_checkpoint(path).eval()
    model.eval()
    x = torch.rand(5, *dm.input_shape)
    assert torch.allclose(loaded(x), model(x))
    assert loaded.net.normalize.mean.flatten().tolist() == pytest.approx(list(dm.mean))
    assert loaded.hparams.attack == {"name": "pgd", "eps": "0.1", "steps": 2}
    # usable outside Lightning: a plain module from pixels to logits
    plain = loaded.net
    assert torch.allclose(plain(x), loaded(x))


def test_configuration_errors_name_the_fix():
    with pytest.raises(ValueError, match="unknown backbone 'resnet19'.*did you mean"):
        AdversarialClassifier(backbone="resnet19")
    with pytest.raises(ValueError, match="needs model.attack"):
        AdversarialClassifier(objective="adversarial")
    with pytest.raises(ValueError, match="valid objectives"):
        AdversarialClassifier(objective="trades-ish")
    with pytest.raises(ValueError, match="valid: sgd"):
        AdversarialClassifier(optimizer="lion")


def test_mixed_objective_attacks_the_requested_fraction():
    model = ToyNet().eval()
    x, y = toy_data(10)
    attack = __import__("attacks").create_attack({"name": "fgsm", "eps": 0.2})
    out = create_objective({"name": "mixed", "adversarial_fraction": 0.3})(model, attack, x, y)
    assert out.logits["adv"][0].shape[0] == 3 and out.logits["clean"][0].shape[0] == 7
    # the clean part is really clean, the attacked part really attacked
    assert torch.allclose(out.logits["clean"][0], model(x[3:]))
    assert torch.allclose(out.logits["adv"][0], model(attack(model, x[:3], y[:3])))
    # fraction 0 is clean training, fraction 1 adversarial training
    assert torch.allclose(create_objective({"name": "mixed", "adversarial_fraction": 0.0})(model, attack, x, y).loss, F.cross_entropy(model(x), y))
    assert torch.allclose(create_objective({"name": "mixed", "adversarial_fraction": 1.0})(model, attack, x, y).loss,
                          create_objective("adversarial")(model, attack, x, y).loss)


def test_adversarial_objective_leaves_batchnorm_statistics_to_the_training_forward():
    model = ToyNet().train()
    x, y = toy_data(16)
    attack = __import__("attacks").create_attack({"name": "pgd", "eps": 0.1, "steps": 2})
    create_objective("adversarial")(model, attack, x, y)
    # exactly one BatchNorm update: the one from the training forward on x_adv
    assert model.features[1].num_batches_tracked.item() == 1


def test_schedules():
    assert lr_factor("cosine", 0.0) == pytest.approx(1.0)
    assert lr_factor("cosine", 1.0) == pytest.approx(0.0)
    assert lr_factor("cosine", 0.5) == pytest.approx(0.5)
    assert lr_factor("multistep", 0.8, milestones=(0.5, 0.75)) == pytest.approx(0.01)
    assert lr_factor("constant", 0.05, warmup=0.1) == pytest.approx(0.5)
    assert ramp(0.05, 0.1) == pytest.approx(0.5) and ramp(0.5, 0.1) == 1.0 and ramp(0.0, 0.0) == 1.0


def test_eps_warmup_ramps_the_training_attack(tmp_path):
    dm = SyntheticDataModule(batch_size=32, num_train=320)
    model = AdversarialClassifier(backbone="mnist_small", num_classes=10, mean=dm.mean, std=dm.std,
                                  objective="adversarial", attack={"name": "fgsm", "eps": 0.2}, eps_warmup=0.5)
    seen = []
    original = model.objective.__call__

    class Spy(type(model.objective)):
        def __call__(self, m, attack, x, y):
            seen.append(attack.eps)
            return original(m, attack, x, y)

    model.objective = Spy()
    pl.Trainer(max_steps=8, max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
               inference_mode=False, limit_val_batches=0, default_root_dir=tmp_path).fit(model, dm)
    assert seen[0] == 0.0 and seen[-1] == pytest.approx(0.2)
    assert all(a <= b for a, b in zip(seen, seen[1:]))
    assert model.val_attack.eps == pytest.approx(0.2), "validation must attack at the full eps"
