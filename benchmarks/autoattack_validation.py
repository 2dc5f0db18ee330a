"""Our APGD components and cascade vs the reference AutoAttack (pyautoattack), side by side.

On each trained model (an advtrain checkpoint, at its eps) and the same clean-correct test
images, in one run:

- our ``apgd_ce`` vs the reference's APGD-CE  (``{name: autoattack, components: [apgd-ce]}``:
  the standard version's settings, 100 iterations, one restart);
- our ``apgd_t`` vs the reference's APGD-T     (9 targets x 100 iterations);
- our ``apgd_cascade`` (standard) vs the reference standard version (APGD-CE, APGD-T,
  FAB-T, Square).

For each pair it prints robust accuracy over the first ``--n`` test images (clean-wrong
images count as non-robust), seconds, the reference's time over ours, the samples on which
they disagree, and whether ours is within ``--tolerance`` points of the reference (ours may
be lower, never higher by more). Both sides run in this process, one after the other, on
the same thread count, with parameters frozen (``attacks.attack_mode``); on a shared
machine compare times as ratios only.

    python benchmarks/autoattack_validation.py --data-dir ../shared/datasets \\
        --model mnist_clean=/work/models/mnist_clean/checkpoints/x.ckpt:0.3 \\
        --model mnist_pgd_at=/work/models/mnist_pgd_at/checkpoints/x.ckpt:0.3 \\
        --model cifar10_pgd_at=/work/models/cifar10_pgd_at/checkpoints/x.ckpt:8/255 \\
        --cifar-dir /tmp/cifar10-jpeg --n 500

MNIST comes from ``--data-dir`` (``<dir>/MNIST/raw``); a model with 3 input channels is
evaluated on the CIFAR-10 JPEG copy in ``--cifar-dir`` (``test/<class>/*.jpg``, extracted
from ../shared/datasets/cifar10-jpeg.tar.gz).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attacks import as_float, create_attack  # noqa: E402

PAIRS = [
    ("APGD-CE", {"name": "apgd_ce"}, {"name": "autoattack", "components": ["apgd-ce"]}),
    ("APGD-T", {"name": "apgd_t"}, {"name": "autoattack", "components": ["apgd-t"]}),
    ("cascade / standard", {"name": "apgd_cascade", "version": "standard"}, {"name": "autoattack"}),
]


def load(spec: str, data_dir: str, cifar_dir: str | None, n: int):
    """``name=checkpoint:eps`` -> (name, model, eps, first n test images, labels)."""
    from lightning_modules.checkpoints import load_classifier

    name, _, rest = spec.partition("=")
    ckpt, _, eps = rest.rpartition(":")
    model = load_classifier(ckpt)
    if len(model.hparams.mean) == 1:
        from datamodules import MNISTDataModule

        data = MNISTDataModule(data_dir=data_dir, download=False)
    else:
        from datamodules import ImageFolderDataModule

        if cifar_dir is None:
            raise SystemExit(f"{name}: a 3-channel model needs --cifar-dir (the extracted cifar10-jpeg folder)")
        data = ImageFolderDataModule(data_dir=cifar_dir, mean=model.hparams.mean, std=model.hparams.std)
    test = data.dataset("test")
    x = torch.stack([test[i][0] for i in range(n)])
    y = torch.tensor([int(test[i][1]) for i in range(n)])
    return name, model, as_float(eps), x, y


def robust(model, attack_spec, eps, x, y, seed):
    """Per-sample robustness (bool, over all of x) under one attack, its seconds and the attack
    (its ``last_info``; the reference's warnings in ``messages``)."""
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    idx = correct.nonzero().flatten()
    attack = create_attack({**attack_spec, "eps": eps, "seed": seed})
    started = time.perf_counter()
    x_adv = attack(model, x[idx], y[idx])
    seconds = time.perf_counter() - started
    with torch.no_grad():
        correct[idx] = model(x_adv).argmax(1) == y[idx]
    return correct, seconds, attack


def model_arguments(description: str) -> argparse.ArgumentParser:
    """The options of the side-by-side benchmarks: models, data, images, seed, threads."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", action="append", required=True, help="name=checkpoint:eps (repeatable)")
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "datasets"))
    parser.add_argument("--cifar-dir", default=None)
    parser.add_argument("--n", type=int, default=500, help="first N test images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    return parser


def main(argv=None) -> int:
    parser = model_arguments(__doc__.split("\n")[0])
    parser.add_argument("--tolerance", type=float, default=0.5, help="points ours may exceed the reference by")
    parser.add_argument("--pairs", default="APGD-CE,APGD-T,cascade / standard")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    wanted = [p.strip() for p in args.pairs.split(",")]
    print(f"torch threads: {torch.get_num_threads()}; first {args.n} test images; seed {args.seed}")
    header = f"{'model':<16} {'eps':>7} {'attack':<19} {'ours %':>7} {'ref %':>7} {'diff':>6} " \
             f"{'ours s':>8} {'ref s':>8} {'ref/ours':>8} {'disagree':>8}  ok"
    print(header)
    failures = 0
    for spec in args.model:
        name, model, eps, x, y = load(spec, args.data_dir, args.cifar_dir, args.n)
        with torch.no_grad():
            clean = (model(x).argmax(1) == y).float().mean().item()
        print(f"{name:<16} {eps:>7.4g} {'clean':<19} {100 * clean:>7.2f}")
        for label, ours_spec, ref_spec in PAIRS:
            if label not in wanted:
                continue
            ours, ours_s, _ = robust(model, ours_spec, eps, x, y, args.seed)
            ref, ref_s, reference = robust(model, ref_spec, eps, x, y, args.seed)
            ours_acc, ref_acc = 100 * ours.float().mean().item(), 100 * ref.float().mean().item()
            ok = ours_acc <= ref_acc + args.tolerance
            failures += not ok
            print(f"{name:<16} {eps:>7.4g} {label:<19} {ours_acc:>7.2f} {ref_acc:>7.2f} {ours_acc - ref_acc:>+6.2f} "
                  f"{ours_s:>8.1f} {ref_s:>8.1f} {ref_s / max(ours_s, 1e-9):>7.2f}x {int((ours != ref).sum()):>8}  "
                  f"{'yes' if ok else 'NO'}", flush=True)
            for message in reference.messages:
                print(f"    reference check: {message}")
    print(f"{failures} pair(s) outside the target (ours <= reference + {args.tolerance} points)")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
