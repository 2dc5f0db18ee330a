"""advtrain evaluate: standalone sweep of a checkpoint, resumable, exact under DDP."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from callbacks import RobustnessEvaluation
from experiments.cli import main
from tests.test_cli import SHORT, SYNTHETIC, csv_logger

EVAL = ["--attacks", '[{"name": "pgd", "steps": 3}, {"name": "fgsm"}]', "--epsilons", "[0.05, 0.2]",
        "--batch_size", "16", "--trainer.enable_progress_bar", "false"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("fit")
    main(["fit", *SYNTHETIC, *SHORT, *csv_logger(root), "--model.backbone", "mnist_small"])
    return str(next(root.rglob("*.ckpt")))


def rows(root):
    (path,) = root.rglob("robustness.json")
    (result,) = json.loads(path.read_text())["evaluations"]
    return result, [(r["attack"], r["eps"], r["correct"], r["total"]) for r in result["rows"]]


def test_interrupted_evaluation_resumes_without_redoing_finished_batches(checkpoint, tmp_path, monkeypatch):
    cache_root = tmp_path / "shared_root"
    common = [*SYNTHETIC, "--model.backbone", "mnist_small", "--ckpt_path", checkpoint, *EVAL,
              "--trainer.default_root_dir", str(cache_root)]
    logger = ["--trainer.logger", "pytorch_lightning.loggers.CSVLogger", "--trainer.logger.save_dir"]
    main(["evaluate", *common, *logger, str(tmp_path / "first")])
    first, first_rows = rows(tmp_path / "first")
    batches = sorted(cache_root.rglob("batch_*.pt"))
    assert len(batches) == 6 and first["num_samples"] == 96  # 96 test images in batches of 16

    # an interruption after four batches leaves exactly these files (each written atomically)
    for path in batches[4:]:
        path.unlink()
    computed = []
    original = RobustnessEvaluation.count_batch
    monkeypatch.setattr(RobustnessEvaluation, "count_batch",
                        lambda self, m, x, y, b: computed.append(b) or original(self, m, x, y, b))
    main(["evaluate", *common, *logger, str(tmp_path / "resumed")])
    resumed, resumed_rows = rows(tmp_path / "resumed")
    assert computed == [4, 5], "only the unfinished batches are attacked again"
    assert resumed_rows == first_rows

    # different settings never reuse those results
    computed.clear()
    main(["evaluate", *common, "--epsilons", "[0.1]", *logger, str(tmp_path / "other")])
    assert computed == list(range(6))


def test_evaluate_without_a_sweep_names_the_fix(checkpoint, tmp_path):
    with pytest.raises(ValueError, match="--attacks and --epsilons"):
        main(["evaluate", *SYNTHETIC, *csv_logger(tmp_path), "--model.backbone", "mnist_small",
              "--ckpt_path", checkpoint])


def test_transfer_attack_and_matrix(checkpoint, tmp_path):
    """Two different models: the diagonal (white-box) is at most the off-diagonal (transfer)."""
    other_root = tmp_path / "other"
    main(["fit", *SYNTHETIC, *SHORT, *csv_logger(other_root), "--model.backbone", "mnist_small",
          "--seed_everything", "1", "--trainer.limit_train_batches", "4"])
    other = str(next(other_root.rglob("*.ckpt")))
    main(["transfer_matrix", *SYNTHETIC, *csv_logger(tmp_path / "matrix"), "--model.backbone", "mnist_small",
          "--checkpoints", f"[{checkpoint}, {other}]", "--attack", '{"name": "pgd", "steps": 5}',
          "--epsilons", "[0.3]", "--trainer.enable_progress_bar", "false"])
    (path,) = (tmp_path / "matrix").rglob("transfer_matrix.json")
    doc = json.loads(path.read_text())["evaluations"][0]
    matrix, provenance = doc["matrix"], doc["provenance"]["per_target"]
    assert {provenance[c]["checkpoint"]["path"] for c in (checkpoint, other)} == {str(Path(checkpoint).resolve()),
                                                                                  str(Path(other).resolve())}
    assert provenance[checkpoint]["checkpoint"]["fingerprint"] != provenance[other]["checkpoint"]["fingerprint"]
    (logged,) = (tmp_path / "matrix").rglob("metrics.csv")  # short keys, both checkpoints in version_0/ folders
    assert {"transfer/ckpt0/ckpt1/eps_0.3", "transfer/ckpt1/ckpt0/eps_0.3"} <= set(logged.read_text().split("\n")[0].split(","))
    for target in (checkpoint, other):
        source = other if target == checkpoint else checkpoint
        assert matrix[target][target]["0.3"] <= matrix[source][target]["0.3"]
    assert 0.0 <= matrix[checkpoint][other]["0.3"] <= 1.0


def test_transfer_attack_needs_a_source():
    from attacks import create_attack

    with pytest.raises(ValueError, match="source=<path"):
        create_attack({"name": "transfer"})


def test_evaluate_any_model_with_the_pixel_contract(tmp_path):
    """A TorchScript model and a factory, neither trained by advtrain, evaluated by the same sweep."""
    import torch

    from tests.conftest import ToyNet

    torch.manual_seed(0)
    scripted = tmp_path / "toy.pt"
    torch.jit.save(torch.jit.script(ToyNet(num_classes=4).eval()), str(scripted))
    data = ["--data", "datamodules.SyntheticDataModule", "--data.num_classes", "4", "--data.input_shape", "[1, 8, 8]",
            "--data.num_test", "40"]
    for source, root in ((str(scripted), tmp_path / "script"), ("tests.conftest:ToyNet", tmp_path / "factory")):
        main(["evaluate", *data, *csv_logger(root), *EVAL, "--external_model", source, "--resume", "false"])
        result, _ = rows(root)
        assert result["num_samples"] == 40 and result["model"]["source"] == source
