"""Shared fixtures: a small trained model on synthetic data, and the real-data location."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = Path(os.environ.get("ADVTRAIN_SHARED_DATASETS", REPO.parent / "shared" / "datasets"))
MNIST_PRESENT = (SHARED_DATASETS / "MNIST" / "raw" / "train-images-idx3-ubyte").exists()
needs_mnist = pytest.mark.skipif(not MNIST_PRESENT, reason=f"real MNIST copy not found at {SHARED_DATASETS}/MNIST/raw")
# a two-batch fit (two training, two validation batches) whose evaluation callbacks run, unlike under
# --trainer.fast_dev_run, where they stand down. Not 1: the CLI reads a limit of 1 as 1.0, the whole epoch.
TWO_BATCHES = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2",
               "--trainer.num_sanity_val_steps", "0"]


class ToyNet(nn.Module):
    """Conv + BatchNorm + dropout: enough structure to test modes, statistics and gradients."""

    def __init__(self, num_classes=4, channels=1, size=8):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(8 * size * size, num_classes))

    def forward(self, x):
        return self.head(self.features(x))


def toy_data(n=128, num_classes=4, size=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    protos = torch.rand((num_classes, 1, size, size), generator=gen)
    y = torch.arange(n) % num_classes
    x = (protos[y] + 0.1 * torch.randn((n, 1, size, size), generator=gen)).clamp(0, 1)
    return x, y


def subprocess_env() -> dict[str, str]:
    """The environment for an advtrain subprocess: this one, without the W&B service that an
    in-process run started (a subprocess joining it would share its runs: "run ID is in use")."""
    return {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}


@pytest.fixture(scope="module")
def one_torch_thread():
    """Attack tests run many tiny passes: one intra-op thread is much faster than two on a busy
    2-core machine. Restored after the module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def trained_toy():
    """A ToyNet trained to high clean accuracy on toy_data (about a second on CPU)."""
    torch.manual_seed(0)
    x, y = toy_data()
    return fit(ToyNet(), [(x, y)] * 60, lr=1e-2), x, y


def fit(model: nn.Module, batches, lr: float) -> nn.Module:
    """Adam on the cross-entropy over ``batches`` of (x, y); the model comes back in eval mode
    with no gradients left on its parameters."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for x, y in batches:
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    for p in model.parameters():
        p.grad = None
    return model


@pytest.fixture(scope="session")
def trained_mnist_small():
    """mnist_small trained clean for 150 Adam steps (batch 64) on real MNIST, and the first 200
    test images: about a third stay robust at L-inf eps 0.1. Skips without the MNIST copy."""
    if not MNIST_PRESENT:
        pytest.skip(f"real MNIST copy not found at {SHARED_DATASETS}/MNIST/raw")
    from datamodules import MNISTDataModule
    from lightning_modules import AdversarialClassifier

    data = MNISTDataModule(data_dir=str(SHARED_DATASETS), download=False)
    train, test = data.dataset("train"), data.dataset("test")
    def images(dataset, indices):
        return torch.stack([dataset[i][0] for i in indices]), torch.tensor([int(dataset[i][1]) for i in indices])

    torch.manual_seed(0)
    model = AdversarialClassifier(backbone="mnist_small", num_classes=10, mean=(0.1307,), std=(0.3081,))
    order = torch.randperm(len(train))[: 150 * 64].view(150, 64)
    model = fit(model, (images(train, batch.tolist()) for batch in order), lr=2e-3)
    return (model, *images(test, range(200)))
