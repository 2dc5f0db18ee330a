"""The device benchmark (issue 15), one call: fast adversarial training of CIFAR-10 end to end,
training-step throughput, our attacks against torchattacks', and the sweep's speed.

Written to ``<out>/gpu_figures.json`` and ``<out>/gpu_figures.md`` after every section (a run
stopped early keeps what it measured):

1. ``experiments/cifar10_fast_at.yaml`` (FGSM-RS, PreActResNet-18, 15 epochs, bf16, the split on
   the device) trained end to end: training seconds (Lightning's Timer, decoding excluded),
   then clean accuracy and PGD-50 (step 2/255) robust accuracy at L-inf eps 8/255 on the
   10,000 test images (``callbacks.RobustnessEvaluation``, float32; its samples per second are
   the sweep's speed), and the reference AutoAttack (standard) on a seeded 1,000 when
   ``pyautoattack`` is importable. Target: >= 46% PGD-50 in <= 60 s of training.
2. Images per second of a clean training step, an FGSM-RS step and a PGD-10 step of that model
   (forward, attack, backward, optimiser step, in the recipe's precision and layout), and the
   ratio PGD-10 step / clean step next to its bound of 11 (target <= 0.9 x 11).
3. PGD-20 (ours in float32 and under bf16 autocast) and APGD-CE (100 iterations) against
   torchattacks on the trained model and one batch of test images: milliseconds per batch and
   robust accuracy, side by side (``benchmarks/attacks_vs_torchattacks.py``'s timing).
   Target: PGD-20 >= 1.5x torchattacks at equal robust accuracy.

Needs torch, Lightning, timm, torchmetrics, torchvision, PyYAML, matplotlib, tqdm (no W&B, no
jsonargparse: the logger is Lightning's CSVLogger). torchattacks and pyautoattack are for this
benchmark only: put them in a folder (``pip install --no-deps --target DIR torchattacks
pyautoattack``, or carry their wheels) and pass ``--extra-path DIR``; without them those rows say
"not measured". The data: the shared CIFAR-10 archive (``cifar10-jpeg.tar.gz``, a JPEG copy of
CIFAR-10), extracted under ``<out>``.

    python benchmarks/gpu.py --cifar-archive ../shared/datasets/cifar10-jpeg.tar.gz --out $OUT \\
        --extra-path /tmp/site                      # one H200: about 5 minutes
    python benchmarks/gpu.py --tiny --out /tmp/gpu_tiny   # CPU, synthetic data, seconds (CI)
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tarfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
import yaml
from pytorch_lightning.callbacks import Timer
from pytorch_lightning.loggers import CSVLogger

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "benchmarks"):  # run as a file from anywhere: the repo's packages first
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from attacks import create_attack  # noqa: E402
from attacks_vs_torchattacks import compare, import_torchattacks, timed_call  # noqa: E402
from callbacks import RobustnessEvaluation  # noqa: E402
from datamodules import ImageFolderDataModule, SyntheticDataModule  # noqa: E402
from datamodules.torchvision_sets import CIFAR10DataModule  # noqa: E402
from lightning_modules import AdversarialClassifier, create_objective  # noqa: E402

RECIPE = REPO / "experiments" / "cifar10_fast_at.yaml"
EPS, ALPHA = 8 / 255, 2 / 255
STEP_KINDS = {"clean": None, "fgsm_rs": {"name": "fgsm_rs", "eps": EPS, "alpha": 10 / 255},
              "pgd10": {"name": "pgd", "eps": EPS, "alpha": ALPHA, "steps": 10}}
TARGETS = {"fast_at_pgd50_acc": ">= 0.46", "fast_at_train_seconds": "<= 60",
           "pgd10_over_clean_step": "<= 9.9 (0.9 x 11)", "pgd20_speedup_vs_torchattacks": ">= 1.5 at equal robust acc"}


class Figures(dict):
    """The results, rewritten to ``gpu_figures.json`` and ``.md`` whenever a section adds some."""

    def __init__(self, out: Path):
        super().__init__(targets=TARGETS)
        self.out = out

    def add(self, section: str, values: dict) -> None:
        self[section] = values
        (self.out / "gpu_figures.json").write_text(json.dumps(self, indent=2, default=str) + "\n")
        lines = ["# advtrain device benchmark (benchmarks/gpu.py)", ""]
        for name, part in self.items():
            lines += [f"## {name}", "", *(f"- {k}: {v}" for k, v in part.items()), ""]
        (self.out / "gpu_figures.md").write_text("\n".join(lines))
        print(f"[{section}] " + json.dumps(values, default=str), flush=True)


def recipe() -> dict:
    return yaml.safe_load(RECIPE.read_text())


def make_data(args, batch_size: int, device_resident: bool = True):
    """The CIFAR-10 JPEG copy (extracted under ``--out``) or, with --tiny, synthetic 3x32x32 data."""
    common = dict(batch_size=batch_size, val_size=0, device_resident=device_resident,
                  augment=list(CIFAR10DataModule.default_augment))
    if args.tiny:
        return SyntheticDataModule(input_shape=(3, 32, 32), num_train=256, num_test=64, noise=0.3, **common)
    root = args.out / "data"
    if not (root / "cifar10-jpeg" / "test").is_dir():
        with tarfile.open(args.cifar_archive) as tar:
            tar.extractall(root, filter="data")
    return ImageFolderDataModule(str(root / "cifar10-jpeg"), num_workers=args.workers, mean=CIFAR10DataModule.mean,
                                 std=CIFAR10DataModule.std, **common)


def trainer(args, **kwargs) -> pl.Trainer:
    return pl.Trainer(accelerator="auto", devices=1, logger=CSVLogger(args.out, name="logs"),
                      default_root_dir=str(args.out / "runs"), enable_checkpointing=False,
                      enable_model_summary=False, inference_mode=False, num_sanity_val_steps=0, **kwargs)


def train_fast_at(args, figures: Figures):
    config = recipe()
    model_cfg = dict(config["model"])
    if args.tiny:
        model_cfg["backbone"] = "cifar_small"
    if args.lr is not None:
        model_cfg["lr"] = args.lr
    batch_size = args.batch_size or config["data"]["init_args"]["batch_size"]
    dm = make_data(args, batch_size)
    started = time.perf_counter()
    dm.setup("fit")
    dm.setup("test")
    decode_seconds = time.perf_counter() - started
    pl.seed_everything(0)
    model = AdversarialClassifier(**model_cfg, num_classes=dm.num_classes, mean=dm.mean, std=dm.std)
    timer = Timer()
    epochs = 1 if args.tiny else args.epochs or config["trainer"]["max_epochs"]
    precision = config["trainer"]["precision"]
    fit = trainer(args, max_epochs=epochs, precision=precision, limit_val_batches=0, callbacks=[timer],
                  enable_progress_bar=not args.tiny, limit_train_batches=2 if args.tiny else None)
    fit.fit(model, dm)
    figures.add("fast_at_training", {
        "recipe": str(RECIPE.relative_to(REPO)), "backbone": model_cfg["backbone"], "epochs": epochs,
        "batch_size": batch_size, "lr": model_cfg["lr"], "precision": precision,
        "channels_last": model_cfg.get("channels_last", False), "device_resident": True,
        "train_images": len(dm.dataset("train")), "decode_seconds": round(decode_seconds, 1),
        "train_seconds": round(timer.time_elapsed("train"), 1),
        "train_images_per_second": round(len(dm.dataset("train")) * epochs / max(timer.time_elapsed("train"), 1e-9)),
    })
    return model, dm


def robust_accuracy(args, model, dm, attacks: list, num_samples, batch_size: int) -> dict:
    """One RobustnessEvaluation at eps 8/255 (float32, the test split) through ``trainer.test``."""
    sweep = RobustnessEvaluation(attacks=attacks, epsilons=[EPS], split="test", num_samples=num_samples,
                                 batch_size=batch_size, run_on=["test_end"], masking_checks=False)
    trainer(args, callbacks=[sweep], enable_progress_bar=False).test(model, datamodule=dm, verbose=False)
    (result,) = sweep.results
    worst = next(r for r in result["rows"] if r["attack"] == "worst_case" and r["eps"] > 0)
    return {"samples": result["num_samples"], "clean_acc": round(result["clean_accuracy"], 4),
            "robust_acc": round(worst["accuracy"], 4), "seconds": result["seconds"],
            "samples_per_second": round(result["num_samples"] / max(result["seconds"], 1e-9), 1),
            "warnings": result["warnings"]}


def evaluate(args, model, dm, figures: Figures) -> None:
    pgd50 = robust_accuracy(args, model, dm, [{"name": "pgd", "steps": 50, "alpha": ALPHA}],
                            16 if args.tiny else None, 1000)
    figures.add("fast_at_pgd50", {**pgd50, "attack": "PGD-50, step 2/255, 1 restart, L-inf 8/255, float32"})
    try:
        import pyautoattack  # noqa: F401
    except ImportError as err:
        figures.add("fast_at_autoattack", {"not measured": f"pyautoattack not importable ({err}): pass --extra-path"})
        return
    n = 8 if args.tiny else args.autoattack_samples
    if n:
        figures.add("fast_at_autoattack", robust_accuracy(args, model, dm, [{"name": "autoattack", "version": "standard"}],
                                                          n, 500))


def _batches(dm, batch_size: int):
    """Endless full training batches, from the device-resident split as the recipe trains on them."""
    loader = dm.loader(dm.dataset("train"), shuffle=True, batch_size=batch_size)
    while True:
        yield from ((x, y) for x, y in loader if len(y) == batch_size)


def step_throughput(args, model, dm, figures: Figures) -> None:
    """Images per second of whole training steps (attack + forward + backward + optimiser step)."""
    device = model.device
    precision = recipe()["trainer"]["precision"]
    batch_size = args.batch_size or recipe()["data"]["init_args"]["batch_size"]
    batches = _batches(dm, 32 if args.tiny else batch_size)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    steps, warmup = (2, 1) if args.tiny else (args.steps, 5)
    model.train()
    results = {}
    for kind, spec in STEP_KINDS.items():
        objective = create_objective("clean" if spec is None else "adversarial")
        attack = None if spec is None else create_attack({**spec, "bn_mode": "train"})

        def step():
            x, y = next(batches)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision.startswith("bf16")):
                loss = objective(model, attack, x, y).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        for _ in range(warmup):
            step()
        _, seconds = timed_call(lambda: [step() for _ in range(steps)], device)
        results[kind] = seconds / steps
    ratio = results["pgd10"] / results["clean"]
    figures.add("step_throughput", {
        "batch_size": 32 if args.tiny else batch_size, "precision": precision, "timed_steps": steps,
        **{f"{k}_images_per_second": round((32 if args.tiny else batch_size) / s, 1) for k, s in results.items()},
        "pgd10_over_clean_step": round(ratio, 2), "bound": 11, "target": 9.9, "met": ratio <= 9.9,
    })


def versus_torchattacks(args, model, dm, figures: Figures) -> None:
    torchattacks = import_torchattacks(args.extra_path)
    net = model.net.eval()
    device = model.device
    x, y = next(iter(dm.loader(dm.dataset("test"), batch_size=16 if args.tiny else args.attack_batch)))
    x, y = x.to(device), y.to(device)
    iters = 5 if args.tiny else 100
    ours = {"PGD-20": create_attack({"name": "pgd", "eps": EPS, "alpha": ALPHA, "steps": 20, "seed": 0}),
            "PGD-20 bf16": create_attack({"name": "autocast", "attack": {"name": "pgd", "alpha": ALPHA, "steps": 20},
                                          "eps": EPS, "seed": 0}),
            f"APGD-CE-{iters}": create_attack({"name": "apgd_ce", "eps": EPS, "n_iter": iters, "seed": 0})}
    theirs = {}
    if torchattacks is not None:
        pgd = torchattacks.PGD(net, eps=EPS, alpha=ALPHA, steps=20, random_start=True)
        theirs = {"PGD-20": pgd, "PGD-20 bf16": pgd,
                  f"APGD-CE-{iters}": torchattacks.APGD(net, norm="Linf", eps=EPS, steps=iters, n_restarts=1, loss="ce")}
    rows = {"batch": len(y), "torchattacks": getattr(torchattacks, "__version__", "not importable: pass --extra-path")}
    for label, attack in ours.items():
        other = theirs.get(label)
        _, res = compare(label, lambda a=attack: a(net, x, y), None if other is None else (lambda a=other: a(x, y)),
                         net, x, y, 1 if args.tiny else 5, device)
        row = {"ours_ms": round(res["ours"]["ms"], 1), "ours_robust_acc": round(res["ours"]["acc"], 4)}
        if "torchattacks" in res:
            ta = res["torchattacks"]
            row.update(torchattacks_ms=round(ta["ms"], 1), torchattacks_robust_acc=round(ta["acc"], 4),
                       speedup=round(ta["ms"] / res["ours"]["ms"], 2))
        rows[label] = row
    figures.add("versus_torchattacks", rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_figures.{json,md}, logs and the data")
    parser.add_argument("--cifar-archive", type=Path, help="cifar10-jpeg.tar.gz (../shared/datasets)")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke settings: synthetic data, a small CNN, 2 steps")
    parser.add_argument("--extra-path", help="folder holding torchattacks and pyautoattack (appended to sys.path)")
    parser.add_argument("--epochs", type=int, help="override the recipe's 15")
    parser.add_argument("--batch-size", type=int, help="override the recipe's batch size")
    parser.add_argument("--lr", type=float, help="override the recipe's peak lr")
    parser.add_argument("--workers", type=int, default=16, help="JPEG decoding processes")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps of each kind")
    parser.add_argument("--attack-batch", type=int, default=1000, help="test images attacked in the torchattacks race")
    parser.add_argument("--autoattack-samples", type=int, default=1000, help="0: skip the reference AutoAttack")
    args = parser.parse_args(argv)
    if not args.tiny and not args.cifar_archive:
        parser.error("give --cifar-archive (the shared cifar10-jpeg.tar.gz), or --tiny for the CPU smoke run")
    if args.tiny:
        torch.set_num_threads(1)  # tiny passes: one intra-op thread is faster on a small, busy CPU
    if args.extra_path:
        sys.path.append(str(Path(args.extra_path).resolve()))  # at the end: never shadow the installed packages
    args.out.mkdir(parents=True, exist_ok=True)
    figures = Figures(args.out)
    cuda = torch.cuda.is_available()
    figures.add("environment", {"device": torch.cuda.get_device_name() if cuda else f"CPU ({platform.processor() or platform.machine()})",
                                "torch": torch.__version__, "lightning": pl.__version__,
                                "python": platform.python_version(), "tiny": args.tiny})
    started = time.perf_counter()
    model, dm = train_fast_at(args, figures)
    evaluate(args, model, dm, figures)
    step_throughput(args, model, dm, figures)
    versus_torchattacks(args, model, dm, figures)
    figures.add("total", {"seconds": round(time.perf_counter() - started, 1)})


if __name__ == "__main__":
    main()
