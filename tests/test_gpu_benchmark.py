"""benchmarks/gpu.py --tiny: the device benchmark runs end to end on CPU, without W&B or
jsonargparse (the device machine has neither), and writes every section's figures."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO, subprocess_env

# the script run with wandb and jsonargparse made unimportable, as on the device machine
WITHOUT_WANDB = ("import runpy, sys; sys.modules.update(wandb=None, jsonargparse=None); "
                 "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")


@pytest.mark.slow
def test_tiny_mode_writes_every_figure_without_wandb_or_jsonargparse(tmp_path):
    proc = subprocess.run([sys.executable, "-c", WITHOUT_WANDB, str(REPO / "benchmarks" / "gpu.py"), "--tiny",
                           "--out", str(tmp_path)], cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    figures = json.loads((tmp_path / "gpu_figures.json").read_text())
    assert figures["environment"]["tiny"] is True
    assert figures["fast_at_training"]["train_seconds"] > 0 and figures["fast_at_training"]["device_resident"]
    assert figures["fast_at_pgd50"]["samples"] == 16 and 0 <= figures["fast_at_pgd50"]["robust_acc"] <= \
        figures["fast_at_pgd50"]["clean_acc"]
    assert "samples" in figures["fast_at_autoattack"] or "not measured" in figures["fast_at_autoattack"]
    steps = figures["step_throughput"]
    assert all(steps[f"{k}_images_per_second"] > 0 for k in ("clean", "fgsm_rs", "pgd10")) and steps["bound"] == 11
    assert {"PGD-20", "PGD-20 bf16", "APGD-CE-5"} <= set(figures["versus_torchattacks"])
    assert "## step_throughput" in (tmp_path / "gpu_figures.md").read_text()
