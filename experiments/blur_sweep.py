"""Choose a blur filter as the blur-defence report does (Jézéquel 2019, section 3).

For each filter setting (Gaussian sigmas, median windows; sigma 0 is the undefended
baseline) a model with that preprocessing layer is trained from the same seed, then
scored on test images: clean accuracy, mean L2 norm of the successful perturbations of
the L2-normalised iterative targeted attack, and their product, the report's score
(see :mod:`callbacks.perturbation_score`). The best setting has the highest score.

    .venv/bin/python -m experiments.blur_sweep --data_dir /work/shared/datasets --download false \\
        --sigmas 0 0.5 1 1.5 --windows 3 5 --max_steps 300 --test_size 300 --output runs/blur_sweep.json

Budgets are small by default (a CPU run of a few minutes); raise --max_steps and
--test_size for real numbers.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import pytorch_lightning as pl
from tqdm.auto import tqdm

from datamodules.storage import write_atomically
from callbacks.perturbation_score import DEFAULT_ATTACK, DEFINITION, perturbation_score
from datamodules import CIFAR10DataModule, ClassificationDataModule, MNISTDataModule
from lightning_modules import AdversarialClassifier

DATASETS = {"mnist": (MNISTDataModule, "mnist_small"), "cifar10": (CIFAR10DataModule, "preact_resnet18")}


def blur_settings(sigmas: Sequence[float] = (), windows: Sequence[int] = ()) -> list[Optional[dict[str, Any]]]:
    """Preprocessing specs for the sweep; sigma 0 (or window 1) is the undefended baseline (None)."""
    settings: list[Optional[dict[str, Any]]] = []
    for sigma in sigmas:
        settings.append({"name": "gaussian", "sigma": float(sigma)} if sigma > 0 else None)
    for window in windows:
        settings.append({"name": "median", "window": int(window)} if window > 1 else None)
    return list({json.dumps(s): s for s in settings}.values())  # each setting once, in order


def setting_label(spec: Optional[dict[str, Any]]) -> str:
    if spec is None:
        return "none"
    return f"{spec['name']}(" + ", ".join(f"{k}={v:g}" for k, v in spec.items() if k != "name") + ")"


def train_model(datamodule: ClassificationDataModule, preprocessing: Optional[dict[str, Any]], backbone: str,
                max_steps: int, lr: float, seed: int, accelerator: str = "auto") -> AdversarialClassifier:
    """Clean training with the given preprocessing layer, from ``seed``, for ``max_steps`` steps (Adam, cosine)."""
    pl.seed_everything(seed, verbose=False)
    model = AdversarialClassifier(backbone=backbone, num_classes=datamodule.num_classes, mean=datamodule.mean,
                                  std=datamodule.std, preprocessing=preprocessing, optimizer="adam", lr=lr,
                                  weight_decay=0.0, lr_schedule="cosine")
    trainer = pl.Trainer(max_steps=max_steps, max_epochs=-1, accelerator=accelerator, devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, inference_mode=False)
    trainer.fit(model, datamodule)
    return model.eval()


def blur_sweep(datamodule: ClassificationDataModule, settings: Sequence[Optional[dict[str, Any]]],
               backbone: str = "mnist_small", max_steps: int = 300, lr: float = 2e-3,
               attack: dict[str, Any] = DEFAULT_ATTACK, seed: int = 0, accelerator: str = "auto",
               output: Optional[str] = None) -> dict[str, Any]:
    """Train and score one model per setting; returns (and writes to ``output``) the rows and the best setting."""
    rows = []
    for spec in tqdm(settings, desc="blur settings", dynamic_ncols=True):
        started = time.time()
        model = train_model(datamodule, spec, backbone, max_steps, lr, seed, accelerator)
        loader = datamodule.loader(datamodule.dataset("test"))
        result = perturbation_score(model, loader, attack, device=model.device)
        rows.append({"setting": setting_label(spec), "preprocessing": spec, **result,
                     "seconds": round(time.time() - started, 1)})
    scored = [r for r in rows if r["score"] is not None]
    best = max(scored, key=lambda r: r["score"])["setting"] if scored else None
    summary = {"definition": DEFINITION, "attack": dict(attack), "backbone": backbone, "max_steps": max_steps,
               "lr": lr, "seed": seed, "data": datamodule.describe(), "rows": rows, "best": best}
    if output:
        write_atomically(Path(output), lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=2)))
    return summary


def format_sweep(summary: dict[str, Any]) -> str:
    def fmt(v):
        return "n/a" if v is None else f"{v:.4f}"
    width = max(len(r["setting"]) for r in summary["rows"] + [{"setting": "setting"}])
    lines = [f"{'setting'.ljust(width)}  accuracy  mean L2   targets reached  score",
             *(f"{r['setting'].ljust(width)}  {fmt(r['accuracy'])}    {fmt(r['mean_l2'])}    "
               f"{r['successful']:>5}/{r['attacked']:<5}      {fmt(r['score'])}"
               + ("  <- best" if r["setting"] == summary["best"] else "") for r in summary["rows"])]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="mnist")
    parser.add_argument("--data_dir", default="data")
    parser.add_argument("--download", type=lambda s: s.lower() in ("1", "true", "yes"), default=True)
    parser.add_argument("--sigmas", type=float, nargs="*", default=[0.0, 0.5, 1.0, 1.5],
                        help="Gaussian sigmas (pixels); 0 = the undefended baseline")
    parser.add_argument("--windows", type=int, nargs="*", default=[3, 5], help="median windows (odd, pixels)")
    parser.add_argument("--backbone", default=None, help="default: mnist_small (MNIST), preact_resnet18 (CIFAR-10)")
    parser.add_argument("--max_steps", type=int, default=300, help="training steps per setting")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--train_size", type=int, default=None, help="training subset (default: all)")
    parser.add_argument("--test_size", type=int, default=500, help="test images scored per setting")
    parser.add_argument("--attack_steps", type=int, default=100, help="max steps of the targeted attack")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--output", default="runs/blur_sweep.json")
    args = parser.parse_args(argv)
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    cls, default_backbone = DATASETS[args.dataset]
    datamodule = cls(data_dir=args.data_dir, batch_size=args.batch_size, train_size=args.train_size,
                     test_size=args.test_size, seed=args.seed, download=args.download)
    summary = blur_sweep(datamodule, blur_settings(args.sigmas, args.windows), args.backbone or default_backbone,
                         args.max_steps, args.lr, {**DEFAULT_ATTACK, "max_steps": args.attack_steps}, args.seed,
                         args.accelerator, args.output)
    print(format_sweep(summary))
    print(f"best: {summary['best']}   (results in {args.output})")
    return summary


if __name__ == "__main__":
    main()
