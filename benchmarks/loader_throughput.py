"""Images/s delivered by each datamodule's train loader, next to a training step's images/s.

For MNIST, CIFAR-10 (the JPEG copy through the image-folder datamodule), Cats vs Dogs and
Tiny ImageNet, lazily decoded and ``in_memory``, it times: the datamodule's setup (file
scan, and the one-off decode with ``in_memory``), the train loader's images/s over
``--batches`` batches, the paper's augmentation set on those batches (on ``--device``),
and one clean training step of a small AdversarialClassifier at the same batch size.
``loader/step`` > 1 means the loader keeps up with training; ``+aug`` is what the
augmentations add to the step's time (they run in the training process, on the device).

The shared archives (../shared/datasets, see its README) are extracted into a temp folder,
limited to ``--per-class`` images per class and split so a run takes a few minutes.

    python benchmarks/loader_throughput.py --batches 20 --workers 2
"""
from __future__ import annotations

import argparse
import tarfile
import tempfile
import time
from pathlib import Path

import torch

from datamodules import (CatsVsDogsDataModule, ImageFolderDataModule, MNISTDataModule, TinyImageNetDataModule,
                         create_augmentations)
from lightning_modules import AdversarialClassifier
from lightning_modules.objectives import create_objective

REPO = Path(__file__).resolve().parents[1]
PAPER_AUGMENT = [{"name": "crop", "padding": 4}, {"name": "flip"}, {"name": "rotation", "degrees": 15},
                 {"name": "scale", "zoom": [0.9, 1.1]}, {"name": "brightness", "delta": 0.1},
                 {"name": "noise", "std": 0.02}]


def extract(archive: Path, into: Path, per_class: int) -> None:
    """Extract ``archive``, keeping the first ``per_class`` images of every folder (all of
    Tiny ImageNet's val/images: its annotation file lists them all)."""
    kept: dict[str, int] = {}
    with tarfile.open(archive) as tar:
        members = []
        for m in tar.getmembers():
            folder = m.name.rsplit("/", 1)[0]
            if m.isfile() and m.name.lower().endswith((".jpg", ".jpeg", ".png")) and not folder.endswith("val/images"):
                if kept.get(folder, 0) >= per_class:
                    continue
                kept[folder] = kept.get(folder, 0) + 1
            members.append(m)
        if hasattr(tarfile, "data_filter"):
            tar.extractall(into, members, filter="data")
        else:
            tar.extractall(into, members)


def loader_rate(dm, batches: int) -> float:
    """Images/s of the train loader over ``batches`` batches (after one warm-up batch; a
    short split is run for several epochs, epoch starts included)."""
    loader = dm.train_dataloader()
    it = iter(loader)
    next(it)
    n, start = 0, time.perf_counter()
    for _ in range(batches):
        try:
            x, _ = next(it)
        except StopIteration:
            it = iter(loader)
            x, _ = next(it)
        n += len(x)
    return n / (time.perf_counter() - start)


def timed_rate(fn, n: int, repeats: int, device: str) -> float:
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return n * repeats / (time.perf_counter() - start)


def step_rate(backbone: str, shape, num_classes: int, batch_size: int, device: str, repeats: int) -> float:
    """Images/s of one clean training step (forward, backward, SGD update)."""
    torch.manual_seed(0)
    model = AdversarialClassifier(backbone=backbone, num_classes=num_classes, mean=(0.5,) * shape[0],
                                  std=(0.25,) * shape[0]).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.rand(batch_size, *shape, device=device)
    y = torch.randint(0, num_classes, (batch_size,), device=device)
    clean = create_objective("clean")

    def step():
        opt.zero_grad(set_to_none=True)
        clean(model, None, x, y).loss.backward()
        opt.step()
    return timed_rate(step, batch_size, repeats, device)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", default=str(REPO.parent / "shared" / "datasets"))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--batches", type=int, default=20, help="timed loader batches per row")
    parser.add_argument("--workers", type=int, default=2, help="loader workers of the lazy rows")
    parser.add_argument("--per-class", type=int, default=300, help="images extracted per class folder")
    parser.add_argument("--train-size", type=int, default=5000, help="training images kept per dataset")
    parser.add_argument("--step-repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    shared = Path(args.shared)
    common = {"batch_size": args.batch_size, "val_size": 200, "train_size": args.train_size}

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        for archive in ("cifar10-jpeg.tar.gz", "PetImages.tar.gz", "tiny-imagenet-200.tar.gz"):
            if (shared / archive).is_file():
                extract(shared / archive, tmp, args.per_class)
        print(f"extracted {args.per_class} images per class folder into {tmp} in {time.perf_counter() - start:.1f} s")

        datasets = {  # name: (factory(**options), step backbone)
            "MNIST": (lambda **kw: MNISTDataModule(str(shared), download=False, **common, **kw), "mnist_cnn"),
            "CIFAR-10 JPEG": (lambda **kw: ImageFolderDataModule(str(tmp / "cifar10-jpeg"), **common, **kw),
                              "preact_resnet18"),
            "Cats vs Dogs 64px": (lambda **kw: CatsVsDogsDataModule(str(tmp), image_size=64, batch_size=args.batch_size,
                                                                    train_size=args.train_size, **kw), "resnet18"),
            "Tiny ImageNet": (lambda **kw: TinyImageNetDataModule(str(tmp), **common, **kw), "resnet18"),
        }
        rows, steps = [], {}
        for name, (make, backbone) in datasets.items():
            modes = [("lazy", {"num_workers": 0}), ("lazy", {"num_workers": args.workers}),
                     ("in_memory", {"num_workers": 0, "in_memory": True})]
            if name == "MNIST":  # already held in memory as uint8
                modes = [("memory", {"num_workers": 0})]
            for mode, options in modes:
                try:
                    t0 = time.perf_counter()
                    dm = make(**options)
                    dm.setup("fit")
                    setup_s = time.perf_counter() - t0
                except FileNotFoundError as err:
                    print(f"skip {name}: {str(err).splitlines()[0]}")
                    break
                rate = loader_rate(dm, args.batches)
                if backbone not in steps or steps[backbone][0] != dm.input_shape:
                    steps[backbone] = (dm.input_shape, step_rate(backbone, dm.input_shape, dm.num_classes,
                                                                 args.batch_size, args.device, args.step_repeats))
                step = steps[backbone][1]
                augment = create_augmentations(PAPER_AUGMENT)
                x = torch.rand(args.batch_size, *dm.input_shape, device=args.device)
                aug = timed_rate(lambda: augment(x), args.batch_size, 5, args.device)
                rows.append((name, mode, options["num_workers"], len(dm.dataset("train")), setup_s, rate, aug,
                             f"{backbone} {step:.0f}", rate / step, 100 * step / aug))

    print(f"\ndevice={args.device} batch={args.batch_size} threads={torch.get_num_threads()} "
          f"augment=crop4+flip+rotation15+scale0.9-1.1+brightness0.1+noise0.02")
    header = ("dataset", "mode", "workers", "train imgs", "setup s", "loader img/s", "augment img/s",
              "clean step img/s", "loader/step", "+aug %")
    table = [header] + [(r[0], r[1], str(r[2]), str(r[3]), f"{r[4]:.1f}", f"{r[5]:.0f}", f"{r[6]:.0f}", r[7],
                         f"{r[8]:.1f}", f"{r[9]:.0f}") for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for k, row in enumerate(table):
        print("| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |")
        if k == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


if __name__ == "__main__":
    main()
