"""``advtrain``: the suite's LightningCLI (fit | validate | test | predict | evaluate).

    advtrain fit --config experiments/mnist_pgd_at.yaml
    advtrain fit --config experiments/mnist_pgd_at.yaml --trainer.devices 4 --trainer.strategy ddp

Defaults every subcommand shares live in ``experiments/configs/defaults.yaml``
(W&B logger, ``inference_mode: false`` so evaluation can attack, run folder ``runs/``).
``data.num_classes``, ``data.mean`` and ``data.std`` are linked into the model.
"""
from __future__ import annotations

from pathlib import Path

from pytorch_lightning.cli import LightningCLI, SaveConfigCallback
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_info

import callbacks  # noqa: F401  (makes RobustnessEvaluation resolvable by short name)
from callbacks.run_dir import run_directory
from datamodules import ClassificationDataModule
from experiments.evaluate import AdvTrainer
from experiments.tracking import configure_wandb_logger, sync_hint
from lightning_modules import AdversarialClassifier
from lightning_modules.checkpoints import read_checkpoint

DEFAULTS = Path(__file__).parent / "configs" / "defaults.yaml"
SUBCOMMANDS = ("fit", "validate", "test", "predict", "evaluate", "transfer_matrix")


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
            logger.log_hyperparams({"config": self.parser.dump(self.config, skip_none=False)})


class AdvTrainCLI(LightningCLI):
    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        extra = {"evaluate": {"model", "datamodule"}, "transfer_matrix": {"model", "datamodule"}}
        return {**LightningCLI.subcommands(), **extra}

    def parse_arguments(self, parser, args) -> None:
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        ckpt_path = (self.config[subcommand] if subcommand else self.config).get("ckpt_path")
        if ckpt_path:  # checked before LightningCLI reads its hyperparameters (and imports their class_path)
            read_checkpoint(ckpt_path)

    def add_arguments_to_parser(self, parser) -> None:
        for key in ("num_classes", "mean", "std"):
            parser.link_arguments(f"data.{key}", f"model.{key}", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        self._wandb_offline = configure_wandb_logger(config)

    def _after(self) -> None:
        if getattr(self, "_wandb_offline", False) and self.trainer.is_global_zero:
            logger = next((lg for lg in self.trainer.loggers if isinstance(lg, WandbLogger)), None)
            if logger is not None:
                rank_zero_info(sync_hint(logger.save_dir or "."))

    after_fit = after_validate = after_test = after_predict = after_evaluate = after_transfer_matrix = _after


def main(args=None) -> None:
    AdvTrainCLI(
        AdversarialClassifier,
        ClassificationDataModule,
        trainer_class=AdvTrainer,
        subclass_mode_data=True,
        save_config_callback=RunConfigSaver,
        save_config_kwargs={"save_to_log_dir": False},
        parser_kwargs={
            "description": "advtrain: adversarial training and robustness evaluation (PyTorch Lightning). "
                           "Start from an experiment: advtrain fit --config experiments/mnist_pgd_at.yaml",
            **{cmd: {"default_config_files": [str(DEFAULTS)]} for cmd in SUBCOMMANDS},
        },
        args=args,
        auto_configure_optimizers=False,
    )


if __name__ == "__main__":
    main()
