"""PGD-K adversarial training step vs clean training step, same model and batch, one run.

Each PGD step costs one forward and one input-gradient backward, so a PGD-K training
step should cost at most K + 1 clean steps. advtrain freezes the parameters during the
attack, so attack steps skip weight-gradient work; the "naive" column keeps parameter
gradients on during the attack (as a Lightning step that just calls backward would) to
show what that saves.

    python benchmarks/pgd_training_step.py --backbone mnist_cnn --steps 10
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from attacks import create_attack
from lightning_modules import AdversarialClassifier
from lightning_modules.objectives import create_objective


def naive_pgd(model, x, y, eps, alpha, steps):
    """PGD with parameter gradients left on: every backward also computes weight gradients."""
    delta = (torch.rand_like(x) * 2 - 1) * eps
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = F.cross_entropy(model((x + delta).clamp(0, 1)), y, reduction="sum")
        loss.backward()
        delta = (delta + alpha * delta.grad.sign()).clamp(-eps, eps).detach()
    model.zero_grad(set_to_none=True)
    return (x + delta).clamp(0, 1)


def timed(fn, repeats):
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="mnist_cnn")
    parser.add_argument("--shape", default="1,28,28")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10, help="K, the PGD steps")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    shape = tuple(int(s) for s in args.shape.split(","))
    torch.manual_seed(0)
    model = AdversarialClassifier(backbone=args.backbone, num_classes=10, mean=(0.5,) * shape[0],
                                  std=(0.25,) * shape[0]).to(args.device).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.rand(args.batch_size, *shape, device=args.device)
    y = torch.randint(0, 10, (args.batch_size,), device=args.device)
    eps, k = 0.3, args.steps
    attack = create_attack({"name": "pgd", "eps": eps, "steps": k, "seed": 0})

    def step(objective):
        opt.zero_grad(set_to_none=True)
        objective(model, attack, x, y).loss.backward()
        opt.step()

    def naive_step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(naive_pgd(model, x, y, eps, attack.step_size(), k)), y).backward()
        opt.step()

    # the objectives the LightningModule runs (adversarial also logs clean accuracy: one extra forward)
    clean = timed(lambda: step(create_objective("clean")), args.repeats)
    ours = timed(lambda: step(create_objective("adversarial")), args.repeats)
    naive = timed(naive_step, args.repeats)
    print(f"device={args.device} backbone={args.backbone} batch={args.batch_size} K={k} threads={torch.get_num_threads()}")
    print(f"clean step        {clean * 1e3:8.2f} ms")
    print(f"PGD-{k} AT step    {ours * 1e3:8.2f} ms   ratio {ours / clean:5.2f}  (bound K+1 = {k + 1})")
    print(f"naive PGD-{k} step {naive * 1e3:8.2f} ms   ratio {naive / clean:5.2f}  (weight grads kept during the attack)")
    print(f"saving from frozen parameters: {naive / ours:.2f}x")


if __name__ == "__main__":
    main()
