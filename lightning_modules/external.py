"""Any model with the [0, 1]-pixels-in, logits-out contract, for ``advtrain evaluate``.

``source`` is a TorchScript file (``torch.jit.save``) or a factory ``package.module:function``
returning an ``nn.Module``; either must include its own normalisation, as AutoAttack and
RobustBench models do. Only evaluation is supported (clean test metrics; the robustness
sweep attacks the module exactly as given).
"""
from __future__ import annotations

import importlib
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy


def load_external(source: str) -> nn.Module:
    if Path(source).is_file():
        return torch.jit.load(source, map_location="cpu")
    module_name, sep, attribute = source.partition(":")
    if not sep:
        raise ValueError(f"external model {source!r} is neither a file nor 'package.module:function'")
    factory = getattr(importlib.import_module(module_name), attribute)
    return factory()


class ExternalClassifier(pl.LightningModule):
    def __init__(self, source: str, num_classes: int):
        super().__init__()
        self.save_hyperparameters()
        self.net = load_external(source).eval()
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.test_acc(self(x), y)
        self.log("test/clean_acc", self.test_acc, on_epoch=True)
