"""``advtrain``: the suite's LightningCLI (fit | validate | test | predict | evaluate | transfer_matrix),
``advtrain compare`` (experiments/compare.py: a leaderboard over run folders; no model or data) and
``advtrain list [attacks|objectives|preprocessing|augmentations]`` (the registered names and their options).

    advtrain fit --config experiments/mnist_pgd_at.yaml
    advtrain fit --config experiments/mnist_pgd_at.yaml --trainer.devices 4 --trainer.strategy ddp

Defaults every subcommand shares live in ``experiments/configs/defaults.yaml``
(W&B logger, ``inference_mode: false`` so evaluation can attack, run folder ``runs/``).
``data.num_classes``, ``data.mean`` and ``data.std`` are linked into the model.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.cli import LightningCLI, SaveConfigCallback
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_info

import callbacks  # noqa: F401  (makes RobustnessEvaluation resolvable by short name)
import datamodules  # noqa: F401  (makes the datamodules resolvable by short name)
from callbacks.preemption import Preemption
from callbacks.provenance import RunTracker
from callbacks.run_dir import run_directory
from experiments.trainer import EvaluatingTrainer
from experiments.tracking import configure_wandb_logger, resolve_last_checkpoint, sync_hint
from experiments.wandb_runs import declare_model_artifact, nested_config, training_run_of
from lightning_modules import AdversarialClassifier
from lightning_modules.checkpoints import read_checkpoint
from lightning_modules.classifier import upgrade_hparams

DEFAULTS = Path(__file__).parent / "configs" / "defaults.yaml"
SUBCOMMANDS = ("fit", "validate", "test", "predict", "evaluate", "transfer_matrix")
LIMITS = tuple(f"limit_{stage}_batches" for stage in ("train", "val", "test", "predict"))


def whole_number_limits(args) -> dict[str, int]:
    """``--trainer.limit_*_batches N`` given on the command line as a whole number: N batches.
    Lightning types these ``Union[float, int]``, so the parser alone reads "1" as 1.0, which
    Lightning takes for 100% of the epoch; "1.0" and "0.5" stay fractions."""
    found = {}
    args = list(args) if isinstance(args, (list, tuple)) else []
    for i, arg in enumerate(args):
        key, has_value, value = str(arg).partition("=")
        name = key.removeprefix("--trainer.")
        if key.startswith("--trainer.") and name in LIMITS:
            value = value if has_value else (str(args[i + 1]) if i + 1 < len(args) else "")
            found[name] = value  # the last one given wins, as in the parser
    return {name: int(value) for name, value in found.items() if value.isdigit()}


class RunConfigSaver(SaveConfigCallback):
    """Save the resolved config into the run directory and into the logger (W&B config)."""

    def save_config(self, trainer, pl_module, stage) -> None:
        folder = run_directory(trainer)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "config.yaml"
        n = 1
        while path.exists():  # a resumed or repeated run keeps every config it ran with
            path = folder / f"config-{n}.yaml"
            n += 1
        self.parser.save(self.config, path, skip_none=False, multifile=False)
        for logger in trainer.loggers:
            logger.log_hyperparams(nested_config(self.config))  # nested: every setting a filterable key


class AdvTrainCLI(LightningCLI):
    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        extra = {"evaluate": {"model", "datamodule"}, "transfer_matrix": {"model", "datamodule"}}
        return {**LightningCLI.subcommands(), **extra}

    def parse_arguments(self, parser, args) -> None:
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else self.config
        # kept in the saved config and applied to the Trainer (instantiating casts them back to float)
        self.whole_number_limits = whole_number_limits(sys.argv[1:] if args is None else args)
        for name, batches in self.whole_number_limits.items():
            config[f"trainer.{name}"] = batches
        if config.get("ckpt_path") == "last":
            resolve_last_checkpoint(config, continue_run=subcommand == "fit")

    def _parse_ckpt_path(self) -> None:
        """LightningCLI's step that puts a ``--ckpt_path``'s model hyperparameters into the config, here
        through read_checkpoint (checked before any class_path in it is imported) and with an older
        checkpoint's flat objective settings folded into its objective spec (upgrade_hparams)."""
        subcommand = self.config.get("subcommand")
        path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not path:
            return
        hparams = upgrade_hparams(read_checkpoint(path).get("hyper_parameters", {}))
        hparams.pop("_instantiator", None)
        if hparams:
            self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)

    def add_arguments_to_parser(self, parser) -> None:
        for key in ("num_classes", "mean", "std"):
            parser.link_arguments(f"data.{key}", f"model.{key}", apply_on="instantiate")

    def instantiate_trainer(self, **kwargs):
        """Every run writes ``last.ckpt`` (``--ckpt_path last`` resumes it), unless its ModelCheckpoint says
        otherwise; ``--trainer.limit_*_batches N`` (a whole number) limits to N batches."""
        trainer = super().instantiate_trainer(**kwargs)
        for name, batches in getattr(self, "whole_number_limits", {}).items():
            setattr(trainer, name, batches)
        for checkpoint in trainer.checkpoint_callbacks:
            if checkpoint.save_last is None:
                checkpoint.save_last = True
        return trainer

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        self._wandb_offline = configure_wandb_logger(config, self.subcommand)

    def before_evaluate(self) -> None:
        """W&B lineage: the evaluated checkpoint's model artifact, when its training run logged one."""
        config = self.config[self.subcommand]
        if self.trainer.is_global_zero:
            for logger in self.trainer.loggers:
                if isinstance(logger, WandbLogger):
                    declare_model_artifact(logger, training_run_of(config), config.get("ckpt_path"))

    def _after(self) -> None:
        if getattr(self, "_wandb_offline", False) and self.trainer.is_global_zero:
            logger = next((lg for lg in self.trainer.loggers if isinstance(lg, WandbLogger)), None)
            if logger is not None:
                rank_zero_info(sync_hint(logger.save_dir or "."))

    after_fit = after_validate = after_test = after_predict = after_evaluate = after_transfer_matrix = _after


def list_components(kinds: list[str]) -> str:
    """``advtrain list [kind ...]``: each registry's names, options and defaults (all registries by default)."""
    from attacks import ATTACKS
    from datamodules.augmentations import AUGMENTATIONS
    from lightning_modules.objectives import OBJECTIVES
    from lightning_modules.defences.blur import PREPROCESSING

    registries = {"attacks": ATTACKS, "objectives": OBJECTIVES, "preprocessing": PREPROCESSING,
                  "augmentations": AUGMENTATIONS}
    unknown = [k for k in kinds if k not in registries]
    if unknown:
        raise SystemExit(f"advtrain list: unknown kind(s) {unknown}; valid: {', '.join(registries)}")
    return "\n\n".join(registries[k].describe() for k in kinds or registries)


def main(args=None) -> None:
    argv = sys.argv[1:] if args is None else list(args)
    if argv[:1] == ["compare"]:  # needs no model or data: not a LightningCLI subcommand
        from experiments.compare import main as compare_main

        compare_main(argv[1:])
        return
    if argv[:1] == ["list"]:
        print(list_components(argv[1:]))
        return
    AdvTrainCLI(
        AdversarialClassifier,
        pl.LightningDataModule,  # a dataset's ClassificationDataModule, or a wrapper around one (datamodules/wrapper.py)
        trainer_class=EvaluatingTrainer,
        subclass_mode_data=True,
        save_config_callback=RunConfigSaver,
        save_config_kwargs={"save_to_log_dir": False},
        # always present, not configurable: run identity in checkpoints and lr logged; preemption
        trainer_defaults={"callbacks": [RunTracker(), Preemption()]},
        parser_kwargs={
            "description": "advtrain: adversarial training and robustness evaluation (PyTorch Lightning). "
                           "Start from an experiment: advtrain fit --config experiments/mnist_pgd_at.yaml. "
                           "Leaderboard of many runs: advtrain compare --help. Attacks, objectives, "
                           "preprocessing and augmentations by name, with their options: advtrain list",
            **{cmd: {"default_config_files": [str(DEFAULTS)]} for cmd in SUBCOMMANDS},
        },
        args=args,
        auto_configure_optimizers=False,
    )


if __name__ == "__main__":
    main()
