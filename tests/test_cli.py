"""The advtrain CLI: every objective and experiment runs, config saved, W&B offline, DDP exact."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from experiments.cli import list_components, main
from lightning_modules import AdversarialClassifier
from tests.conftest import MNIST_PRESENT, REPO, SHARED_DATASETS, subprocess_env

SYNTHETIC = ["--data", "datamodules.SyntheticDataModule", "--data.num_train", "256", "--data.num_test", "96",
             "--data.batch_size", "32", "--data.val_size", "32"]
SHORT = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
         "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
SWEEP = ["--trainer.callbacks+=callbacks.RobustnessEvaluation", "--trainer.callbacks.attacks",
         '[{"name": "pgd", "steps": 3}]', "--trainer.callbacks.epsilons", "[0.1]"]
# YAMLs that need what only their own test module provides (a source checkpoint, an overlay's base
# YAML, fixture files in a dataset's raw format): that module runs each of them through the CLI.
RUN_ELSEWHERE = {
    "mnist_cross_model": "test_adversarial_datasets", "cifar10_cross_model": "test_adversarial_datasets",
    "cats_vs_dogs_cross_model": "test_adversarial_datasets", "cross_model_augment_only": "test_adversarial_datasets",
    "mnist_pregenerated_finetune": "test_adversarial_datasets",
    **{f"data/{p.stem}": "test_dataset_cli_runs" for p in (REPO / "experiments" / "data").glob("*.yaml")},
}
# configs/defaults.yaml is not an experiment: every run above loads it; sweeps/ holds W&B sweep files
ALL_EXPERIMENTS = sorted(p for p in (REPO / "experiments").rglob("*.yaml") if p.parent.name not in ("configs", "sweeps"))
EXPERIMENTS = [p for p in ALL_EXPERIMENTS
               if p.relative_to(REPO / "experiments").with_suffix("").as_posix() not in RUN_ELSEWHERE]


def csv_logger(root: Path) -> list[str]:
    return ["--trainer.logger", "pytorch_lightning.loggers.CSVLogger", "--trainer.logger.save_dir", str(root),
            "--trainer.default_root_dir", str(root)]


def evaluations(root: Path) -> list[dict]:
    files = sorted(root.rglob("robustness.json"))
    assert files, f"no robustness.json under {root}"
    return [e for f in files for e in json.loads(f.read_text())["evaluations"]]


@pytest.mark.parametrize("objective,attack", [("clean", None), ("adversarial", '{"name": "pgd", "eps": 0.1, "steps": 2}'),
                                              ("mixed", '{"name": "fgsm", "eps": 0.1}')])
def test_fit_each_objective_on_synthetic_data(objective, attack, tmp_path):
    args = ["fit", *SYNTHETIC, *SHORT, *csv_logger(tmp_path), *SWEEP, "--model.backbone", "mnist_small",
            "--model.objective", objective]
    if attack:
        args += ["--model.attack", attack]
    main(args)
    (result,) = evaluations(tmp_path)
    assert result["num_samples"] == 96 and result["stage"] == "fit_end"
    assert (next(tmp_path.rglob("config.yaml"))).read_text().count(f"objective: {objective}") == 1
    assert list(tmp_path.rglob("*.ckpt")), "fit saved no checkpoint"


def test_a_whole_number_batch_limit_means_that_many_batches(tmp_path):
    """``--trainer.limit_train_batches 1`` is one batch (Lightning's Union[float, int] alone would read
    1.0, the whole epoch: 7 batches here); a fraction stays a fraction."""
    for limit, steps in (("1", 1), ("0.5", 3)):
        main(["fit", *SYNTHETIC, *SHORT, *csv_logger(tmp_path / limit), "--model.backbone", "mnist_small",
              "--trainer.limit_train_batches", limit, "--trainer.limit_val_batches=1"])
        (checkpoint,) = (tmp_path / limit).rglob("last.ckpt")
        assert torch.load(checkpoint, weights_only=True)["global_step"] == steps, limit
        assert f"limit_train_batches: {limit}" in next((tmp_path / limit).rglob("config.yaml")).read_text()


def test_objective_spec_and_an_older_checkpoints_flat_settings(tmp_path):
    """``objective: {name: mixed, adversarial_fraction: 0.25}`` trains; a checkpoint holding the settings flat
    beside the name (``objective: mixed, adversarial_fraction: 0.25, beta: 6``, before specs) still loads."""
    main(["fit", *SYNTHETIC, *SHORT, *csv_logger(tmp_path / "fit"), "--model.backbone", "mnist_small",
          "--model.objective", "{name: mixed, adversarial_fraction: 0.25}", "--model.attack", '{"name": "fgsm", "eps": 0.1}'])
    saved = torch.load(next((tmp_path / "fit").rglob("last.ckpt")), weights_only=True)
    assert saved["hyper_parameters"]["objective"] == {"name": "mixed", "adversarial_fraction": 0.25}
    saved["hyper_parameters"].update(objective="mixed", adversarial_fraction=0.25, beta=6.0)
    legacy = tmp_path / "legacy.ckpt"
    torch.save(saved, legacy)
    main(["test", *SYNTHETIC, *csv_logger(tmp_path / "test"), "--trainer.enable_progress_bar", "false",
          "--ckpt_path", str(legacy)])
    config = yaml.safe_load(next((tmp_path / "test").rglob("config.yaml")).read_text())
    assert config["model"]["objective"] == {"name": "mixed", "adversarial_fraction": 0.25}
    loaded = AdversarialClassifier.load_from_checkpoint(legacy, weights_only=True)
    assert loaded.objective.adversarial_fraction == 0.25
    assert loaded.hparams.objective == {"name": "mixed", "adversarial_fraction": 0.25}


def test_list_shows_every_registry_with_options_and_defaults(capsys):
    main(["list"])
    printed = capsys.readouterr().out
    for line in ("pgd(eps=", "steps=10", "trades(beta=6.0)", "mixed(adversarial_fraction=0.5)", "median(window=3)",
                 "rotation(degrees=15.0, padding_mode='zeros', p=1.0)"):
        assert line in printed, line
    assert list_components(["objectives"]).startswith("objectives:") and "pgd(" not in list_components(["objectives"])
    with pytest.raises(SystemExit, match="unknown kind.*valid: attacks, objectives, preprocessing, augmentations"):
        main(["list", "backbones"])


def test_print_config_composes_config_files(tmp_path, capsys):
    override = tmp_path / "override.yaml"
    override.write_text("model:\n  lr: 0.123\n")
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(REPO / "experiments" / "mnist_pgd_at.yaml"), "--config", str(override),
              "--print_config"])
    printed = capsys.readouterr().out
    assert "lr: 0.123" in printed and "objective: adversarial" in printed and "inference_mode: false" in printed


@pytest.mark.parametrize("experiment", EXPERIMENTS, ids=lambda p: p.stem)
def test_every_experiment_runs_one_batch(experiment, tmp_path):
    """Each YAML is instantiated and fitted for one batch (on real data when present, else synthetic)."""
    args = ["fit", "--config", str(experiment), *csv_logger(tmp_path), "--trainer.fast_dev_run", "1",
            "--trainer.enable_progress_bar", "false"]
    text = experiment.read_text()
    if "MNISTDataModule" in text and MNIST_PRESENT:
        args += ["--data.data_dir", str(SHARED_DATASETS), "--data.test_size", "64"]
    else:
        shape = "[3, 32, 32]" if "CIFAR10" in text else "[1, 28, 28]"
        args += ["--data", "datamodules.SyntheticDataModule", "--data.input_shape", shape, "--data.num_test", "32",
                 "--data.num_train", "128", "--data.batch_size", "16", "--data.val_size", "16"]
    main(args)


def test_every_experiment_is_run_by_some_test():
    names = {p.relative_to(REPO / "experiments").with_suffix("").as_posix() for p in ALL_EXPERIMENTS}
    assert set(RUN_ELSEWHERE) <= names, f"stale entries: {set(RUN_ELSEWHERE) - names}"
    for name, module in RUN_ELSEWHERE.items():
        text = (REPO / "tests" / f"{module}.py").read_text()
        stem = name.rsplit("/", 1)[-1]
        assert stem in text or stem.removesuffix("_cross_model") in text, f"{module}.py does not run {name}.yaml"


def test_wandb_is_the_default_logger_and_runs_offline(tmp_path, monkeypatch):
    for var in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    main(["fit", *SYNTHETIC, *SHORT, *SWEEP, "--model.backbone", "mnist_small", "--model.objective", "mixed",
          "--model.attack", '{"name": "fgsm", "eps": 0.1}'])
    offline_runs = list((tmp_path / "runs" / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1
    run_dirs = [p.parent for p in (tmp_path / "runs" / "advtrain").glob("*/robustness.json")]
    assert len(run_dirs) == 1 and (run_dirs[0] / "config.yaml").exists()
    assert offline_runs[0].name.endswith(run_dirs[0].name), "results and W&B run must share the run id"
    wandb_config = (offline_runs[0] / "files" / "config.yaml")
    if wandb_config.exists():  # written when the run closes
        assert "objective: mixed" in wandb_config.read_text()


def _advtrain(args: list[str], cwd: Path) -> None:
    env = {**subprocess_env(), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "experiments.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]


@pytest.mark.slow
def test_ddp_two_processes_counts_equal_one_process(tmp_path):
    """DDP on 2 CPU processes (gloo): fit's sweep and `advtrain evaluate` cover every sample once;
    counts equal a 1-process run's."""
    data = SYNTHETIC[:-2] + ["--data.val_size", "32", "--data.num_test", "100"]  # 100: uneven over 2 ranks
    sweep = ["--trainer.callbacks+=callbacks.RobustnessEvaluation", "--trainer.callbacks.attacks",
             '[{"name": "pgd", "steps": 3}, {"name": "fgsm"}]', "--trainer.callbacks.epsilons", "[0.05, 0.2]",
             "--trainer.callbacks.batch_size", "16"]
    ddp = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"]
    fit_root = tmp_path / "fit"
    _advtrain(["fit", *data, *SHORT, *csv_logger(fit_root), *sweep, *ddp, "--model.backbone", "mnist_small",
               "--model.objective", "adversarial", "--model.attack", '{"name": "pgd", "eps": 0.1, "steps": 2}'],
              tmp_path)
    (fit_result,) = evaluations(fit_root)
    assert fit_result["world_size"] == 2 and fit_result["num_samples"] == 100
    assert len(fit_result["provenance"]["devices"]) == 2, "every process's device is recorded"
    ckpt = next(fit_root.rglob("*.ckpt"))
    counts = {}
    # one process through `advtrain test` (the callback), two through `advtrain evaluate`
    for subcommand, devices in (("test", "1"), ("evaluate", "2")):
        root = tmp_path / f"{subcommand}{devices}"
        extra = ddp[:-3] + [devices] + ([] if devices == "1" else ["--trainer.strategy", "ddp", "--resume", "false"])
        _advtrain([subcommand, *data, *csv_logger(root), *sweep, *extra, "--trainer.enable_progress_bar", "false",
                   "--model.backbone", "mnist_small", "--ckpt_path", str(ckpt)], tmp_path)
        (result,) = evaluations(root)
        assert result["world_size"] == int(devices)
        counts[devices] = [(r["attack"], r["eps"], r["correct"], r["total"]) for r in result["rows"]]
    assert counts["1"] == counts["2"]
    assert all(total == 100 for *_, total in counts["1"])


def test_validate_test_predict_from_a_fitted_checkpoint(tmp_path):
    common = [*SYNTHETIC, "--model.backbone", "mnist_small", "--trainer.enable_progress_bar", "false"]
    main(["fit", *common, *SHORT, *csv_logger(tmp_path / "fit")])
    ckpt = str(next((tmp_path / "fit").rglob("*.ckpt")))
    for subcommand in ("validate", "test", "predict"):
        root = tmp_path / subcommand
        main([subcommand, *common, *csv_logger(root), *SWEEP, "--ckpt_path", ckpt])
    (result,) = evaluations(tmp_path / "test")  # the sweep runs at test end only
    assert result["stage"] == "test_end" and result["num_samples"] == 96
    assert not list((tmp_path / "validate").rglob("robustness.json"))
