"""The epsilon-sweep callback: worst case per sample, sanity checks, results never lost."""
from __future__ import annotations

import json
import logging

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger

from callbacks import RobustnessEvaluation
from callbacks.report import masking_warnings, sanity_warnings
from callbacks.sweep import sweep_batch
from datamodules import SyntheticDataModule
from lightning_modules import AdversarialClassifier

ATTACKS = [{"name": "pgd", "steps": 5}, {"name": "fgsm"}]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A classifier fitted on synthetic data (clean accuracy well above chance)."""
    root = tmp_path_factory.mktemp("fit")
    dm = SyntheticDataModule(batch_size=64, noise=0.3)
    model = AdversarialClassifier(backbone="mnist_small", num_classes=10, mean=dm.mean, std=dm.std,
                                  optimizer="adam", lr=1e-3, weight_decay=0.0)
    pl.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
               default_root_dir=root).fit(model, dm)
    return model.eval(), dm


def test_sweep_batch_worst_case_and_clean_consistency(fitted):
    model, dm = fitted
    x, y = next(iter(dm.test_dataloader()))
    sweep = sweep_batch(model, x, y, ATTACKS, [0.0, 0.05, 0.2], seed=0)
    clean, robust = sweep.clean_correct, sweep.robust
    assert torch.equal(robust[:, 0], clean.expand(2, -1)), "eps = 0 must equal clean correctness"
    assert not (robust & ~clean).any(), "a sample wrong on clean input cannot be robust"
    assert (robust[0, 2].sum() < robust[0, 1].sum()) or robust[0, 1].sum() == 0


def run_test_with(callback, dm, model, root, devices=1):
    trainer = pl.Trainer(logger=CSVLogger(root, name="run"), callbacks=[callback], inference_mode=False,
                         enable_progress_bar=False, default_root_dir=root, devices=devices)
    trainer.test(model, dm)
    return trainer


def test_callback_counts_writes_json_and_keeps_earlier_results(fitted, tmp_path):
    model, dm = fitted
    callback = RobustnessEvaluation(attacks=ATTACKS, epsilons=["1/255", 0.05, 0.2], num_samples=100, batch_size=32)
    trainer = run_test_with(callback, dm, model, tmp_path)
    path = tmp_path / "run" / "version_0" / "robustness.json"
    result = json.loads(path.read_text())["evaluations"][0]
    assert result["num_samples"] == 100 and result["world_size"] == 1
    rows = {(r["attack"], r["eps"]): r for r in result["rows"]}
    labels = [a["label"] for a in result["attacks"]]
    for eps in (0.0, 1 / 255, 0.05, 0.2):
        worst = rows[("worst_case", eps)]["correct"]
        assert all(worst <= rows[(label, eps)]["correct"] for label in labels)
        assert rows[("worst_case", eps)]["total"] == 100
    assert rows[("worst_case", 0.0)]["correct"] == result["clean_correct"]
    assert rows[("worst_case", 0.2)]["correct"] < result["clean_correct"]
    assert result["warnings"] == []
    assert [a["threat_model"] for a in result["attacks"]] == ["white-box", "white-box"]
    assert result["threat_model"].startswith("white-box (pgd(steps=5), fgsm)") and "black-box" not in result["threat_model"]
    checks = result["gradient_masking_checks"]
    assert checks["probe_samples"] == 100 and checks["unbounded_pgd20_accuracy"] == 0.0
    assert checks["pgd50_accuracy"] <= checks["pgd10_accuracy"] + 0.01
    # scalars went to the CSV logger too
    metrics = (tmp_path / "run" / "version_0" / "metrics.csv").read_text()
    assert "robustness/test/worst_case/eps_0.2" in metrics and "robust/worst/eps_0.2" in metrics.split("\n")[0]
    # a second evaluation in the same run folder is appended, not written over
    callback.evaluate(trainer, model, "manual")
    assert len(json.loads(path.read_text())["evaluations"]) == 2


def test_bad_configuration_fails_before_any_work():
    with pytest.raises(ValueError, match="valid attacks"):
        RobustnessEvaluation(attacks=["pgdd"])
    with pytest.raises(ValueError, match="outside"):
        RobustnessEvaluation(epsilons=[8])
    # each attack's own norm: an L2 budget of 3 fits an L2 attack, not an L-inf one beside it in the sweep
    assert RobustnessEvaluation(attacks=[{"name": "pgd", "norm": "l2"}], epsilons=[3.0]).epsilons == [0.0, 3.0]
    with pytest.raises(ValueError, match="epsilon 3 does not fit pgd: .*outside"):
        RobustnessEvaluation(attacks=[{"name": "pgd", "norm": "l2"}, {"name": "pgd"}], epsilons=[3.0])
    with pytest.raises(ValueError, match="run_on"):
        RobustnessEvaluation(run_on=["fit_start"])


def test_inference_mode_is_refused_with_the_fix(fitted, tmp_path):
    model, dm = fitted
    trainer = pl.Trainer(logger=False, callbacks=[RobustnessEvaluation(num_samples=8)], enable_progress_bar=False,
                         default_root_dir=tmp_path, inference_mode=True)
    with pytest.raises(RuntimeError, match="inference_mode false"):
        trainer.test(model, dm)


def test_sanity_checks_flag_broken_evaluations():
    def result(rows, clean_correct=10):
        return {"clean_correct": clean_correct, "clean_accuracy": clean_correct / 20,
                "rows": [{"attack": "a", "eps": e, "correct": c, "accuracy": c / 20} for e, c in rows]}

    assert sanity_warnings(result([(0.0, 10), (0.1, 6), (0.3, 2)])) == []
    rising = sanity_warnings(result([(0.0, 10), (0.1, 3), (0.3, 5)]))
    assert len(rising) == 1 and "rises" in rising[0]
    stochastic = sanity_warnings(result([(0.0, 9), (0.1, 3)]))
    assert len(stochastic) == 1 and "eps=0" in stochastic[0]


def test_stochastic_model_triggers_the_eps_zero_warning(fitted, tmp_path):
    model, dm = fitted

    class Noisy(AdversarialClassifier):
        def forward(self, x):  # a randomised "defence": predictions change from call to call
            return super().forward(x) + 50 * torch.randn(x.shape[0], self.hparams.num_classes)

    noisy = Noisy(**model.hparams)
    noisy.load_state_dict(model.state_dict())
    callback = RobustnessEvaluation(attacks=[{"name": "fgsm"}], epsilons=[0.1], num_samples=64)
    with pytest.warns(UserWarning, match="sanity check"):
        run_test_with(callback, dm, noisy, tmp_path)
    assert any("eps=0" in w for w in callback.results[-1]["warnings"])


def test_masking_warnings():
    honest = {"black_box_only": {"0.1": 0}, "probe_samples": 100, "probe_eps": 0.1,
              "unbounded_pgd20_accuracy": 0.0, "pgd10_accuracy": 0.30, "pgd50_accuracy": 0.30}
    assert masking_warnings(honest) == []
    assert len(masking_warnings({**honest, "black_box_only": {"0.1": 3}})) == 1
    assert "unbounded" in masking_warnings({**honest, "unbounded_pgd20_accuracy": 0.4})[0]
    assert "PGD-50" in masking_warnings({**honest, "pgd50_accuracy": 0.35})[0]


def test_masked_gradients_are_caught_by_the_sweep(fitted, tmp_path):
    """A model whose input quantisation zeroes every gradient: white-box attacks fail, the checks say so."""
    model, dm = fitted

    class Quantised(AdversarialClassifier):
        def forward(self, x):
            return super().forward((x * 4).floor() / 4)

    masked = Quantised(**model.hparams)
    masked.load_state_dict(model.state_dict())
    callback = RobustnessEvaluation(attacks=[{"name": "pgd", "steps": 5}, {"name": "square", "n_queries": 200}],
                                    epsilons=[0.3], num_samples=64, check_samples=64)
    with pytest.warns(UserWarning, match="sanity check"):
        run_test_with(callback, dm, masked, tmp_path)
    result = callback.results[-1]
    assert result["gradient_masking_checks"]["black_box_only"]["0.3"] > 0
    assert result["gradient_masking_checks"]["unbounded_pgd20_accuracy"] > 0.05
    assert any("black-box" in w for w in result["warnings"]) and any("unbounded" in w for w in result["warnings"])
    assert [a["threat_model"] for a in result["attacks"]] == ["white-box", "black-box"]  # from the attacks run
    assert "white-box (pgd(steps=5))" in result["threat_model"] and "black-box (square(n_queries=200))" in result[
        "threat_model"]


def test_under_fast_dev_run_evaluations_stand_down_unless_asked(fitted, tmp_path, caplog):
    model, dm = fitted
    quiet, asked = (RobustnessEvaluation(attacks=[{"name": "fgsm"}], epsilons=[0.1], num_samples=n,
                                         run_under_fast_dev_run=n == 9) for n in (8, 9))
    with caplog.at_level(logging.INFO):
        pl.Trainer(logger=False, callbacks=[quiet, asked], inference_mode=False, enable_progress_bar=False,
                   default_root_dir=tmp_path, fast_dev_run=True).test(model, dm, verbose=False)
    assert quiet.results == [] and [r["num_samples"] for r in asked.results] == [9]
    assert caplog.text.count("RobustnessEvaluation stands down under fast_dev_run") == 1
    assert "run_under_fast_dev_run: true" in caplog.text
