"""W&B runs read back from their offline run files: nested config, summary keys, job type, group,
name, lr, gallery; `advtrain evaluate` joins the training run's group and records its id; provenance."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from matplotlib.image import imread

from tests.conftest import REPO, subprocess_env
from tests.test_cli import SHORT, SYNTHETIC
from tests.wandb_files import read_run

SWEEP = ["--trainer.callbacks+=callbacks.RobustnessEvaluation", "--trainer.callbacks.attacks",
         '[{"name": "pgd", "steps": 3}, {"name": "fgsm"}]', "--trainer.callbacks.epsilons", "[0.1]",
         "--trainer.callbacks.masking_checks", "false"]
GALLERY = ["--trainer.callbacks+=callbacks.ImageGallery", "--trainer.callbacks.num_images", "3"]


def advtrain(args: list[str], cwd: Path) -> None:
    env = {**subprocess_env(), "PYTHONPATH": str(REPO), "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HOME": str(cwd)}
    env.pop("WANDB_API_KEY", None)
    proc = subprocess.run([sys.executable, "-m", "experiments.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]


def only(paths) -> Path:
    paths = list(paths)
    assert len(paths) == 1, paths
    return paths[0]


@pytest.mark.slow
def test_wandb_runs_sort_filter_and_link_evaluation_to_training(tmp_path):
    experiment = tmp_path / "tiny_fgsm_at.yaml"
    experiment.write_text("model:\n  backbone: mnist_small\n  objective: adversarial\n"
                          "  attack: {name: fgsm, eps: 0.1}\n  optimizer: adam\n  lr: 0.003\n")
    root = ["--trainer.default_root_dir", str(tmp_path / "runs"), "--trainer.logger.init_args.save_dir",
            str(tmp_path / "runs")]
    advtrain(["fit", "--config", str(experiment), *SYNTHETIC, *SHORT, *SWEEP, *GALLERY, *root,
              "--trainer.log_every_n_steps", "1"], tmp_path)
    run_dir = only((tmp_path / "runs" / "advtrain").glob("*/robustness.json")).parent
    fit = read_run(only((tmp_path / "runs" / "wandb").glob("offline-run-*")))
    assert fit.id == run_dir.name and fit.job_type == "fit" and fit.group == "tiny_fgsm_at"
    assert fit.name == "tiny_fgsm_at-adversarial-fgsm-eps0.1-s0"

    # nested config: every data, model, trainer and callback setting is its own key
    config = fit.config
    assert config["model"]["lr"] == 0.003 and config["model"]["attack"] == {"name": "fgsm", "eps": 0.1}
    assert config["data"]["class"] == "SyntheticDataModule" and config["data"]["batch_size"] == 32
    assert config["trainer"]["max_epochs"] == 1 and config["seed_everything"] == 0
    sweep = config["trainer"]["callbacks"]["RobustnessEvaluation"]
    assert sweep["epsilons"] == [0.1] and sweep["attacks"]["pgd"] == {"name": "pgd", "steps": 3}
    assert config["trainer"]["callbacks"]["ImageGallery"]["num_images"] == 3
    assert "config" not in config, "the config is nested, not one YAML string"

    # summary: short stable keys equal to robustness.json
    (result,) = json.loads((run_dir / "robustness.json").read_text())["evaluations"]
    accuracy = {(r["attack"], r["eps"]): r["accuracy"] for r in result["rows"]}
    assert fit.summary["clean"] == pytest.approx(result["clean_accuracy"])
    assert fit.summary["robust/pgd3/eps_0.1"] == pytest.approx(accuracy[("pgd(steps=3)", 0.1)])
    assert fit.summary["robust/fgsm/eps_0.1"] == pytest.approx(accuracy[("fgsm", 0.1)])
    assert fit.summary["robust/worst/eps_0.1"] == pytest.approx(accuracy[("worst_case", 0.1)])
    assert "lr" in fit.history_keys

    # pictures: the gallery to W&B and the run folder, a curve beside robustness.json
    assert fit.summary["gallery/test"]["_type"] == "image-file"
    gallery = imread(only(run_dir.glob("gallery_fit_end_step2.png")))
    assert gallery.ndim == 3 and gallery.shape[0] > 200 and gallery.shape[1] > 300
    assert imread(only(run_dir.glob("robustness_fit_end_step2.png"))).shape[0] > 100

    # the checkpoint names its run
    ckpt = only(run_dir.glob("checkpoints/epoch=*.ckpt"))
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)["advtrain_run"]
    assert saved["id"] == fit.id and saved["group"] == "tiny_fgsm_at"

    # advtrain evaluate: joins the group as job_type evaluate, records the training run
    advtrain(["evaluate", "--config", str(experiment), *SYNTHETIC, *root, "--ckpt_path", str(ckpt),
              "--attacks", '[{"name": "pgd", "steps": 3}]', "--epsilons", "[0.05, 0.1]",
              "--trainer.enable_progress_bar", "false"], tmp_path)
    evaluation = read_run(only(p for p in (tmp_path / "runs" / "wandb").glob("offline-run-*")
                               if not p.name.endswith(fit.id)))
    assert evaluation.job_type == "evaluate" and evaluation.group == fit.group
    assert evaluation.config["training_run"]["id"] == fit.id
    assert evaluation.name == f"{fit.name}-evaluate"
    assert {"clean", "robust/pgd3/eps_0.05", "robust/worst/eps_0.1"} <= set(evaluation.summary)

    (evaluated,) = json.loads(only((tmp_path / "runs" / "advtrain" / evaluation.id).glob("robustness.json"))
                              .read_text())["evaluations"]
    prov, fit_prov = evaluated["provenance"], result["provenance"]
    assert prov["training_run"]["id"] == fit.id and prov["run"]["id"] == evaluation.id
    assert prov["checkpoint"]["path"] == str(ckpt.resolve())
    assert prov["checkpoint"]["fingerprint"] == fit_prov["checkpoint"]["fingerprint"], "same weights as at fit end"
    assert prov["checkpoint"]["global_step"] == evaluated["global_step"] == result["global_step"] == 2
    assert prov["data"]["dataset"] == "SyntheticDataModule" and prov["data"]["split_size"] == 96
    assert prov["world_size"] == 1 and len(prov["devices"]) == 1 and prov["seed"]["training"] == 0
    assert prov["code"]["git_commit"] and prov["timing"]["seconds"] >= 0
    assert [a["name"] for a in evaluated["attacks"]] == ["pgd"]
