"""Backbones by name through timm's registry, plus the small nets timm lacks.

Every backbone maps *normalised* images to logits; the classifier puts the
normaliser (and any preprocessing) in front. Registered here:

- ``mnist_cnn``: the two-transform-layer CNN of the mixed-batch paper (two strided
  4x4 convolutions, 32 and 64 channels, then a 1024-unit dense layer), sized for 28x28.
- ``mnist_small``: the small MNIST CNN of Wong et al. 2020 (16 and 32 channels,
  100 hidden units): several times faster, used for CPU smoke runs.
- ``cifar_resnet18``: ResNet-18 with a 3x3 stride-1 stem and no max-pool (He et al.
  2016, CIFAR variant as used by Madry et al.).
- ``preact_resnet18``: pre-activation ResNet-18 (He et al. 2016b), the usual
  CIFAR-10 adversarial-training backbone (Wong et al. 2020, Rice et al. 2020).
"""
from __future__ import annotations

import difflib

import timm
import torch.nn.functional as F
from timm.models import register_model
from torch import nn

def _strided_cnn_kwargs(kwargs: dict) -> dict:
    """Keep the options StridedCNN understands; timm's create_model adds its own (pretrained_cfg, ...)."""
    return {k: v for k, v in kwargs.items() if k == "img_size"}


class StridedCNN(nn.Sequential):
    """Two strided 4x4 convolutions and two dense layers (for 28x28 inputs by default)."""

    def __init__(self, num_classes=10, in_chans=1, widths=(32, 64), hidden=1024, img_size=28):
        spatial = img_size // 4
        super().__init__(
            nn.Conv2d(in_chans, widths[0], 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(widths[0], widths[1], 4, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(),
            nn.Linear(widths[1] * spatial * spatial, hidden), nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )


@register_model
def mnist_cnn(pretrained=False, num_classes=10, in_chans=1, **kwargs):
    return StridedCNN(num_classes, in_chans, widths=(32, 64), hidden=1024, **_strided_cnn_kwargs(kwargs))


@register_model
def mnist_small(pretrained=False, num_classes=10, in_chans=1, **kwargs):
    return StridedCNN(num_classes, in_chans, widths=(16, 32), hidden=100, **_strided_cnn_kwargs(kwargs))


@register_model
def cifar_small(pretrained=False, num_classes=10, in_chans=3, **kwargs):
    """A CPU-scale CNN for 32x32 images (tests, benchmarks, CPU-minute runs; not a paper model)."""
    return StridedCNN(num_classes, in_chans, widths=(32, 64), hidden=256, img_size=32)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class PreActBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride, bias=False)

    def forward(self, x):
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class CifarResNet(nn.Module):
    """ResNet for 32x32 inputs: 3x3 stride-1 stem, four stages, global average pool."""

    def __init__(self, block, layers=(2, 2, 2, 2), num_classes=10, in_chans=3, preact=False):
        super().__init__()
        self.in_planes = 64
        self.stem = nn.Conv2d(in_chans, 64, 3, 1, 1, bias=False)
        self.stem_bn = nn.Identity() if preact else nn.BatchNorm2d(64)
        self.stages = nn.Sequential(*[
            self._stage(block, planes, n, stride)
            for planes, n, stride in zip((64, 128, 256, 512), layers, (1, 2, 2, 2))
        ])
        self.final_bn = nn.BatchNorm2d(512) if preact else nn.Identity()
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        self.preact = preact

    def _stage(self, block, planes, n, stride):
        blocks = []
        for s in [stride] + [1] * (n - 1):
            blocks.append(block(self.in_planes, planes, s))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*blocks)

    def forward(self, x):
        out = self.stem(x)
        if not self.preact:
            out = F.relu(self.stem_bn(out))
        out = self.stages(out)
        if self.preact:
            out = F.relu(self.final_bn(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


@register_model
def cifar_resnet18(pretrained=False, num_classes=10, in_chans=3, **kwargs):
    return CifarResNet(BasicBlock, (2, 2, 2, 2), num_classes, in_chans)


@register_model
def preact_resnet18(pretrained=False, num_classes=10, in_chans=3, **kwargs):
    return CifarResNet(PreActBlock, (2, 2, 2, 2), num_classes, in_chans, preact=True)


def create_backbone(name: str, num_classes: int, in_chans: int, **kwargs) -> nn.Module:
    """A timm model by name (ours included), with a clear error for an unknown name."""
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown backbone {name!r}: not in timm's registry{hint} (list them with timm.list_models())")
    return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)
