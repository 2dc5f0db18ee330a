"""The suite's Trainer: Lightning's, with every checkpoint load safe and two more subcommands.

``advtrain evaluate``: robustness of a checkpoint over attacks x epsilons.

    advtrain evaluate --config experiments/mnist_pgd_at.yaml --ckpt_path runs/.../last.ckpt \\
        --attacks '[{name: pgd, steps: 40, alpha: 0.01}]' --epsilons '[0.1, 0.3]'
    ... --trainer.devices 4 --trainer.strategy ddp      # sharded, counts equal one process

It runs Lightning's test stage (so devices, strategies, nodes and checkpoint loading are
Lightning's), with clean metrics only, and the robustness sweep at its end: samples are
sharded over all processes and counts are exact. With ``resume`` (default) each finished
batch is kept under ``<default_root_dir>/eval_cache``; rerunning the same command after an
interruption skips the finished batches. With the reference AutoAttack in the sweep
(``{name: autoattack}``) it also writes ``autoattack_leaderboard.json`` beside robustness.json:
clean and AutoAttack accuracy, threat model, eps, samples, version and model identity in
RobustBench's terms (callbacks/leaderboard.py). Without ``--attacks``/``--epsilons`` the sweep of
the config's RobustnessEvaluation callback is used. ``--post_train '{num_samples: 500}'`` (the
arguments of callbacks.PostTrainEvaluation) also evaluates the post-train defence.

``advtrain transfer_matrix``: every checkpoint attacked with examples crafted on every checkpoint.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

import pytorch_lightning as pl
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from callbacks import PostTrainEvaluation, RobustnessEvaluation
from callbacks.leaderboard import write_leaderboard_entries
from callbacks.report import append_json
from callbacks.run_dir import run_directory
from callbacks.summary import transfer_metrics
from lightning_modules.checkpoints import SafeCheckpointIO, load_classifier
from lightning_modules.external import ExternalClassifier
from datamodules.storage import model_fingerprint


class EvaluatingTrainer(pl.Trainer):
    """Lightning's Trainer with two more entry points, :meth:`evaluate` and :meth:`transfer_matrix`
    (``advtrain`` subcommands); every checkpoint it loads (``ckpt_path``) goes through
    :class:`SafeCheckpointIO` (weights_only, local files). The trainer of every ``advtrain`` run."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if type(self.strategy.checkpoint_io) is TorchCheckpointIO:  # Lightning's default, not a user's plugin
            self.strategy.checkpoint_io = SafeCheckpointIO()

    def evaluate(
        self,
        model: pl.LightningModule,
        datamodule: Optional[pl.LightningDataModule] = None,
        ckpt_path: Optional[str] = None,
        attacks: Optional[list[Union[str, dict[str, Any]]]] = None,
        epsilons: Optional[list[Union[float, str]]] = None,
        split: Optional[str] = None,
        num_samples: Optional[int] = None,
        batch_size: Optional[int] = None,
        seed: int = 0,
        resume: bool = True,
        external_model: Optional[str] = None,
        post_train: Optional[dict[str, Any]] = None,
    ) -> dict[str, Any]:
        """Evaluate ``model`` (weights from ``ckpt_path``) and return the result written to robustness.json.

        ``external_model`` evaluates another model with the [0, 1]-in/logits-out contract instead:
        a TorchScript file or a ``package.module:function`` factory (see lightning_modules.external).
        ``post_train`` (callbacks.PostTrainEvaluation's arguments) also runs that evaluation, non-adaptive or
        with ``adaptive: true`` adaptive (post_train.json; its result under ``post_train``); alone, without a
        sweep, it runs by itself, replacing the config's own PostTrainEvaluation.
        """
        if external_model is not None:
            if ckpt_path is not None:
                raise ValueError("give either --ckpt_path (an advtrain checkpoint) or --external_model, not both")
            model = ExternalClassifier(external_model, num_classes=datamodule.num_classes)
        configured = [c for c in self.callbacks if isinstance(c, RobustnessEvaluation)]
        base = configured[-1] if configured else None  # the sweep: experiment YAMLs list their APGD subset first
        sweep = base is not None or (attacks is not None and epsilons is not None)
        if not sweep and post_train is None:
            raise ValueError("evaluate needs --attacks and --epsilons (or a config with a RobustnessEvaluation "
                             "callback), or --post_train")
        evaluation = None if not sweep else RobustnessEvaluation(
            attacks=attacks if attacks is not None else base.attacks,
            epsilons=epsilons if epsilons is not None else [e for e in base.epsilons if e > 0],
            split=split or (base.split if base else "test"),
            num_samples=num_samples if num_samples is not None else (base.num_samples if base else None),
            batch_size=batch_size or (base.batch_size if base else 256),
            run_on=("test_end",),
            seed=seed,
            cache_dir=str(Path(self.default_root_dir) / "eval_cache") if resume else None,
            run_under_fast_dev_run=True,  # the evaluation is what this subcommand is asked for
        )
        defence = None if post_train is None else PostTrainEvaluation(
            **{**post_train, "run_on": ["test_end"], "run_under_fast_dev_run": True})
        replaced = configured + [c for c in self.callbacks if defence and isinstance(c, PostTrainEvaluation)]
        for callback in replaced:
            self.callbacks.remove(callback)
        self.callbacks.extend(c for c in (evaluation, defence) if c is not None)
        saved_attack, model.val_attack = getattr(model, "val_attack", None), None  # test loop: clean metrics only
        try:
            self.test(model, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
        finally:
            model.val_attack = saved_attack
        result = evaluation.results[-1] if evaluation else {}
        if self.is_global_zero and any(a["name"] == "autoattack" for a in result.get("attacks", [])):
            # the reference AutoAttack in the sweep: an entry in RobustBench's terms
            identity = {"checkpoint": ckpt_path, "external_model": external_model,
                        "weights_sha256": model_fingerprint(model)}
            write_leaderboard_entries(run_directory(self), {**result, "seed": seed}, identity)
        return {**result, "post_train": defence.results[-1]} if defence else result

    def transfer_matrix(
        self,
        model: pl.LightningModule,
        datamodule: Optional[pl.LightningDataModule] = None,
        checkpoints: list[str] = (),
        attack: dict[str, Any] = {"name": "pgd", "steps": 10},  # noqa: B006 - read only
        epsilons: list[Union[float, str]] = ("8/255",),
        num_samples: Optional[int] = None,
        batch_size: int = 256,
        seed: int = 0,
        resume: bool = True,
    ) -> dict[str, Any]:
        """Accuracy of every checkpoint on adversarial examples crafted on every checkpoint.

        ``matrix[source][target][eps]``; the diagonal is the white-box attack. Each target is
        evaluated with :meth:`evaluate` (sharded, exact, resumable); ``model`` from the config
        is not used: every model comes from its checkpoint. Written to transfer_matrix.json.
        """
        if len(checkpoints) < 2:
            raise ValueError("transfer_matrix needs --checkpoints with at least two advtrain checkpoints")
        sources = [{"name": "transfer", "source": c, "attack": dict(attack)} for c in checkpoints]
        matrix: dict[str, dict[str, dict[str, float]]] = {s: {} for s in checkpoints}
        targets: dict[str, dict[str, Any]] = {}
        for target in checkpoints:
            target_model = load_classifier(target)
            result = self.evaluate(target_model, datamodule, ckpt_path=target, attacks=sources,
                                   epsilons=list(epsilons), num_samples=num_samples, batch_size=batch_size,
                                   seed=seed, resume=resume)
            targets[target] = result.get("provenance", {})
            labels = [a["label"] for a in result["attacks"]]
            for row in result["rows"]:
                if row["attack"] in labels and row["eps"] > 0:
                    source = checkpoints[labels.index(row["attack"])]
                    matrix[source].setdefault(target, {})[f"{row['eps']:.6g}"] = row["accuracy"]
        summary = {"attack": dict(attack), "epsilons": [str(e) for e in epsilons], "matrix": matrix,
                   "note": "matrix[source][target][eps]: accuracy of target on examples crafted on source",
                   "provenance": {"per_target": targets}}
        if self.is_global_zero:
            append_json(run_directory(self) / "transfer_matrix.json", summary)
            for logger in self.loggers:  # one key per (source, target, eps), short run labels
                logger.log_metrics(transfer_metrics(summary), step=self.global_step)
                logger.save()  # the test loops above have finalized the loggers already
        return summary
