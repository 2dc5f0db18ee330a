"""The adversarial classifier: [preprocessing +] normaliser + backbone, trained with a pluggable objective.

``forward`` takes [0, 1] pixels and returns logits, the contract attacks, AutoAttack
and RobustBench rely on. Every epsilon and step size is in pixel units. The checkpoint
carries the backbone name, class count, mean/std and the training recipe as plain
hyperparameters, so ``AdversarialClassifier.load_from_checkpoint(path)`` needs nothing
else and loads with ``weights_only=True``.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Mapping, Optional, Union

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from attacks import Attack, create_attack, spec_name
from attacks.seeding import derive_seed, run_seed
from lightning_modules.backbones import create_backbone
from lightning_modules.checkpoints import check_fits, check_made_for, read_checkpoint
from lightning_modules.defences.blur import create_preprocessing
from lightning_modules.normalization import Normalize
from lightning_modules.objectives import OBJECTIVES, create_objective
from lightning_modules.optimizers import check_optimizer, create_optimizer
from lightning_modules.schedules import LR_SCHEDULES, lr_factor, ramp, training_progress

KINDS = ("clean", "adv")
# objective settings an older advtrain stored flat beside the objective's name (before objective specs)
LEGACY_OBJECTIVE_OPTIONS = ("adversarial_fraction", "beta")


def upgrade_hparams(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """An older checkpoint's hyperparameters with its flat objective settings (``objective: trades,
    beta: 6``) folded into the objective spec (``objective: {name: trades, beta: 6}``)."""
    hparams = dict(hparams)
    flat = {k: hparams.pop(k) for k in LEGACY_OBJECTIVE_OPTIONS if k in hparams}
    if flat:
        name = spec_name(hparams.get("objective"), "clean")
        valid = OBJECTIVES.options(name)
        hparams["objective"] = {"name": name, **{k: v for k, v in flat.items() if k in valid}}
    return hparams


class AdversarialClassifier(pl.LightningModule):
    """Image classifier on [0, 1] pixels trained clean, adversarially or on mixed batches.

    Args:
        backbone: timm model name (``mnist_cnn``, ``preact_resnet18``, ``resnet50``, ...).
        num_classes, mean, std: linked from the datamodule by the CLI.
        preprocessing: optional blur defence in front of the normaliser, applied in training,
            evaluation, attacks and exports: ``{name: gaussian, sigma: 1.0}`` or
            ``{name: median, window: 3}`` (see :mod:`lightning_modules.defences.blur`).
        objective: the training objective as a spec: ``clean`` | ``adversarial`` |
            ``{name: mixed, adversarial_fraction: 0.5}`` | ``{name: trades, beta: 6}`` |
            ``{name: mart, beta: 6}`` (see :mod:`lightning_modules.objectives`; ``advtrain list``).
        attack: training attack as ``{name: pgd, eps: 0.3, steps: 40, ...}`` (pixel units).
        eps_warmup: fraction of training over which the training attack's eps ramps
            linearly from 0 to its value (0 = no ramp).
        val_attack: attack for the adversarial validation metrics (default: ``attack``).
        optimizer, lr, momentum, weight_decay, nesterov: the optimiser (sgd|adam|adamw).
        lr_schedule: constant|cosine|linear|multistep over training progress (steps or
            ``max_time``, whichever runs out first); lr_warmup: warm-up fraction;
            milestones: progress fractions where multistep divides the lr by 10.
        init_weights: an advtrain checkpoint whose weights initialise the network when
            fitting starts (fine-tuning); resuming with ``--ckpt_path`` still wins.
        channels_last: keep weights and inputs in the channels-last memory layout (faster
            convolutions with bf16 on GPUs; the numbers are the same up to rounding).
        compile: run the network through ``torch.compile`` (training, evaluation and attacks;
            the first steps pay the compilation). Checkpoints are unchanged.
    """

    def __init__(
        self,
        backbone: str = "mnist_cnn",
        num_classes: int = 10,
        mean: tuple[float, ...] = (0.0,),
        std: tuple[float, ...] = (1.0,),
        preprocessing: Optional[dict[str, Any]] = None,
        objective: Union[str, dict[str, Any]] = "clean",
        attack: Optional[dict[str, Any]] = None,
        eps_warmup: float = 0.0,
        val_attack: Optional[dict[str, Any]] = None,
        optimizer: str = "sgd",
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        nesterov: bool = False,
        lr_schedule: str = "cosine",
        lr_warmup: float = 0.0,
        milestones: tuple[float, ...] = (0.5, 0.75),
        init_weights: Optional[str] = None,
        channels_last: bool = False,
        compile: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters()
        check_optimizer(optimizer)
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown lr_schedule {lr_schedule!r}; valid: {', '.join(LR_SCHEDULES)}")
        blur = create_preprocessing(preprocessing)  # None: the module tree and state_dict are as without it
        self.net = nn.Sequential(OrderedDict(
            **({"preprocessing": blur} if blur is not None else {}),
            normalize=Normalize(mean, std),
            backbone=create_backbone(backbone, num_classes=num_classes, in_chans=len(mean)),
        ))
        if channels_last:
            self.net.to(memory_format=torch.channels_last)
        # kept off the module tree: the state_dict keys (and checkpoints) stay those of self.net
        object.__setattr__(self, "_run_net", torch.compile(self.net) if compile else self.net)
        self.attack: Attack | None = create_attack(attack) if attack else None
        self._set_objective(objective)
        self._attack_eps = self.attack.eps if self.attack is not None else 0.0  # eps_warmup ramps up to this
        # a separate instance: the training attack's eps is ramped by eps_warmup
        self.val_attack: Attack | None = create_attack(val_attack or attack) if (val_attack or attack) else None
        self.metrics = nn.ModuleDict({
            f"{stage}_{kind}": nn.ModuleDict({
                "acc": MulticlassAccuracy(num_classes, average="micro"),
                "loss": MeanMetric(),
            })
            for stage in ("train", "val", "test") for kind in KINDS
        })

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] pixels (N, C, H, W) -> logits (N, num_classes)."""
        if self.hparams.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self._run_net(x)

    def setup(self, stage: str) -> None:
        data = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if hasattr(data, "input_shape") and hasattr(data, "num_classes"):
            check_fits(self, data.input_shape, data.num_classes)  # before any training or evaluation step
        # before Lightning restores a --ckpt_path, which therefore overrides these weights
        if stage == "fit" and self.hparams.init_weights:
            self.load_network_weights(self.hparams.init_weights)

    def _set_objective(self, spec: Union[str, dict[str, Any]]) -> None:
        self.objective = create_objective(spec)
        if self.objective.needs_attack and self.attack is None:
            raise ValueError(f"objective {spec_name(spec)!r} needs model.attack, e.g. {{name: pgd, eps: 0.3, steps: 10}}")
        if self.attack is not None:
            self.objective.check_attack(self.attack)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A restored checkpoint must have been made for this model's data (classes, channels); an
        older one's flat objective settings (Lightning drops them on load) become its objective spec."""
        saved = checkpoint.get("hyper_parameters", {})
        if any(k in saved for k in LEGACY_OBJECTIVE_OPTIONS):
            self.hparams.objective = upgrade_hparams(saved)["objective"]
            self._set_objective(self.hparams.objective)
        path = getattr(self._trainer, "ckpt_path", None) if self._trainer is not None else None
        check_made_for(saved, self.hparams.num_classes, len(self.hparams.mean), f"checkpoint {path or ''}")

    def load_network_weights(self, path: str) -> None:
        """Copy the network weights of another advtrain checkpoint (made for this data) into this model."""
        checkpoint = read_checkpoint(path)
        check_made_for(checkpoint.get("hyper_parameters", {}), self.hparams.num_classes, len(self.hparams.mean),
                       f"init_weights {path}")
        state = checkpoint["state_dict"]
        net_state = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
        try:
            self.net.load_state_dict(net_state)
        except RuntimeError as err:
            raise ValueError(f"init_weights {path} holds another architecture than backbone "
                             f"{self.hparams.backbone!r} with {self.hparams.num_classes} classes: {err}") from err

    # -- randomness: one seed per step and per evaluation batch ----------------------------
    def _reseed(self, *identity: object) -> None:
        """Restart torch's global generator (dropout, unseeded attacks' random starts) from a seed of
        the run seed, ``identity`` and the rank: a run resumed at any step draws what the
        uninterrupted run drew there, and two runs with one seed draw the same."""
        torch.manual_seed(derive_seed(run_seed(), *identity, self.global_rank))

    def on_train_batch_start(self, batch, batch_idx):
        self._reseed("train", self.global_step)

    # -- training ----------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.attack is not None:
            self.attack.eps = self._attack_eps * ramp(training_progress(self.trainer), self.hparams.eps_warmup)
            self.log("train/attack_eps", self.attack.eps)
        out = self.objective(self, self.attack, x, y)
        for kind, (logits, labels) in out.logits.items():
            self._update_metrics("train", kind, logits, labels)
        self.log("train/loss", out.loss, prog_bar=True)
        return out.loss

    # -- evaluation --------------------------------------------------------------------
    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, "val", batch_idx)

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test", batch_idx)

    def _evaluate(self, batch, stage: str, batch_idx: int) -> None:
        self._reseed(stage, self.current_epoch if stage == "val" else 0, batch_idx)
        x, y = batch
        logits = self(x)
        self._update_metrics(stage, "clean", logits, y)
        if self.val_attack is not None:
            if torch.is_inference_mode_enabled():
                raise RuntimeError("adversarial evaluation needs gradients: set --trainer.inference_mode false")
            x_adv = self.val_attack(self, x, y)
            with torch.no_grad():
                self._update_metrics(stage, "adv", self(x_adv), y)

    def _update_metrics(self, stage: str, kind: str, logits: torch.Tensor, labels: torch.Tensor) -> None:
        metrics = self.metrics[f"{stage}_{kind}"]
        metrics["acc"](logits.detach(), labels)
        metrics["loss"](F.cross_entropy(logits.detach().float(), labels, reduction="none"))
        on_step = stage == "train"
        self.log(f"{stage}/{kind}_acc", metrics["acc"], on_step=on_step, on_epoch=True, prog_bar=kind == "adv" or stage != "train")
        self.log(f"{stage}/{kind}_loss", metrics["loss"], on_step=False, on_epoch=True)

    def predict_step(self, batch, batch_idx):
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(x).argmax(dim=1)

    # -- optimisation ------------------------------------------------------------------
    def configure_optimizers(self):
        hp = self.hparams
        optimizer = create_optimizer(hp.optimizer, self.parameters(), hp.lr, hp.weight_decay, hp.momentum, hp.nesterov)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda _: lr_factor(hp.lr_schedule, training_progress(self._trainer), hp.lr_warmup, hp.milestones),
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
