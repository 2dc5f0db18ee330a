"""The reference AutoAttack's standard version vs ``autoattack_fast``, side by side, and where the
reference's time goes.

On each trained model (an advtrain checkpoint, at its eps) and the first ``--n`` test images,
in one run, one after the other on the same thread count:

1. the reference standard version (``{name: autoattack}``: pyautoattack's APGD-CE, APGD-T,
   FAB-T, Square), profiled per component: seconds, points it attacked, points it fooled,
   the model rows (forward passes x batch rows) it ran and the share of them spent on
   points that end robust (every component runs its whole budget on those; estimated as
   robust-at-the-end points x the component's forward calls, which always include them);
2. ``{name: autoattack_fast}`` (attacks/autoattack_fast.py), per stage the same numbers.

Then per model: robust accuracy of both, their seconds, the reference's time over the fast
mode's, the accuracy gap (fast - reference, points) and the per-sample disagreements (test
image indices, and which side fooled the image). Target: the gap within +-``--tolerance``
points (0.2) at a ratio >= 3. The profiling adds one forward pass per component call to the
reference's time (to count its successes); on a shared machine compare times as ratios only.

    python benchmarks/autoattack_fast.py --data-dir ../shared/datasets --cifar-dir <cifar10-jpeg> \\
        --model mnist_clean=<ckpt>:0.1 --model mnist_pgd_at=<ckpt>:0.3 \\
        --model cifar10_pgd_at=<ckpt>:8/255 --n 500 --threads 1

(models and data as for benchmarks/autoattack_validation.py).
"""
from __future__ import annotations

import sys
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.autoattack_validation import load, model_arguments, robust  # noqa: E402


class CountRows(nn.Module):
    """The model, counting forward calls and rows per label (the component running)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.label = "clean"
        self.calls: dict[str, int] = defaultdict(int)
        self.rows: dict[str, int] = defaultdict(int)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls[self.label] += 1
        self.rows[self.label] += x.shape[0]
        return self.model(x)


@contextmanager
def profiled_reference(counter: CountRows, x_all: torch.Tensor, profile: dict):
    """Patch pyautoattack's attacks so each call records its component's seconds, points in,
    points fooled (test-image indices) in ``profile``; the counter labels rows by component."""
    from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted
    from pyautoattack.fab_pt import FABAttack_PT
    from pyautoattack.square import SquareAttack

    index = {row.numpy().tobytes(): i for i, row in enumerate(x_all.flatten(1))}

    def label_of(attack) -> str:
        if isinstance(attack, APGDAttack_targeted):
            return "apgd-t"
        if isinstance(attack, APGDAttack):
            return f"apgd-{attack.loss}"
        if isinstance(attack, FABAttack_PT):
            return "fab-t" if attack.targeted else "fab"
        return "square"

    def wrap(perturb):
        def timed(self, x, y=None, *args, **kwargs):
            label = label_of(self)
            counter.label = label
            started = time.perf_counter()
            x_adv = perturb(self, x, y, *args, **kwargs)
            seconds = time.perf_counter() - started
            counter.label = "bookkeeping"
            with torch.no_grad():
                fooled = counter.model(x_adv).argmax(1) != y
            entry = profile.setdefault(label, {"seconds": 0.0, "points": 0, "fooled": []})
            entry["seconds"] += seconds
            entry["points"] += len(y)
            rows = x.detach().cpu().flatten(1)
            entry["fooled"] += [index[rows[i].numpy().tobytes()] for i in fooled.nonzero().flatten().tolist()]
            return x_adv
        return timed

    classes = (APGDAttack, APGDAttack_targeted, FABAttack_PT, SquareAttack)
    originals = {cls: cls.__dict__.get("perturb") for cls in classes}
    try:
        for cls in classes:
            cls.perturb = wrap(getattr(cls, "perturb"))
        yield
    finally:
        for cls, original in originals.items():
            if original is None:
                del cls.perturb
            else:
                cls.perturb = original


def reference_profiled(model, eps, x, y, seed):
    """The reference standard version with its per-component profile."""
    counter = CountRows(model).eval()
    profile: dict = {}
    with profiled_reference(counter, x, profile):
        correct, seconds, attack = robust(counter, {"name": "autoattack"}, eps, x, y, seed)
    robust_end = int(correct.sum())
    for label, entry in profile.items():
        entry["rows"] = counter.rows[label]
        entry["robust_rows"] = robust_end * counter.calls[label]
    return correct, seconds, profile, attack.messages


def print_profile(name, profile, total_seconds):
    print(f"  {name}: where the reference's time goes")
    print(f"  {'component':<10} {'seconds':>8} {'share':>6} {'points':>7} {'fooled':>7} {'rows':>10} "
          f"{'on robust':>9}")
    for label, entry in profile.items():
        share = entry["robust_rows"] / max(entry["rows"], 1)
        print(f"  {label:<10} {entry['seconds']:>8.1f} {entry['seconds'] / total_seconds:>6.1%} "
              f"{entry['points']:>7} {len(entry['fooled']):>7} {entry['rows']:>10} {share:>9.1%}")


FAST = {"name": "apgd_cascade", "version": "fast"}


def main(argv=None) -> int:
    parser = model_arguments(__doc__.split("\n")[0])
    parser.add_argument("--tolerance", type=float, default=0.2, help="points the answers may differ by")
    parser.add_argument("--ratio", type=float, default=3.0, help="reference time over the fast mode's, at least")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}; first {args.n} test images; seed {args.seed}; "
          f"fast mode: {FAST}")
    rows, failures = [], 0
    for spec in args.model:
        name, model, eps, x, y = load(spec, args.data_dir, args.cifar_dir, args.n)
        with torch.no_grad():
            clean = (model(x).argmax(1) == y).float().mean().item()
        ref, ref_s, profile, messages = reference_profiled(model, eps, x, y, args.seed)
        counter = CountRows(model).eval()
        fast, fast_s, attack = robust(counter, FAST, eps, x, y, args.seed)
        print_profile(name, profile, ref_s)
        fooled_by = attack.last_info["fooled_by"]
        stages = [s["name"] for s in attack.components()]
        print(f"  {name}: the fast mode, {fast_s:.1f} s, {sum(counter.rows.values())} model rows "
              f"(reference: {sum(e['rows'] for e in profile.values())}); fooled per stage: "
              + ", ".join(f"{stage} {int((fooled_by == i).sum())}" for i, stage in enumerate(stages)))
        for message in messages:
            print(f"    reference check: {message}")
        ref_acc, fast_acc = 100 * ref.float().mean().item(), 100 * fast.float().mean().item()
        ratio = ref_s / max(fast_s, 1e-9)
        allowed = int(args.tolerance * len(y) / 100 + 1e-9)  # images the answers may differ by
        ok = abs(int(fast.sum()) - int(ref.sum())) <= allowed and ratio >= args.ratio
        failures += not ok
        disagree = (ref != fast).nonzero().flatten().tolist()
        rows.append((name, eps, 100 * clean, ref_acc, fast_acc, ref_s, fast_s, ratio, ok,
                     [f"{i}:{'fast' if ref[i] else 'ref'}" for i in disagree]))
    print(f"\n{'model':<16} {'eps':>7} {'clean':>6} {'ref %':>7} {'fast %':>7} {'gap':>6} {'ref s':>8} "
          f"{'fast s':>8} {'ratio':>6}  ok  disagreements (image:side that fooled it)")
    for name, eps, clean, ref_acc, fast_acc, ref_s, fast_s, ratio, ok, disagree in rows:
        print(f"{name:<16} {eps:>7.4g} {clean:>6.1f} {ref_acc:>7.2f} {fast_acc:>7.2f} {fast_acc - ref_acc:>+6.2f} "
              f"{ref_s:>8.1f} {fast_s:>8.1f} {ratio:>5.2f}x {'yes' if ok else 'NO':>3}  {' '.join(disagree) or '-'}")
    print(f"{failures} model(s) outside the target (gap within +-{args.tolerance} points, ratio >= {args.ratio})")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
