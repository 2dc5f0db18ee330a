"""The speed options of a training step side by side, one run: bf16 autocast (``--trainer.precision
bf16-mixed``), ``model.channels_last`` and ``model.compile``, each alone and combined, against
float32 eager in the default layout.

For each configuration: the median milliseconds of a clean training step and of a PGD-10
adversarial training step (attack with float32 perturbation and projection, forward, backward,
SGD step; ``lightning_modules.objectives``) over ``--repeats`` timed steps after warm-up (compiled
models warm up through their compilation first). The configurations take turns step by step, so a
busy machine slows all alike; the ratio to float32 eager is printed (> 1: faster).

    python benchmarks/speed_options.py --backbone preact_resnet18 --shape 3,32,32 --batch-size 128
    python benchmarks/speed_options.py --backbone mnist_small --shape 1,28,28 --no-compile
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from attacks import create_attack  # noqa: E402
from lightning_modules import AdversarialClassifier, create_objective  # noqa: E402

CONFIGS = {  # name: (bf16 autocast, channels_last, compile)
    "float32": (False, False, False), "bf16": (True, False, False),
    "channels_last": (False, True, False), "bf16 + channels_last": (True, True, False),
    "compile": (False, False, True), "bf16 + compile": (True, False, True),
    "bf16 + channels_last + compile": (True, True, True),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="preact_resnet18")
    parser.add_argument("--shape", default="3,32,32")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps of each kind first (compilation)")
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile configurations")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    shape = tuple(int(s) for s in args.shape.split(","))
    device = torch.device(args.device)
    configs = {k: v for k, v in CONFIGS.items() if not (args.no_compile and v[2])}
    torch.manual_seed(0)
    x = torch.rand(args.batch_size, *shape, device=device)
    y = torch.randint(0, 10, (args.batch_size,), device=device)
    attack = create_attack({"name": "pgd", "eps": 8 / 255, "alpha": 2 / 255, "steps": 10, "seed": 0})
    kinds = {"clean": create_objective("clean"), "PGD-10 AT": create_objective("adversarial")}

    steps = {}
    for name, (bf16, channels_last, compiled) in configs.items():
        torch.manual_seed(0)
        model = AdversarialClassifier(backbone=args.backbone, num_classes=10, mean=(0.5,) * shape[0],
                                      std=(0.25,) * shape[0], channels_last=channels_last, compile=compiled)
        model = model.to(device).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        for kind, objective in kinds.items():
            def step(model=model, optimizer=optimizer, objective=objective, bf16=bf16):
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    loss = objective(model, attack, x, y).loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            steps[name, kind] = step

    times = {key: [] for key in steps}
    for key, step in steps.items():
        started = time.perf_counter()
        for _ in range(args.warmup):
            step()
        print(f"warm-up {key[0]:<32} {key[1]:<10} {time.perf_counter() - started:7.1f} s", flush=True)
    for _ in range(args.repeats):
        for key, step in steps.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[key].append(time.perf_counter() - started)

    print(f"\ndevice={device} backbone={args.backbone} shape={shape} batch={args.batch_size} "
          f"threads={torch.get_num_threads()} repeats={args.repeats} (median ms per training step)")
    print(f"{'configuration':<32}" + "".join(f"{kind:>14}{'x fp32':>8}" for kind in kinds))
    for name in configs:
        row = f"{name:<32}"
        for kind in kinds:
            ms = statistics.median(times[name, kind]) * 1e3
            base = statistics.median(times["float32", kind]) * 1e3
            row += f"{ms:14.1f}{base / ms:8.2f}"
        print(row)


if __name__ == "__main__":
    main()
