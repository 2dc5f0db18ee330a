"""Blur-preprocessing defence: filters, the classifier layer, BPDA, the report's score, the sweep."""
from __future__ import annotations

import json
import math
import time

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import wandb
import yaml
from pytorch_lightning.loggers import CSVLogger
from torch import nn

from attacks import Attack, attack_mode, create_attack
from attacks.bpda import straight_through
from callbacks import PerturbationScore, RobustnessEvaluation, perturbation_score
from callbacks.perturbation_score import score_from_counts
from datamodules import MNISTDataModule, SyntheticDataModule
from experiments.cli import main
from lightning_modules import AdversarialClassifier, Normalize
from lightning_modules.defences.blur import GaussianBlur, MedianBlur, create_preprocessing
from tests.conftest import MNIST_PRESENT, TWO_BATCHES, REPO, SHARED_DATASETS, needs_mnist, toy_data
from tests.invariants import check_threat_model, with_boundary_pixels
from tests.wandb_files import read_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MEDIAN = {"name": "median", "window": 3}
GAUSSIAN = {"name": "gaussian", "sigma": 1.0}


def classifier(preprocessing=None, **kwargs):
    return AdversarialClassifier(backbone="mnist_small", num_classes=10, mean=(0.5,), std=(0.25,),
                                 preprocessing=preprocessing, optimizer="adam", lr=2e-3, weight_decay=0.0, **kwargs)


def quiet_trainer(root, **kwargs):
    return pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      inference_mode=False, default_root_dir=root, **kwargs)


# -- the filters ------------------------------------------------------------------------
def test_gaussian_matches_the_reports_kernel_keeps_range_and_smooths():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 20, 20)
    blur = GaussianBlur(1.0)
    out = blur(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert out.var() < 0.2 * x.var(), "white noise must lose most of its variance"
    # the report's 2-D kernel K(x, y) = exp(-(x^2 + y^2) / (2 sigma^2)) / (2 pi sigma^2), normalised, reflect padding
    r = torch.arange(-3, 4, dtype=torch.float32)
    k2d = torch.exp(-(r.view(-1, 1) ** 2 + r.view(1, -1) ** 2) / 2)
    reference = F.conv2d(F.pad(x, (3, 3, 3, 3), mode="reflect"), (k2d / k2d.sum()).expand(3, 1, 7, 7), groups=3)
    assert blur.kernel_size == 7 and torch.allclose(out, reference, atol=1e-6)
    # per channel: an empty channel stays empty next to noisy ones; a flat image stays flat; sigma 0 is the identity
    x[:, 1] = 0
    assert blur(x)[:, 1].abs().max() == 0
    assert torch.allclose(blur(torch.full((1, 1, 9, 9), 0.7)), torch.full((1, 1, 9, 9), 0.7))
    assert torch.equal(GaussianBlur(0)(x), x)


def median_reference(x: torch.Tensor, window: int) -> torch.Tensor:
    """Pixel by pixel: the median of each reflect-padded window."""
    pad = window // 2
    padded = F.pad(x, (pad,) * 4, mode="reflect")
    out = torch.empty_like(x)
    for i in range(x.shape[2]):
        for j in range(x.shape[3]):
            out[:, :, i, j] = padded[:, :, i:i + window, j:j + window].flatten(2).median(dim=2).values
    return out


def test_median_matches_a_pixelwise_reference_and_removes_salt_and_pepper():
    torch.manual_seed(0)
    x = torch.rand(2, 2, 9, 11)
    for window in (3, 5):
        assert torch.equal(MedianBlur(window)(x), median_reference(x, window))
    # an edge with isolated salt-and-pepper pixels comes back exactly (the report: the median keeps edges);
    # a Gaussian blur spreads the impulses and the edge
    edge = torch.full((1, 1, 16, 16), 0.2)
    edge[..., 8:] = 0.8
    noisy = edge.clone()
    salt_rows, salt_cols, pepper_rows, pepper_cols = [3, 7, 11], [2, 5, 10, 13], [5, 9, 13], [3, 12]
    noisy[0, 0, torch.tensor(salt_rows).view(-1, 1), torch.tensor(salt_cols)] = 1.0
    noisy[0, 0, torch.tensor(pepper_rows).view(-1, 1), torch.tensor(pepper_cols)] = 0.0
    assert (noisy != edge).sum() == 18
    assert torch.equal(MedianBlur(3)(noisy), edge)
    assert (GaussianBlur(1.0)(noisy) - edge).abs().max() > 0.1 and (GaussianBlur(1.0)(edge) - edge).abs().max() > 0.1


def test_median_exact_gradient_and_straight_through_switch():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 10, 10, requires_grad=True)
    median = MedianBlur(3)
    (exact,) = torch.autograd.grad(median(x).sum(), x)
    # each output pixel passes its gradient to the one input pixel it selected
    assert exact.sum() == x.numel() and torch.equal(exact, exact.round()) and (exact == 0).any()
    median.straight_through = True
    out = median(x)
    (identity,) = torch.autograd.grad(out.sum(), x)
    assert torch.equal(identity, torch.ones_like(x)), "BPDA: the backward pass is the identity"
    assert torch.equal(out, MedianBlur(3)(x)), "BPDA changes gradients only, never the forward pass"


def test_gaussian_is_differentiable():
    x = torch.rand(1, 2, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(GaussianBlur(0.8), (x,))


def test_filter_options_are_checked_with_the_fix():
    with pytest.raises(ValueError, match="valid preprocessing layers: gaussian, median"):
        create_preprocessing({"name": "bilateral"})
    with pytest.raises(ValueError, match="valid options: window"):
        create_preprocessing({"name": "median", "sigma": 1})
    with pytest.raises(ValueError, match="odd"):
        MedianBlur(4)
    with pytest.raises(ValueError, match="sigma must be >= 0"):
        GaussianBlur(-1)
    with pytest.raises(ValueError, match="smaller filter"):
        MedianBlur(9)(torch.rand(1, 1, 4, 4))
    assert create_preprocessing(None) is None
    assert create_preprocessing({"name": "gaussian", "sigma": "3/2"}).sigma == 1.5


# -- the classifier layer ---------------------------------------------------------------
def test_without_preprocessing_the_model_is_as_before_and_state_dicts_are_interchangeable():
    plain, blurred = classifier(), classifier(MEDIAN)
    assert [name for name, _ in plain.net.named_children()] == ["normalize", "backbone"]
    assert [name for name, _ in blurred.net.named_children()] == ["preprocessing", "normalize", "backbone"]
    assert isinstance(blurred.net[0], MedianBlur) and isinstance(blurred.net[1], Normalize)
    # the kernel is not persistent: the same keys, so weights move between the two (and old checkpoints load)
    assert plain.state_dict().keys() == blurred.state_dict().keys()
    blurred.load_state_dict(plain.state_dict())
    assert plain.hparams.preprocessing is None and blurred.hparams.preprocessing == MEDIAN


class CallRecorder:
    """Forward hook: the train/eval mode the preprocessing layer ran in, per call."""

    def __init__(self, module: nn.Module):
        self.modes: list[bool] = []
        module.register_forward_hook(lambda m, inputs, output: self.modes.append(m.training))


@pytest.mark.parametrize("spec", [GAUSSIAN, MEDIAN], ids=["gaussian", "median"])
def test_preprocessing_runs_in_training_evaluation_and_attacks(spec, tmp_path):
    dm = SyntheticDataModule(num_train=128, num_test=32, batch_size=32, val_size=32)
    model = classifier(spec, val_attack={"name": "pgd", "eps": 0.1, "steps": 2})
    recorder = CallRecorder(model.net.preprocessing)
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0)
    trainer.fit(model, dm)
    assert True in recorder.modes and False in recorder.modes, "the layer must run in training and in evaluation"
    # it is really applied: logits equal backbone(normalize(blur(x))), in both modes
    x = torch.rand(4, 1, 28, 28)
    blur = create_preprocessing(spec)
    for train in (True, False):
        model.train(train)
        with torch.no_grad():
            assert torch.allclose(model(x), model.net.backbone(model.net.normalize(blur(x))), atol=1e-6)
    # and attacks differentiate through it
    recorder.modes.clear()
    create_attack({"name": "pgd", "eps": 0.1, "steps": 3})(model, x, torch.zeros(4, dtype=torch.long))
    assert len(recorder.modes) >= 3


def test_checkpoint_round_trip_with_preprocessing(tmp_path):
    dm = SyntheticDataModule(num_train=128, num_test=32, batch_size=32, val_size=32)
    model = classifier(MEDIAN)
    trainer = quiet_trainer(tmp_path, max_steps=2, limit_val_batches=0)
    trainer.fit(model, dm)
    path = tmp_path / "blur.ckpt"
    trainer.save_checkpoint(path)
    torch.load(path, weights_only=True)  # plain types only
    loaded = AdversarialClassifier.load_from_checkpoint(path).eval()
    assert isinstance(loaded.net.preprocessing, MedianBlur) and loaded.net.preprocessing.window == 3
    assert loaded.hparams.preprocessing == MEDIAN
    x = torch.rand(5, 1, 28, 28)
    assert torch.allclose(loaded(x), model.eval()(x))


# -- BPDA -------------------------------------------------------------------------------
class FlagRecorder(nn.Module):
    """In front of a model: records the median layers' straight_through flags at each forward; can fail."""

    def __init__(self, model: nn.Module, fail_after: int | None = None):
        super().__init__()
        self.model, self.fail_after, self.flags = model, fail_after, []

    def forward(self, x):
        self.flags.append(tuple(m.straight_through for m in self.model.modules() if isinstance(m, MedianBlur)))
        if self.fail_after is not None and len(self.flags) > self.fail_after:
            raise RuntimeError("boom")
        return self.model(x)


def two_medians() -> nn.Module:
    """A median model with a second median layer whose switch starts True (it must come back True)."""
    model = classifier(MEDIAN).eval()
    second = MedianBlur(3)
    second.straight_through = True
    return nn.Sequential(second, model)


def test_bpda_switches_straight_through_on_for_the_attack_only_and_restores_on_error():
    x, y = torch.rand(4, 1, 28, 28), torch.arange(4)
    net = FlagRecorder(two_medians())
    attack = create_attack({"name": "bpda", "attack": {"name": "pgd", "steps": 3}, "eps": 0.1, "seed": 0})
    attack(net, x, y)
    assert net.flags and all(flags == (True, True) for flags in net.flags)
    assert [m.straight_through for m in net.modules() if isinstance(m, MedianBlur)] == [True, False]
    failing = FlagRecorder(two_medians(), fail_after=1)
    with pytest.raises(RuntimeError, match="boom"):
        attack(failing, x, y)
    assert [m.straight_through for m in failing.modules() if isinstance(m, MedianBlur)] == [True, False]
    with straight_through(nn.Linear(2, 2)) as switched:
        assert switched == 0


def test_bpda_gradients_are_dense_where_the_exact_median_gradient_is_sparse():
    model = classifier(MEDIAN).eval()
    x, y = torch.rand(2, 1, 28, 28), torch.tensor([3, 7])
    exact = Attack.input_gradient(model, x, y)
    with straight_through(model):
        bpda = Attack.input_gradient(model, x, y)
    assert (exact == 0).float().mean() > 0.3 and (bpda == 0).float().mean() < 0.05
    assert [m.straight_through for m in model.modules() if isinstance(m, MedianBlur)] == [False]


def test_bpda_threat_model_and_eps_follow_the_sweep():
    torch.manual_seed(0)
    x, y = toy_data(32, size=28)
    x = with_boundary_pixels(x)
    model = classifier(MEDIAN).eval()
    make = lambda eps: create_attack({"name": "bpda", "attack": {"name": "pgd", "steps": 5}, "eps": eps, "seed": 0})
    for eps in (0.05, 0.3):
        check_threat_model(make(eps), model, x, y)
    check_threat_model(create_attack({"name": "bpda", "attack": {"name": "pgd", "norm": "l2", "steps": 5},
                                      "eps": 1.0}), model, x, y)
    # eps set on the wrapper (RobustnessEvaluation, eps_warmup) is the inner attack's eps, and the config rebuilds it
    attack = make(0.1)
    attack.eps = 0.2
    assert attack.inner.eps == 0.2 and attack.label == "bpda(pgd)"
    assert create_attack(attack.config()).config() == attack.config()
    assert create_attack({"name": "bpda", "attack": {"name": "l2_iterative_targeted"}}).eps == math.inf
    with pytest.raises(ValueError, match="give eps on bpda itself"):
        create_attack({"name": "bpda", "attack": {"name": "pgd", "eps": 0.1}})
    RobustnessEvaluation(attacks=[{"name": "bpda", "attack": {"name": "pgd", "steps": 5}}], epsilons=[0.1])


# -- the report's score -----------------------------------------------------------------
def test_perturbation_score_on_a_tiny_trained_model(trained_toy):
    model, x, y = trained_toy
    y = y.clone()
    y[:8] = (y[:8] + 1) % 4  # eight wrong labels: counted in accuracy, never attacked
    batches = [(x[:50], y[:50]), (x[50:], y[50:])]
    result = perturbation_score(model, batches, {"name": "l2_iterative_targeted", "max_steps": 60}, progress=False)
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    assert result["num_samples"] == 128 and result["accuracy"] == pytest.approx(correct.float().mean().item())
    assert result["attacked"] == correct.sum() < 128
    # the mean is over the attacked points that reached their target, in one run over all of them
    attack = create_attack({"name": "l2_iterative_targeted", "max_steps": 60})
    attack(model, x[correct], y[correct])
    success, norms = attack.last_info["success"], attack.last_info["l2_norm"]
    assert result["successful"] == success.sum() > 0
    assert result["mean_l2"] == pytest.approx(norms[success].mean().item(), rel=1e-4)
    assert result["score"] == pytest.approx(result["accuracy"] * result["mean_l2"])
    assert score_from_counts({"num_samples": 10, "clean_correct": 5, "attacked": 5, "successful": 0,
                              "l2_sum": 0.0})["score"] is None


def test_perturbation_score_callback_writes_json_and_logs(tmp_path):
    dm = SyntheticDataModule(num_train=256, num_test=64, batch_size=32, val_size=32, noise=0.3)
    model = classifier(GAUSSIAN)
    callback = PerturbationScore(attack={"name": "l2_iterative_targeted", "max_steps": 30}, num_samples=40,
                                 batch_size=16, run_on=("fit_end",))
    pl.Trainer(max_steps=30, logger=CSVLogger(tmp_path, name="run"), callbacks=[callback], inference_mode=False,
               enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
               limit_val_batches=0).fit(model, dm)
    (result,) = json.loads((tmp_path / "run" / "version_0" / "perturbation_score.json").read_text())["evaluations"]
    assert result["num_samples"] == 40 and result["stage"] == "fit_end" and result["attack"]["max_steps"] == 30
    assert result["model"]["preprocessing"] == GAUSSIAN and result["accuracy"] > 0.5
    assert result["mean_l2"] > 0 and result["score"] == pytest.approx(result["accuracy"] * result["mean_l2"])
    logged = (tmp_path / "run" / "version_0" / "metrics.csv").read_text()
    assert "perturbation_score/test/score" in logged
    with pytest.raises(ValueError, match="valid attacks"):
        PerturbationScore(attack="l3_attack")


def test_blur_sweep_runs_each_setting_through_advtrain(tmp_path, monkeypatch):
    """experiments/sweeps/blur_filter.yaml: each setting is one `advtrain fit` of experiments/blur_sweep.yaml that
    leaves its config, its perturbation_score.json and a W&B run holding the score the sweep ranks by."""
    sweep = yaml.safe_load((REPO / "experiments" / "sweeps" / "blur_filter.yaml").read_text())
    settings = [yaml.safe_load(v) for v in sweep["parameters"]["model.preprocessing"]["values"]]
    assert settings[0] is None and GAUSSIAN in settings and MEDIAN in settings  # null: the undefended baseline
    assert all(create_preprocessing(s) is not None for s in settings[1:])
    assert sweep["metric"] == {"name": "perturbation_score/test/score", "goal": "maximize"}
    assert sweep["command"][1:5] == ["advtrain", "fit", "--config", "experiments/blur_sweep.yaml"]
    for var in ("WANDB_API_KEY", "WANDB_MODE"):  # W&B offline, as without credentials
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))
    data = ["--data", "datamodules.SyntheticDataModule", "--data.num_train", "256", "--data.num_test", "32",
            "--data.batch_size", "32", "--data.val_size", "32", "--data.noise", "0.3"]
    for setting in (None, GAUSSIAN, MEDIAN):
        main(["fit", "--config", str(REPO / "experiments" / "blur_sweep.yaml"), *data,
              "--model.preprocessing", json.dumps(setting), "--trainer.max_steps", "15",
              "--trainer.callbacks.attack", '{"name": "l2_iterative_targeted", "max_steps": 30}',
              "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false"])
        wandb.finish()  # each setting is its own process in the sweep; here, close the run
    wandb.teardown()  # wait until the W&B service has written every run file
    runs = {}
    for offline in (tmp_path / "wandb").glob("offline-run-*"):
        run = read_run(offline)
        folder = tmp_path / "advtrain" / offline.name.rsplit("-", 1)[1]  # offline-run-<time>-<run id>
        (result,) = json.loads((folder / "perturbation_score.json").read_text())["evaluations"]
        assert (folder / "config.yaml").exists() and result["num_samples"] == 32
        assert run.summary.get(sweep["metric"]["name"]) == pytest.approx(result["score"])
        runs[run.name] = result
    assert sorted(runs) == ["blur_sweep-clean-gaussian1.0-s0", "blur_sweep-clean-median3-s0", "blur_sweep-clean-s0"]
    assert sorted(json.dumps(r["model"]["preprocessing"]) for r in runs.values()) == sorted(
        json.dumps(s) for s in (None, GAUSSIAN, MEDIAN))
    assert any(r["score"] is not None for r in runs.values()), "the sweep has a best setting to pick"


def test_blur_yaml_instantiates_through_the_cli(tmp_path):
    """experiments/blur_median.yaml: two batches, then the robustness sweep labels bpda and the score is written."""
    args = ["fit", "--config", str(REPO / "experiments" / "blur_median.yaml"), *TWO_BATCHES, "--trainer.logger", "false",
            "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false"]
    if MNIST_PRESENT:
        args += ["--data.data_dir", str(SHARED_DATASETS), "--data.download", "false", "--data.test_size", "8"]
    else:
        args += ["--data", "datamodules.SyntheticDataModule", "--data.num_test", "8", "--data.num_train", "64",
                 "--data.batch_size", "16", "--data.val_size", "16"]
    main(args)
    strong, sweep = json.loads((tmp_path / "robustness.json").read_text())["evaluations"]
    assert all(a["label"].startswith("bpda(") for a in strong["attacks"])  # APGD-CE/-T through BPDA
    assert any(a["label"].startswith("bpda(") for a in sweep["attacks"])
    (score,) = json.loads((tmp_path / "perturbation_score.json").read_text())["evaluations"]
    assert score["model"]["preprocessing"] == MEDIAN and score["num_samples"] == 8


# -- real MNIST -------------------------------------------------------------------------
def sparse_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, pixels: int, bpda: bool) -> torch.Tensor:
    """Fixed-budget L0 attack: set the ``pixels`` pixels of largest first-order loss gain to 0 or 1."""
    with attack_mode(model), torch.enable_grad():
        if bpda:
            with straight_through(model):
                grad = Attack.input_gradient(model, x, y)
        else:
            grad = Attack.input_gradient(model, x, y)
    grad, flat = grad.flatten(1), x.flatten(1).clone()
    extreme = (grad > 0).to(x.dtype)  # 1 where raising the pixel raises the loss, else 0
    chosen = ((extreme - flat) * grad).topk(pixels, dim=1).indices
    return flat.scatter(1, chosen, extreme.gather(1, chosen)).view_as(x)


@pytest.mark.slow
@needs_mnist
def test_median_filter_resists_a_sparse_attack_on_real_mnist(tmp_path):
    """A median filter removes isolated pixels: under a 20-pixel white-box L0 attack (worst case over exact and
    BPDA gradients) a median-3 model keeps far more accuracy than the same net trained without it."""
    started = time.time()
    dm = MNISTDataModule(data_dir=str(SHARED_DATASETS), download=False, batch_size=128, train_size=20000,
                         val_size=1000, test_size=500)
    x, y = map(torch.stack, zip(*[dm.dataset("test")[i] for i in range(500)]))
    robust = {}
    for name, spec in (("none", None), ("median", MEDIAN)):
        pl.seed_everything(0, verbose=False)
        model = AdversarialClassifier(backbone="mnist_small", mean=dm.mean, std=dm.std, preprocessing=spec,
                                      optimizer="adam", lr=2e-3, weight_decay=0.0)
        quiet_trainer(tmp_path, max_steps=300, limit_val_batches=0).fit(model, dm)
        model.eval()
        with torch.no_grad():
            clean = (model(x).argmax(1) == y).float().mean().item()
            held = torch.ones_like(y, dtype=torch.bool)
            for bpda in (False, True):
                held &= model(sparse_attack(model, x, y, 20, bpda)).argmax(1) == y
        robust[name] = (clean, held.float().mean().item())
    print(f"(clean, 20-pixel L0 robust) accuracy: { {k: tuple(round(v, 3) for v in r) for k, r in robust.items()} }, "
          f"{time.time() - started:.0f} s")
    assert robust["none"][0] > 0.9 and robust["median"][0] > 0.9
    assert robust["median"][1] > robust["none"][1] + 0.1, robust
