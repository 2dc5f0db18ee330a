"""`advtrain evaluate` on 1 CPU process vs 2 DDP processes: wall time and identical counts.

Measured: the wall time of two complete ``advtrain evaluate`` runs (``python -m
experiments.cli evaluate ...`` from the repo root, PYTHONPATH set to the repo, so process
start-up, imports, data loading and DDP set-up are included) on the same checkpoint, data,
attack, epsilon and samples:

- ``--trainer.accelerator cpu --trainer.devices 1``
- ``--trainer.accelerator cpu --trainer.devices 2 --trainer.strategy ddp``

both with ``--resume false`` (no batch cache) and a CSV logger into a temporary folder.
It prints each wall time, the sweep's own time (``seconds`` in robustness.json: the
attack work without start-up), the ratios 1 process / 2 processes (> 1: two processes are
faster) and whether both robustness.json files hold identical counts (every ``rows`` entry's
attack, eps, correct and total, plus num_samples and clean_correct). It exits non-zero if
the counts differ or a run fails. With ``--repeats R`` each configuration runs R times,
alternating, and medians are compared (the machine may be shared).

Without ``--ckpt`` it first fits a tiny checkpoint itself (mnist_small, one short epoch,
as tests/test_evaluate.py does) on the same data. The data is SyntheticDataModule
(``--num-samples`` test images) or real MNIST with ``--data-dir`` (<dir>/MNIST/raw).
Choose the attack, eps and sample count so the attack work dominates start-up (about
7-10 s for one process, several more for DDP's spawn and gloo set-up): the default is
PGD-20 on 8000 synthetic images with mnist_small (tiny: about 12 s of attack work on one
CPU thread); raise ``--num-samples``/``--steps`` on a bigger machine or model.

Threads: Lightning gives each DDP process cpu_count / 2 torch threads (unless
OMP_NUM_THREADS is set), while the single process uses all cores, so by default the
comparison is "the same machine, one process or two". On a small, busy machine the
single multi-threaded process can be many times slower than its work warrants (its
threads wait for each other while other jobs hold the cores); ``--threads 1`` pins
OMP_NUM_THREADS for every process and separates that effect from the sharding.

    python benchmarks/evaluate_scaling.py                                   # PGD-20, 8000 synthetic images
    python benchmarks/evaluate_scaling.py --threads 1 --repeats 3           # 1 thread per process, medians
    python benchmarks/evaluate_scaling.py --num-samples 400 --steps 10      # quicker
    python benchmarks/evaluate_scaling.py --data-dir ../shared/datasets --eps 0.3 --num-samples 1000
    python benchmarks/evaluate_scaling.py --ckpt runs/advtrain/<run>/checkpoints/last.ckpt \\
        --backbone mnist_cnn --data-dir ../shared/datasets
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def advtrain(args: list[str], log: Path, timeout: float, env_extra: dict[str, str] | None = None) -> float:
    """Run ``python -m experiments.cli *args`` from the repo root; return its wall time in seconds."""
    env = {**os.environ, **(env_extra or {}),
           "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.run([sys.executable, "-m", "experiments.cli", *args], cwd=REPO, env=env,
                              stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"`advtrain {args[0]}` failed (exit {proc.returncode}); last output:\n"
                 + "".join(log.read_text().splitlines(keepends=True)[-40:]))
    return seconds


def csv_logger(root: Path) -> list[str]:
    return ["--trainer.logger", "pytorch_lightning.loggers.CSVLogger", "--trainer.logger.save_dir", str(root),
            "--trainer.default_root_dir", str(root)]


def read_result(root: Path) -> dict:
    files = sorted(root.rglob("robustness.json"))
    if len(files) != 1:
        sys.exit(f"expected one robustness.json under {root}, found {len(files)}")
    evaluations = json.loads(files[0].read_text())["evaluations"]
    return evaluations[-1]


def counts(result: dict) -> dict:
    return {"num_samples": result["num_samples"], "clean_correct": result["clean_correct"],
            "rows": [(r["attack"], r["eps"], r["correct"], r["total"]) for r in result["rows"]]}


def _number(text: str):
    """0.1 -> 0.1; fractions such as 8/255 stay text (the CLI reads them)."""
    try:
        return float(text)
    except ValueError:
        return text


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", default=None, help="checkpoint to evaluate (default: fit a tiny one first)")
    parser.add_argument("--backbone", default="mnist_small", help="the checkpoint's backbone (--model.backbone)")
    parser.add_argument("--data-dir", default=None, help="real MNIST from <dir>/MNIST/raw (default: synthetic data)")
    parser.add_argument("--fit-batches", type=int, default=8,
                        help="training batches of the tiny fit without --ckpt (synthetic data has 7)")
    parser.add_argument("--attack", default="pgd", help="attack name (attacks.create_attack)")
    parser.add_argument("--steps", type=int, default=20, help="attack steps (sets 'steps' of the attack spec)")
    parser.add_argument("--attack-spec", default=None,
                        help='full JSON attack spec instead of --attack/--steps, e.g. \'{"name": "apgd_ce", "n_iter": 20}\'')
    parser.add_argument("--eps", default="0.1", help="epsilon(s), comma-separated, pixel units (e.g. 0.1 or 8/255)")
    parser.add_argument("--num-samples", type=int, default=8000, help="images evaluated")
    parser.add_argument("--batch-size", type=int, default=200,
                        help="sweep batch size (global; batches are dealt round-robin to the processes)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs of each configuration, alternating; medians are compared")
    parser.add_argument("--threads", type=int, default=None,
                        help="OMP_NUM_THREADS for every process (default: unset; Lightning then gives each of the "
                             "2 DDP processes cpu_count/2 threads, the single process uses all cores)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds allowed per advtrain run")
    parser.add_argument("--workdir", default=None, help="keep logs and results here (default: a temp dir, removed)")
    args = parser.parse_args()

    spec = json.loads(args.attack_spec) if args.attack_spec else {"name": args.attack, "steps": args.steps}
    epsilons = [_number(e.strip()) for e in args.eps.split(",") if e.strip()]
    if args.data_dir:
        data = ["--data", "datamodules.MNISTDataModule", "--data.data_dir", args.data_dir, "--data.download", "false",
                "--data.batch_size", "128", "--data.val_size", "1000"]
    else:
        data = ["--data", "datamodules.SyntheticDataModule", "--data.num_train", "256",
                "--data.num_test", str(args.num_samples), "--data.batch_size", "32", "--data.val_size", "32"]
    env_extra = {"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}
    quiet = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="evaluate_scaling_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        ckpt = args.ckpt
        if ckpt is None:
            fit_root = work / "fit"
            seconds = advtrain(["fit", *data, *quiet, *csv_logger(fit_root), "--model.backbone", args.backbone,
                                "--trainer.max_epochs", "1", "--trainer.limit_train_batches", str(args.fit_batches),
                                "--trainer.limit_val_batches", "1", "--trainer.accelerator", "cpu",
                                "--trainer.devices", "1"], work / "fit.log", args.timeout)
            ckpt = str(next(fit_root.rglob("*.ckpt")))
            print(f"fitted a tiny {args.backbone} checkpoint in {seconds:.1f}s: {ckpt}")

        sweep = ["--attacks", json.dumps([spec]), "--epsilons", json.dumps(epsilons),
                 "--num_samples", str(args.num_samples), "--batch_size", str(args.batch_size), "--resume", "false"]
        common = ["evaluate", *data, *quiet, "--model.backbone", args.backbone, "--ckpt_path", ckpt, *sweep,
                  "--trainer.accelerator", "cpu"]
        runs = {"1 process": ["--trainer.devices", "1"],
                "2 processes (ddp)": ["--trainer.devices", "2", "--trainer.strategy", "ddp"]}
        threads = f"OMP_NUM_THREADS={args.threads}" if args.threads else "threads: Lightning/torch defaults"
        print(f"cpu cores: {os.cpu_count()} ({threads}); data: {'MNIST ' + args.data_dir if args.data_dir else 'synthetic'}; "
              f"attack {json.dumps(spec)} at eps {epsilons}; {args.num_samples} samples in batches of "
              f"{args.batch_size} (+ the sweep's gradient-masking probes on the first 200)")
        results = {name: [] for name in runs}
        for r in range(args.repeats):
            order = list(runs) if r % 2 == 0 else list(reversed(runs))  # alternate: a busy machine slows both
            for name in order:
                tag = f"{name.split()[0]}proc_{r}"
                wall = advtrain([*common, *runs[name], *csv_logger(work / tag)], work / f"evaluate_{tag}.log",
                                args.timeout, env_extra)
                result = read_result(work / tag)
                results[name].append((wall, result))
                print(f"{name:<18} wall {wall:7.1f}s   sweep {result['seconds']:7.1f}s   "
                      f"world_size {result['world_size']}   clean {result['clean_correct']}/{result['num_samples']}   "
                      + "   ".join(f"{row['attack']}@{row['eps']:g}: {row['correct']}/{row['total']}"
                                 for row in result["rows"]))

        one, two = results.values()
        wall1, wall2 = (statistics.median(w for w, _ in runs_) for runs_ in (one, two))
        sweep1, sweep2 = (statistics.median(res["seconds"] for _, res in runs_) for runs_ in (one, two))
        median = " (medians)" if args.repeats > 1 else ""
        print(f"wall-time ratio 1 process / 2 processes{median}: {wall1 / wall2:.2f}x "
              f"({wall1:.1f}s / {wall2:.1f}s)   sweep only: {sweep1 / max(sweep2, 1e-9):.2f}x "
              f"({sweep1:.1f}s / {sweep2:.1f}s)")
        reference = counts(one[0][1])
        same = all(counts(res) == reference for runs_ in (one, two) for _, res in runs_)
        print(f"identical counts in robustness.json: {'yes' if same else 'NO'}")
        if not same:
            for name, runs_ in results.items():
                for _, res in runs_:
                    print(f"  {name}: {counts(res)}")
            sys.exit(1)
        if args.workdir:
            print(f"logs and results kept in {work}")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
