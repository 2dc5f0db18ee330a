"""Our PGD and APGD-CE vs torchattacks' on the same model and batch, in one run.

Measured, on one trained model (``.net``: normaliser + backbone, [0, 1] pixels to logits)
and one fixed batch:

- PGD-20, L-inf, eps = 8/255, alpha = 2/255, random start:
  ``create_attack({"name": "pgd", "eps": 8/255, "alpha": 2/255, "steps": 20, "seed": 0})``
  vs ``torchattacks.PGD(model, eps=8/255, alpha=2/255, steps=20, random_start=True)``;
- the same PGD-20 with ``early_stop: true`` (evaluation mode: a sample stops being attacked
  at the first iterate that fools the model) vs the same torchattacks.PGD: it does
  less work the more samples fall early, and is never weaker along the same path;
- the same PGD-20 with the model under bfloat16 autocast
  (``{"name": "autocast", "attack": {"name": "pgd", ...}}``: perturbation, projection and
  loss in float32) vs the same float32 torchattacks.PGD, each as run by default: faster
  where the hardware has bfloat16 units (AVX-512 BF16/AMX CPUs, tensor-core GPUs); its
  robust accuracy is scored in float32 like every other row;
- APGD-CE, L-inf, eps = 8/255, one restart, N iterations (``--apgd-steps``):
  ``create_attack({"name": "apgd_ce", "eps": 8/255, "n_iter": N})``
  vs ``torchattacks.APGD(model, norm="Linf", eps=8/255, steps=N, n_restarts=1, loss="ce")``.

For each: milliseconds per batch (median over ``--repeats`` timed calls after one warm-up
call each; ours and torchattacks' calls alternate so a busy machine slows both alike;
CUDA is synchronised around every timed call), the speed ratio torchattacks / ours
against its target (>= 1.3x for PGD, >= 1.0x for APGD), and the robust accuracy each
attack leaves on the batch (from the warm-up call), side by side: ours must be equal or
lower (a stronger or equally strong attack); the script prints whether it is, and the
largest perturbation of each (must be <= eps). ``--eps`` changes the radius of both (the
default is the 8/255 above; on MNIST a clean model keeps most of its accuracy there).

The model: ``--ckpt`` (an advtrain checkpoint) if given, else ``--backbone`` trained clean
for ``--train-steps`` (capped at ``--train-seconds``) on real MNIST (``--data-dir``, read
from <dir>/MNIST/raw) or on SyntheticDataModule data shaped ``--shape`` (``--synthetic``). Without ``--data-dir`` the
shared MNIST copy the tests use (``$ADVTRAIN_SHARED_DATASETS``, default ../shared/datasets)
is used when present: on synthetic data a clean model is robust at 8/255 almost everywhere,
so the accuracy comparison says little there. The batch is the first ``--batch-size`` test
images of the same data.

torchattacks is NOT a dependency of advtrain. Install it into a benchmark-only folder and
point the script at it (the folder is appended to the END of sys.path, so the venv's own
packages, numpy included, keep precedence):

    pip install --no-deps --target /tmp/ta torchattacks scipy   # scipy only if the venv lacks it
    python benchmarks/attacks_vs_torchattacks.py --torchattacks-path /tmp/ta
    python benchmarks/attacks_vs_torchattacks.py --torchattacks-path /tmp/ta --data-dir ../shared/datasets
    python benchmarks/attacks_vs_torchattacks.py --torchattacks-path /tmp/ta --ckpt runs/.../last.ckpt \\
        --data-dir ../shared/datasets

Without torchattacks it times and reports our attacks alone and says how to install it.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
# where the tests look for a shared real-data copy (tests/conftest.py)
SHARED_DATASETS = Path(os.environ.get("ADVTRAIN_SHARED_DATASETS", REPO.parent / "shared" / "datasets"))
if str(REPO) not in sys.path:  # run as a file from anywhere: the repo's packages first
    sys.path.insert(0, str(REPO))

from attacks import as_float, create_attack  # noqa: E402
from lightning_modules import AdversarialClassifier  # noqa: E402
from lightning_modules.checkpoints import load_classifier  # noqa: E402

ALPHA, PGD_STEPS = 2 / 255, 20
TARGETS = {"PGD": 1.3, "APGD": 1.0}  # by the label's first word


def import_torchattacks(extra_path: str | None):
    """torchattacks if importable (after appending ``extra_path`` to the END of sys.path), else None."""
    if extra_path:
        path = str(Path(extra_path).expanduser().resolve())
        if path not in sys.path:
            sys.path.append(path)  # at the end: never shadow the venv's numpy/torch
    try:
        import torchattacks
    except ImportError as err:
        try:
            import scipy  # noqa: F401
            scipy_hint = ""
        except ImportError:
            scipy_hint = " scipy"
        where = extra_path or "/tmp/ta"
        print(f"torchattacks not importable ({err}): skipping the comparison, timing our attacks only.")
        print("  It is not an advtrain dependency; install it into a benchmark-only folder and pass that folder:")
        print(f"    pip install --no-deps --target {where} torchattacks{scipy_hint}")
        print(f"    python {__file__} --torchattacks-path {where}")
        return None
    return torchattacks


def make_data(args, shape):
    if args.data_dir:
        from datamodules import MNISTDataModule
        if shape != (1, 28, 28):
            raise SystemExit(f"--data-dir reads MNIST (1,28,28); got --shape {args.shape}")
        dm = MNISTDataModule(data_dir=args.data_dir, batch_size=128, val_size=0, download=False,
                             test_size=max(args.batch_size, 1))
    else:
        from datamodules import SyntheticDataModule
        dm = SyntheticDataModule(input_shape=shape, num_train=4096, num_test=args.batch_size, noise=args.noise,
                                 batch_size=128, val_size=0)
    return dm


def quick_train(model, dm, max_steps, seconds, device):
    """Clean training (Adam, lr 1e-3, batches of 128) for ``max_steps`` steps or about ``seconds``,
    whichever comes first; returns (steps, final batch accuracy)."""
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    start, steps, acc = time.perf_counter(), 0, float("nan")
    while True:
        for x, y in dm.train_dataloader():
            x, y = x.to(device), y.to(device)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
            acc = (logits.argmax(1) == y).float().mean().item()
            if steps >= max_steps or time.perf_counter() - start > seconds:
                return steps, acc


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed_call(fn, device):
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - start


def compare(label, ours_fn, theirs_fn, net, x, y, repeats, device):
    """Warm up both, time them alternately, return a result dict."""
    results = {}
    fns = {"ours": ours_fn}
    if theirs_fn is not None:
        fns["torchattacks"] = theirs_fn
    for who, fn in fns.items():  # warm-up; its output gives the robust accuracy
        x_adv, _ = timed_call(fn, device)
        with torch.no_grad():
            acc = (net(x_adv).argmax(1) == y).float().mean().item()
        results[who] = {"acc": acc, "linf": (x_adv - x).abs().max().item(), "times": []}
    for r in range(repeats):
        order = list(fns) if r % 2 == 0 else list(reversed(fns))
        for who in order:
            _, seconds = timed_call(fns[who], device)
            results[who]["times"].append(seconds)
    for res in results.values():
        res["ms"] = statistics.median(res["times"]) * 1e3
    return label, results


def report(label, results, n):
    target = TARGETS[label.split("-")[0]]
    ours = results["ours"]
    print(f"\n{label}")
    for who, res in results.items():
        print(f"  {who:<13} {res['ms']:9.1f} ms/batch   robust acc {res['acc'] * 100:6.2f}% "
              f"({round(res['acc'] * n)}/{n})   max |x_adv - x| = {res['linf'] * 255:.3f}/255")
    if "torchattacks" not in results:
        return None
    theirs = results["torchattacks"]
    ratio = theirs["ms"] / ours["ms"]
    met = ratio >= target
    stronger = ours["acc"] <= theirs["acc"]
    print(f"  speed ratio torchattacks/ours: {ratio:.2f}x   (target >= {target:.1f}x: {'met' if met else 'NOT met'})")
    print(f"  robust accuracy ours {ours['acc'] * 100:.2f}% vs torchattacks {theirs['acc'] * 100:.2f}%: "
          f"ours {'equal or lower: OK' if stronger else 'HIGHER: our attack is weaker here'}")
    return met and stronger


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="mnist_cnn")
    parser.add_argument("--shape", default="1,28,28", help="C,H,W of the (synthetic) images")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per attack (after one warm-up call)")
    parser.add_argument("--apgd-steps", type=int, default=100, help="N, APGD iterations (AutoAttack uses 100)")
    parser.add_argument("--eps", default="8/255",
                        help="L-inf radius of both attacks (default 8/255; MNIST papers use 0.3, try 0.1)")
    parser.add_argument("--ckpt", default=None, help="advtrain checkpoint (lightning_modules.checkpoints.load_classifier)")
    parser.add_argument("--data-dir", default=None,
                        help="real MNIST from <dir>/MNIST/raw (default: the shared copy the tests use, "
                             f"{SHARED_DATASETS}, when present; else synthetic data)")
    parser.add_argument("--synthetic", action="store_true", help="use SyntheticDataModule even if MNIST is present")
    parser.add_argument("--train-steps", type=int, default=100,
                        help="clean training steps when no --ckpt (the same model every run)")
    parser.add_argument("--train-seconds", type=float, default=30.0, help="... or at most this long")
    parser.add_argument("--noise", type=float, default=0.3, help="noise of the synthetic data (harder = lower acc)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--torchattacks-path", default=None,
                        help="folder with torchattacks (pip install --no-deps --target DIR torchattacks), "
                             "appended to the end of sys.path")
    args = parser.parse_args()

    torchattacks = import_torchattacks(args.torchattacks_path)
    if args.synthetic:
        args.data_dir = None
    elif args.data_dir is None and (SHARED_DATASETS / "MNIST" / "raw" / "t10k-images-idx3-ubyte").exists():
        args.data_dir = str(SHARED_DATASETS)
    if args.threads:
        torch.set_num_threads(args.threads)
    shape = tuple(int(s) for s in args.shape.split(","))
    eps = as_float(args.eps)
    device = torch.device(args.device)
    torch.manual_seed(0)

    dm = make_data(args, shape)
    if args.ckpt:
        model = load_classifier(args.ckpt).to(device)
        source = f"checkpoint {args.ckpt} (backbone {model.hparams.backbone})"
        if not args.data_dir:
            print("note: --ckpt without --data-dir attacks it on synthetic images; pass --data-dir for real MNIST")
    else:
        model = AdversarialClassifier(backbone=args.backbone, num_classes=dm.num_classes, mean=dm.mean,
                                      std=dm.std).to(device)
        start = time.perf_counter()
        steps, train_acc = quick_train(model, dm, args.train_steps, args.train_seconds, device)
        source = (f"{args.backbone} trained clean for {steps} steps of 128 ({time.perf_counter() - start:.1f}s, "
                  f"last batch acc {train_acc * 100:.1f}%)")
    net = model.net.eval()
    dm.setup("test")
    x, y = next(iter(dm.loader(dm.dataset("test"), batch_size=args.batch_size)))
    x, y = x.to(device), y.to(device)
    n = y.numel()
    with torch.no_grad():
        clean = (net(x).argmax(1) == y).float().mean().item()

    data = f"MNIST test ({args.data_dir})" if args.data_dir else f"synthetic {shape} (noise {args.noise})"
    print(f"device={device} threads={torch.get_num_threads()} batch={n} data={data}")
    print(f"model: {source}; clean accuracy on the batch {clean * 100:.2f}%")
    print(f"torchattacks {torchattacks.__version__ if torchattacks else 'not available'}; "
          f"eps={args.eps} ({eps:.4f}), alpha=2/255, repeats={args.repeats} (median ms/batch after 1 warm-up call)")

    pgd = create_attack({"name": "pgd", "eps": eps, "alpha": ALPHA, "steps": PGD_STEPS, "seed": 0})
    pgd_early = create_attack({"name": "pgd", "eps": eps, "alpha": ALPHA, "steps": PGD_STEPS, "seed": 0,
                               "early_stop": True})
    pgd_bf16 = create_attack({"name": "autocast", "attack": {"name": "pgd", "alpha": ALPHA, "steps": PGD_STEPS},
                              "eps": eps, "seed": 0})
    apgd = create_attack({"name": "apgd_ce", "eps": eps, "n_iter": args.apgd_steps, "seed": 0})
    ta_pgd = ta_apgd = None
    if torchattacks is not None:
        ta_pgd = torchattacks.PGD(net, eps=eps, alpha=ALPHA, steps=PGD_STEPS, random_start=True)
        ta_apgd = torchattacks.APGD(net, norm="Linf", eps=eps, steps=args.apgd_steps, n_restarts=1, loss="ce")

    verdicts = []
    for label, ours, theirs in (
        (f"PGD-{PGD_STEPS} L-inf (alpha 2/255, random start)", pgd, ta_pgd),
        (f"PGD-{PGD_STEPS} L-inf, ours with early_stop", pgd_early, ta_pgd),
        (f"PGD-{PGD_STEPS} L-inf, ours under bfloat16 autocast (torchattacks float32)", pgd_bf16, ta_pgd),
        (f"APGD-CE L-inf ({args.apgd_steps} iterations, 1 restart)", apgd, ta_apgd),
    ):
        _, results = compare(label, lambda a=ours: a(net, x, y),
                             None if theirs is None else (lambda a=theirs: a(x, y)), net, x, y, args.repeats, device)
        verdicts.append(report(label, results, n))
    if torchattacks is not None:
        print(f"\nall targets met and ours never weaker: {'yes' if all(verdicts) else 'no'}")


if __name__ == "__main__":
    main()
