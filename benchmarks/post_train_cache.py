"""Post-train at inference: one fine-tune per class pair (cached) vs one per input (the authors' code).

A model is trained briefly (real MNIST from ../shared/datasets when present, else the
synthetic dataset), N test images are attacked with PGD on it, and the post-train
defence classifies them twice: with the per-pair cache, and with ``cache_size: 0``
(a fresh fine-tune for every input). It prints the samples, the distinct pairs, the
fine-tunes and seconds of each, the speed-up, and checks the predictions are equal
(each pair's fine-tune is deterministic, so they must be).

    python benchmarks/post_train_cache.py                       # 2 CPU cores: about 1 minute
    python benchmarks/post_train_cache.py --backbone mnist_cnn --steps 50 --samples-per-class 100 --device cuda
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from attacks import create_attack
from datamodules import MNISTDataModule, SyntheticDataModule
from datamodules.splits import labels_of
from lightning_modules import AdversarialClassifier
from lightning_modules.defences.post_train import PostTrain

SHARED = Path(os.environ.get("ADVTRAIN_SHARED_DATASETS", Path(__file__).resolve().parents[2] / "shared" / "datasets"))


def datamodule(test_size: int, train_size: int):
    if (SHARED / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
        return MNISTDataModule(data_dir=str(SHARED), download=False, val_size=1000, train_size=train_size,
                               test_size=test_size), "MNIST"
    return SyntheticDataModule(num_train=train_size + 1000, num_test=test_size, val_size=1000), "synthetic"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="mnist_small")
    parser.add_argument("--samples", type=int, default=200, help="test images defended")
    parser.add_argument("--train-size", type=int, default=10000, help="training images for the base model (1 epoch)")
    parser.add_argument("--eps", type=float, default=0.1, help="L-inf eps of the PGD inputs and of the neighbour search")
    parser.add_argument("--steps", type=int, default=20, help="fine-tuning steps per pair (paper: 50)")
    parser.add_argument("--samples-per-class", type=int, default=32, help="paper: 100")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    torch.manual_seed(0)
    dm, source = datamodule(args.samples, args.train_size)
    model = AdversarialClassifier(backbone=args.backbone, num_classes=dm.num_classes, mean=dm.mean, std=dm.std)
    model = model.to(args.device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for x, y in DataLoader(dm.dataset("train"), batch_size=128, shuffle=True):
        optimizer.zero_grad()
        F.cross_entropy(model(x.to(args.device)), y.to(args.device)).backward()
        optimizer.step()
    net = model.net.eval()
    x, y = (t.to(args.device) for t in next(iter(DataLoader(dm.dataset("test"), batch_size=args.samples))))
    pgd = {"name": "pgd", "eps": args.eps, "alpha": args.eps / 4, "steps": 20}
    x_adv = create_attack({**pgd, "seed": 0})(net, x, y)

    config = {"neighbour_attack": {**pgd, "random_start": False}, "steps": args.steps,
              "samples_per_class": args.samples_per_class}
    train, runs = dm.dataset("train"), {}
    for name, cache_size in (("per pair (cached)", 256), ("per input (no cache)", 0)):
        defence = PostTrain(net, train, {**config, "cache_size": cache_size}, labels=labels_of(train))
        original, x_neighbour = defence.neighbour_inputs(x_adv)
        neighbour = defence.neighbour_class(x_neighbour)
        start = time.perf_counter()
        predictions = defence.classify(x_adv, original, x_neighbour)
        if args.device == "cuda":
            torch.cuda.synchronize()
        runs[name] = (time.perf_counter() - start, defence.fine_tunes, predictions)
    pairs = {tuple(sorted(p)) for p in zip(original.tolist(), neighbour.tolist()) if p[0] != p[1]}

    with torch.no_grad():
        base = (net(x_adv).argmax(1) == y).float().mean().item()
    print(f"{source}, {args.backbone} (1 epoch on {args.train_size} images), {args.device}, "
          f"PGD-20 eps {args.eps:g} inputs; fine-tune: {args.steps} steps x {args.samples_per_class} images per class")
    print(f"samples: {args.samples}   distinct pairs: {len(pairs)}   inputs without a neighbour (no fine-tune): "
          f"{int((original == neighbour).sum())}")
    for name, (seconds, fine_tunes, predictions) in runs.items():
        accuracy = (predictions == y).float().mean().item()
        print(f"{name:22s} fine-tunes {fine_tunes:4d}   {seconds:8.2f} s   accuracy {accuracy:.3f} (base {base:.3f})")
    (cached, _, p_cached), (uncached, _, p_uncached) = runs.values()
    print(f"speed-up: {uncached / cached:.1f}x   predictions equal: {torch.equal(p_cached, p_uncached)}")


if __name__ == "__main__":
    main()
