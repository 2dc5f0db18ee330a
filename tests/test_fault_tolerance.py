"""Trustworthy runs, with real processes: one seed gives one result; a run killed (SIGKILL) and
resumed from a mid-epoch checkpoint ends bitwise equal to the uninterrupted run; SIGTERM saves
last.ckpt and exits non-zero; an evaluation stopped by SIGTERM continues where it stopped."""
from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, subprocess_env
from tests.test_cli import SYNTHETIC, csv_logger, evaluations

# PGD-AT with random starts and no attack seed, augmentation, shuffling: every source of randomness
TRAIN = [*SYNTHETIC, "--model.backbone", "mnist_small", "--model.objective", "adversarial",
         "--model.attack", '{"name": "pgd", "eps": 0.1, "steps": 2}', "--model.optimizer", "adam", "--model.lr", "0.01",
         "--data.augment", '[{"name": "flip"}, {"name": "noise", "std": 0.05}]',
         "--trainer.deterministic", "true", "--trainer.enable_progress_bar", "false",
         "--trainer.enable_model_summary", "false", "--trainer.limit_val_batches", "1"]
SWEEP = ["--trainer.callbacks+=callbacks.RobustnessEvaluation", "--trainer.callbacks.attacks",
         '[{"name": "pgd", "steps": 3}]', "--trainer.callbacks.epsilons", "[0.1]",
         "--trainer.callbacks.masking_checks", "false"]


def advtrain(args: list[str], cwd: Path, **kwargs) -> subprocess.Popen:
    env = {**subprocess_env(), "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "experiments.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def run_ok(args: list[str], cwd: Path) -> str:
    code, out = finish(advtrain(args, cwd))
    assert code == 0, out[-4000:]
    return out


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]


def assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"weights differ in {differ[:5]}: max |diff| " + \
        f"{max((a[k].float() - b[k].float()).abs().max().item() for k in differ):.3g}"


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert proc.poll() is None, "the run ended before the test could interrupt it:\n" + proc.stdout.read()[-3000:]
        assert time.time() < deadline, "timed out waiting for the run"
        time.sleep(0.2)


def last_checkpoint(root: Path) -> Path:
    (path,) = [p for p in root.rglob("last.ckpt")]
    return path


@pytest.mark.slow
def test_one_seed_gives_bitwise_equal_weights_and_counts(tmp_path):
    """Two fits with one seed: equal weights and robustness.json counts; `test` twice: equal metrics."""
    args = [*TRAIN, *SWEEP, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "4"]
    for name in ("a", "b"):
        run_ok(["fit", *args, *csv_logger(tmp_path / name)], tmp_path)
    assert_bitwise_equal(weights(last_checkpoint(tmp_path / "a")), weights(last_checkpoint(tmp_path / "b")))
    rows = [[(r["attack"], r["correct"]) for r in evaluations(tmp_path / n)[0]["rows"]] for n in ("a", "b")]
    assert rows[0] == rows[1]

    # `advtrain test` of one checkpoint: the validation attack (no seed) gives the same numbers every time
    metrics = []
    for name in ("t1", "t2"):
        run_ok(["test", *SYNTHETIC, *csv_logger(tmp_path / name), "--trainer.enable_progress_bar", "false",
                "--ckpt_path", str(last_checkpoint(tmp_path / "a"))], tmp_path)
        (metrics_file,) = (tmp_path / name).rglob("metrics.csv")
        metrics.append(list(csv.DictReader(metrics_file.open())))
    assert metrics[0] == metrics[1] and "test/adv_acc" in metrics[0][0]


@pytest.mark.slow
def test_sigkill_and_resume_mid_epoch_is_bitwise_equal_to_the_uninterrupted_run(tmp_path):
    """SIGKILL after a mid-epoch checkpoint (step 4 of 6 per epoch), resume from it: the final
    weights equal the uninterrupted run's bit for bit."""
    checkpoints = ["--trainer.callbacks+=ModelCheckpoint", "--trainer.callbacks.every_n_train_steps", "4",
                   "--trainer.callbacks.save_top_k", "-1"]
    args = [*TRAIN, *checkpoints, "--trainer.max_epochs", "3", "--trainer.limit_train_batches", "6"]
    run_ok(["fit", *args, *csv_logger(tmp_path / "whole")], tmp_path)

    killed = tmp_path / "killed"
    proc = advtrain(["fit", *args, *csv_logger(killed)], tmp_path)
    wait_for(lambda: any(killed.rglob("*step=8.ckpt")), proc)  # step 4 is complete once step 8 is being written
    proc.send_signal(signal.SIGKILL)
    finish(proc)
    assert proc.returncode == -signal.SIGKILL
    (mid_epoch,) = killed.rglob("*step=4.ckpt")
    assert torch.load(mid_epoch, weights_only=True)["loops"]["fit_loop"]["epoch_progress"]["current"]["completed"] == 0

    resumed = tmp_path / "resumed"
    run_ok(["fit", *args, *csv_logger(resumed), "--ckpt_path", str(mid_epoch)], tmp_path)
    assert_bitwise_equal(weights(last_checkpoint(tmp_path / "whole")), weights(last_checkpoint(resumed)))


@pytest.mark.slow
def test_sigterm_during_fit_saves_last_checkpoint_and_exits_nonzero(tmp_path):
    """An endless fit (max_epochs -1): SIGTERM after the first epoch's last.ckpt saves a newer one and exits 143."""
    args = [*TRAIN, "--trainer.max_epochs", "-1", "--trainer.limit_train_batches", "2", *csv_logger(tmp_path)]
    proc = advtrain(["fit", *args], tmp_path)
    wait_for(lambda: any(tmp_path.rglob("last.ckpt")), proc)
    proc.send_signal(signal.SIGTERM)
    code, out = finish(proc)
    assert code == 143, out[-3000:]
    checkpoint = torch.load(last_checkpoint(tmp_path), weights_only=True)
    assert checkpoint["global_step"] >= 2
    assert "preempted" in out and "--ckpt_path last" in out


@pytest.mark.slow
def test_sigterm_during_evaluate_stops_between_batches_and_the_rerun_continues(tmp_path):
    run_ok(["fit", *TRAIN, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
            *csv_logger(tmp_path / "fit")], tmp_path)
    checkpoint = str(last_checkpoint(tmp_path / "fit"))
    evaluate = ["evaluate", *SYNTHETIC, "--data.num_test", "320", "--ckpt_path", checkpoint, "--batch_size", "16",
                "--attacks", '[{"name": "pgd", "steps": 40}]', "--epsilons", "[0.1]",
                "--trainer.enable_progress_bar", "false"]
    root = tmp_path / "eval"
    proc = advtrain([*evaluate, *csv_logger(root)], tmp_path)
    wait_for(lambda: len(list(root.rglob("batch_*.pt"))) >= 2, proc)
    proc.send_signal(signal.SIGTERM)
    code, out = finish(proc)
    assert code == 143, out[-3000:]
    done = len(list(root.rglob("batch_*.pt")))
    assert 2 <= done < 20, f"{done} of 20 batches cached: SIGTERM must stop the sweep between batches"
    assert not list(root.rglob("robustness.json"))

    out = run_ok([*evaluate, *csv_logger(root)], tmp_path)  # the same command continues
    run_ok([*evaluate, *csv_logger(tmp_path / "whole"), "--resume", "false"], tmp_path)
    continued, whole = evaluations(root)[0], evaluations(tmp_path / "whole")[0]
    assert continued["num_samples"] == whole["num_samples"] == 320
    assert continued["rows"] == whole["rows"]


def test_ckpt_path_last_continues_the_same_run_folder_and_wandb_run(tmp_path):
    """One run, one folder: the W&B files land under --trainer.default_root_dir. `--ckpt_path last`
    on a fresh root starts a run; on a root with one, it resumes its newest last.ckpt into the same
    run folder and the same W&B run id."""
    root = tmp_path / "job"
    args = ["fit", *SYNTHETIC, "--model.backbone", "mnist_small", "--trainer.limit_train_batches", "2",
            "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false",
            "--trainer.default_root_dir", str(root), "--ckpt_path", "last"]
    run_ok([*args, "--trainer.max_epochs", "1"], tmp_path)
    out = run_ok([*args, "--trainer.max_epochs", "2"], tmp_path)
    assert "resuming" in out
    (run_folder,) = (root / "advtrain").iterdir()
    assert torch.load(last_checkpoint(root), weights_only=True)["global_step"] == 4
    assert {p.name.rsplit("-", 1)[-1] for p in (root / "wandb").glob("offline-run-*")} == {run_folder.name}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job"], "the run wrote outside its folder"
