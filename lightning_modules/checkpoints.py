"""Reading checkpoints, which are untrusted files: the one way every checkpoint is loaded.

- Local files only: a URL is refused with the command to download it first (nothing is
  fetched, nothing lands outside the run folder).
- ``torch.load(..., weights_only=True)``: tensors and plain values only, so a crafted pickle
  cannot run code. Empty, truncated, text and other non-checkpoint files are a one-line
  :class:`CheckpointError` naming the file.
- Hyperparameters may only name the project's own classes as ``class_path``
  (:data:`attacks.PROJECT_PACKAGES`); anything else is refused before it is imported.
- A model must fit the data: :func:`check_fits` names both the model's and the data's shapes.

Lightning's own loads (``--ckpt_path`` in fit/validate/test/evaluate) go through
:class:`SafeCheckpointIO`, which the suite's Trainer installs.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from torch import nn

from attacks import attack_mode, check_class_path

MapLocation = Union[str, torch.device, Callable, dict, None]


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: the message names the file and the fix."""


def read_checkpoint(path: Union[str, Path], map_location: MapLocation = "cpu", mmap: bool = False) -> dict[str, Any]:
    """The checkpoint dict at local ``path``, loaded with ``weights_only=True`` and checked; with
    ``mmap`` its tensors stay on disk until read (for a look at its header)."""
    text = str(path)
    if "://" in text:
        raise CheckpointError(f"checkpoint {text} is a URL: advtrain loads local files only. Download it first "
                              f"(curl -fL -o model.ckpt '{text}'), make sure you trust its source, then pass the file")
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"checkpoint {text} not found: give the .ckpt of a trained advtrain model "
                                "(runs/advtrain/<run id>/checkpoints/*.ckpt)")
    if file.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {text} is empty (0 bytes): an interrupted copy or save? Use another checkpoint")
    try:
        checkpoint = torch.load(file, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as err:  # noqa: BLE001 - a bad file fails in many ways inside the unpickler
        if isinstance(err, pickle.UnpicklingError) and "weights only" in str(err).lower():
            raise CheckpointError(f"checkpoint {text} holds Python objects other than tensors and plain values; "
                                  "refused: unpickling them could run code (weights_only=True). Only advtrain "
                                  "checkpoints are loaded") from None
        with open(file, "rb") as f:
            torch_zip = f.read(4) == b"PK\x03\x04"  # torch.save's format since torch 1.6
        what = "is truncated or corrupt" if torch_zip else "is not a torch checkpoint"
        raise CheckpointError(f"checkpoint {text} {what} ({type(err).__name__}: {_first_line(err)}): "
                              "give the .ckpt of a trained advtrain model") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise CheckpointError(f"checkpoint {text} is not a Lightning checkpoint (no state_dict): "
                              "give the .ckpt of a trained advtrain model")
    _check_class_paths(checkpoint.get("hyper_parameters", {}), f"checkpoint {text}")
    return checkpoint


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


def _check_class_paths(value: Any, what: str) -> None:
    """Every ``class_path`` / ``_class_path`` anywhere in ``value`` must name the project's own classes."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("class_path", "_class_path"):
                check_class_path(item, f"{what} hyperparameters")
            _check_class_paths(item, what)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check_class_paths(item, what)


def load_classifier(path: Union[str, Path], map_location: MapLocation = "cpu",
                    data: Optional[tuple[tuple[int, ...], int]] = None, what: str = "checkpoint") -> nn.Module:
    """An advtrain checkpoint as an eval-mode AdversarialClassifier; with ``data`` =
    (input shape, number of classes), checked to fit that data (:func:`check_fits`; errors
    call the file ``what``). The loader injected into the transfer attack and the adversarial sets."""
    from lightning_modules.classifier import AdversarialClassifier

    read_checkpoint(path)  # refuses URLs, bad files and foreign class paths before Lightning sees them
    model = AdversarialClassifier.load_from_checkpoint(path, map_location=map_location, weights_only=True).eval()
    if data is not None:
        check_fits(model, *data, what=f"{what} {path}")
    return model


def check_made_for(hparams: dict[str, Any], num_classes: int, channels: int, what: str) -> None:
    """Raise a ValueError naming both unless a checkpoint's hyperparameters say it was trained for
    ``num_classes`` classes on ``channels``-channel images (missing entries are not held against it)."""
    theirs = (hparams.get("num_classes", num_classes), len(hparams.get("mean", (0.0,) * channels)))
    if theirs != (num_classes, channels):
        raise ValueError(f"{what} was trained for {theirs[0]} classes on {theirs[1]}-channel images, but the data "
                         f"has {num_classes} classes and {channels}-channel images: give a checkpoint trained on "
                         "this dataset")


def check_fits(model: nn.Module, input_shape: tuple[int, ...], num_classes: int, what: str = "the model") -> None:
    """Raise a ValueError naming both sides unless ``model`` takes images shaped ``input_shape``
    (C, H, W) and returns ``num_classes`` logits: one forward of a zero batch, in eval mode."""
    hparams = getattr(model, "hparams", {})
    channels = len(hparams["mean"]) if "mean" in hparams else None
    classes = hparams.get("num_classes")
    takes = f"{channels}-channel images" if channels else "its images"
    mine = f"{what} (backbone {hparams.get('backbone', type(model).__name__)}) takes {takes} and predicts {classes} classes"
    data = f"the dataset has {num_classes} classes and images shaped {tuple(input_shape)}"
    if (channels is not None and channels != input_shape[0]) or (classes is not None and classes != num_classes):
        raise ValueError(f"{mine} but {data}: use a model or checkpoint made for this data")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    with attack_mode(model), torch.no_grad():
        try:
            logits = model(torch.zeros((2, *input_shape), device=device))
        except RuntimeError as err:
            raise ValueError(f"{mine} but fails where {data} ({_first_line(err)}): use a backbone made for "
                             "this image size") from None
    if logits.dim() != 2 or logits.shape[1] != num_classes:
        raise ValueError(f"{mine} but returns logits shaped {tuple(logits.shape)} where {data}")


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO with every load through :func:`read_checkpoint`."""

    def load_checkpoint(self, path, map_location: MapLocation = None, weights_only: Optional[bool] = None):
        return read_checkpoint(path, map_location if map_location is not None else "cpu")
