"""Bad input is a clear error or is counted right: DDP test metrics, corrupt image files, missing datasets."""
from __future__ import annotations

import csv

import pytest

from tests.test_cli import SYNTHETIC, _advtrain, csv_logger


def _test_metrics(root) -> dict[str, float]:
    (path,) = root.rglob("metrics.csv")
    rows = [r for r in csv.DictReader(path.open()) if r.get("test/clean_acc")]
    return {k: float(v) for k, v in rows[-1].items() if k.startswith("test/") and v}


@pytest.mark.slow
def test_ddp_test_metrics_count_each_sample_once(tmp_path):
    """301 test samples over 2 gloo processes: Lightning's padding sampler would count 302."""
    data = SYNTHETIC[:4] + ["--data.num_test", "301", "--data.batch_size", "32"]
    common = ["test", *data, "--model.backbone", "mnist_small", "--trainer.accelerator", "cpu",
              "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    accuracy = {}
    for devices in ("1", "2"):
        root = tmp_path / devices
        extra = ["--trainer.devices", devices] + (["--trainer.strategy", "ddp"] if devices == "2" else [])
        _advtrain([*common, *csv_logger(root), *extra], tmp_path)  # untrained: accuracy neither 0 nor 1
        accuracy[devices] = _test_metrics(root)["test/clean_acc"]
    correct = accuracy["1"] * 301
    assert 0 < accuracy["1"] < 1 and abs(correct - round(correct)) < 1e-3
    assert accuracy["2"] == pytest.approx(accuracy["1"], abs=1e-7)
