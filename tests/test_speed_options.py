"""Speed options that must not change what is computed: bf16-mixed training with attacks whose
perturbation, projection and losses stay float32; channels_last; torch.compile."""
from __future__ import annotations

import pytest
import torch

from attacks import create_attack
from experiments.cli import main
from lightning_modules import AdversarialClassifier
from lightning_modules.objectives import create_objective
from tests.conftest import toy_data
from tests.invariants import check_threat_model, with_boundary_pixels
from tests.test_cli import SHORT, SWEEP, SYNTHETIC, csv_logger, evaluations
from tests.test_fault_tolerance import weights
from tests.test_precision import DtypeProbe

EPS = 0.1
ATTACKS = [{"name": "pgd", "steps": 5}, {"name": "fgsm_rs"}, {"name": "pgd", "loss": "kl", "steps": 3},
           {"name": "apgd_ce", "n_iter": 5}, {"name": "apgd_t", "n_iter": 3, "n_target_classes": 2}]


def _model(**options) -> AdversarialClassifier:
    torch.manual_seed(0)
    return AdversarialClassifier(backbone="preact_resnet18", num_classes=4, mean=(0.5,), std=(0.25,),
                                 **options).eval()


@pytest.fixture(scope="module")
def data():
    x, y = toy_data(n=24, size=16)
    return with_boundary_pixels(x), y


@pytest.mark.parametrize("spec", ATTACKS, ids=lambda s: s["name"] + s.get("loss", ""))
def test_attacks_under_bf16_autocast_keep_a_float32_threat_model(spec, data, one_torch_thread):
    """What a bf16-mixed training or validation step does to its attack: the model runs in bf16,
    the returned perturbation is float32 (not rounded to bf16) and inside the eps-ball and [0, 1]."""
    x, y = data
    probe = DtypeProbe(_model())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x_adv = check_threat_model(create_attack({**spec, "eps": EPS, "seed": 0}), probe, x, y)
    assert probe.seen == {torch.bfloat16}, "the model did not run under autocast"
    assert x_adv.dtype == torch.float32 and (x_adv != x).any()
    assert (x_adv != x_adv.bfloat16().float()).any(), "the perturbation was computed in bf16"


@pytest.mark.parametrize("objective,attack", [("adversarial", {"name": "fgsm_rs"}), ("mixed", {"name": "pgd"}),
                                              ("trades", {"name": "pgd", "loss": "kl"}), ("mart", {"name": "pgd"})])
def test_objective_losses_are_float32_under_bf16_autocast(objective, attack, data, one_torch_thread):
    x, y = data
    model = _model().train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = create_objective(objective)(model, create_attack({**attack, "eps": EPS, "steps": 2} if attack["name"] == "pgd"
                                                               else {**attack, "eps": EPS}), x, y)
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)


def test_bf16_mixed_fit_end_to_end(tmp_path):
    """`--trainer.precision bf16-mixed`: FGSM-RS training, a PGD validation attack and the sweep run;
    the weights stay float32 and the sweep is scored."""
    main(["fit", *SYNTHETIC, *SHORT, *SWEEP, *csv_logger(tmp_path), "--trainer.precision", "bf16-mixed",
          "--model.backbone", "mnist_small", "--model.objective", "adversarial",
          "--model.attack", '{"name": "fgsm_rs", "eps": 0.1}', "--model.val_attack", '{"name": "pgd", "eps": 0.1, "steps": 2}'])
    (result,) = evaluations(tmp_path)
    assert result["num_samples"] == 96 and result["rows"]
    state = weights(next(tmp_path.rglob("*.ckpt")))
    assert all(v.dtype == torch.float32 for k, v in state.items() if v.is_floating_point())


def test_channels_last_is_a_layout_only(data, one_torch_thread):
    x, y = data
    plain, fast = _model(), _model(channels_last=True)
    conv = fast.net.backbone.stages[0][0].conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert fast.state_dict().keys() == plain.state_dict().keys()
    with torch.no_grad():
        torch.testing.assert_close(fast(x), plain(x), rtol=1e-4, atol=1e-4)
    x_adv = check_threat_model(create_attack({"name": "pgd", "eps": EPS, "steps": 3, "seed": 0}), fast, x, y)
    assert x_adv.dtype == torch.float32


@pytest.mark.slow
def test_compiled_model_computes_the_same_and_keeps_checkpoint_keys(one_torch_thread):
    """torch.compile (a few tens of seconds on CPU): same logits, same attack, same state_dict keys."""
    x, y = toy_data(n=24, size=28)
    plain = AdversarialClassifier(backbone="mnist_small", num_classes=4, mean=(0.5,), std=(0.25,)).eval()
    compiled = AdversarialClassifier(backbone="mnist_small", num_classes=4, mean=(0.5,), std=(0.25,), compile=True)
    compiled.load_state_dict(plain.state_dict())
    compiled.eval()
    assert compiled.state_dict().keys() == plain.state_dict().keys()
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), plain(x), rtol=1e-4, atol=1e-5)
    attack = {"name": "pgd", "eps": EPS, "steps": 3, "seed": 0}
    x_adv = check_threat_model(create_attack(attack), compiled, x, y)
    torch.testing.assert_close(x_adv, create_attack(attack)(plain, x, y), rtol=0, atol=1e-5)
