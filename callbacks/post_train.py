"""Evaluation of the post-train defence (lightning_modules.defences.post_train) as a Lightning callback.

On the test (or val) split it measures, per sample: the base model's clean and robust
accuracy, and the same with post-train. The adversarial inputs are crafted by PGD on
the BASE model against the true labels, on every sample as in the authors' code
(default L-inf eps 8/255, step 10/255, 20 steps: the paper's Table 1 attack), which does
not know about the post-train step: this is a NON-ADAPTIVE evaluation of the defence, an
upper bound on its robustness against an attacker who adapts to it. The result says so
in ``post_train.json`` (``evaluation``) and in the log.

Distributed exactly like RobustnessEvaluation: the same global batches whatever the
number of processes, process r takes batches r, r + W, ...; every seed depends on the
batch index only and the defence is deterministic per class pair, so the summed counts
equal a one-process run's. Each process keeps its own cache of fine-tuned pairs.

In ``predict`` the predictions of ``predict_step`` are replaced by the defended ones.
"""
from __future__ import annotations

import time
from typing import Any, Optional, Sequence

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info
from tqdm.auto import tqdm

from attacks import attack_mode, create_attack
from callbacks.evaluation import EvaluationCallback
from callbacks.provenance import provenance
from callbacks.report import append_json, format_table, log_to_loggers
from callbacks.run_dir import run_directory
from datamodules.splits import labels_of
from lightning_modules.defences.post_train import PostTrain, PostTrainConfig

PAPER_ATTACK = {"name": "pgd", "eps": "8/255", "alpha": "10/255", "steps": 20}
NON_ADAPTIVE = ("NON-ADAPTIVE evaluation of the post-train defence: the adversarial inputs are crafted on the base "
                "model, without knowledge of the post-train step; robust accuracy with post-train is an upper "
                "bound on its robustness against an adaptive attacker")
# one entry per count in a batch's counts vector
COUNTS = ("samples", "clean_correct", "clean_correct_post_train", "robust_correct", "robust_correct_post_train",
          "clean_label_in_pair", "adversarial_label_in_pair", "clean_no_neighbour", "adversarial_no_neighbour")


class PostTrainEvaluation(EvaluationCallback):
    """Clean and robust accuracy without and with post-train, written to post_train.json and the loggers.

    Args:
        defence: the post-train settings (lightning_modules.defences.post_train.PostTrainConfig fields,
            e.g. ``{steps: 50, lr: 0.001, samples_per_class: 100}``).
        attack: the evaluation attack on the base model (pixel units); default the paper's
            PGD, L-inf eps 8/255, step 10/255, 20 steps.
        split: ``test`` or ``val``; ``train_split``: where the fine-tuning images come from.
        num_samples: evaluate a fixed, seeded subset of this size (None = the whole split).
        batch_size: evaluation batch size (the global batching, not per process).
        run_on: ``fit_end`` and/or ``test_end`` (skipped under ``fast_dev_run``).
        seed: seed of the subset and of the evaluation attack.
        filename: results file, in the run directory.
    """

    skip_fast_dev_run = True  # fine-tuning per class pair is no smoke test

    def __init__(
        self,
        defence: Optional[dict[str, Any]] = None,
        attack: dict[str, Any] = PAPER_ATTACK,  # noqa: B006 - read only
        split: str = "test",
        train_split: str = "train",
        num_samples: Optional[int] = None,
        batch_size: int = 128,
        run_on: Sequence[str] = ("test_end",),
        seed: int = 0,
        filename: str = "post_train.json",
    ):
        self.defence = PostTrainConfig(**(defence or {}))  # bad settings fail now, not after training
        self.attack = dict(attack)
        create_attack(self.attack)
        super().__init__(split, num_samples, batch_size, run_on, seed, filename)
        self.train_split = train_split
        self._predictor: Optional[PostTrain] = None

    # -- hooks (fit_end / test_end: EvaluationCallback) ----------------------------------
    def on_predict_start(self, trainer, pl_module):
        self._predictor = self._defence(trainer, pl_module)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if not isinstance(outputs, torch.Tensor) or outputs.dim() != 1:
            raise TypeError("PostTrainEvaluation replaces predict_step's class predictions, a (N,) tensor; "
                            f"got {type(outputs).__name__}")
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        outputs.copy_(self._predictor.predict(x.to(pl_module.device), seed=self.seed + batch_idx))

    def on_predict_end(self, trainer, pl_module):
        self._predictor = None

    # -- the evaluation ----------------------------------------------------------------
    def evaluate(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> dict[str, Any]:
        self.require_gradients()
        started = time.time()
        rank_zero_info(NON_ADAPTIVE)
        net = getattr(pl_module, "net", pl_module)
        defence = self._defence(trainer, pl_module)
        num_classes = getattr(trainer.datamodule, "num_classes", None) or defence.num_classes
        counts = torch.zeros(len(COUNTS), dtype=torch.long, device=pl_module.device)
        pairs = torch.zeros(2, num_classes, num_classes, dtype=torch.long, device=pl_module.device)
        batches = self.my_batches(trainer)
        bar = tqdm(total=len(batches), desc=f"post-train ({self.split}, non-adaptive)",
                   disable=trainer.global_rank != 0, leave=False, dynamic_ncols=True)
        for batch_index, (x, y) in batches:
            x, y = x.to(pl_module.device), y.to(pl_module.device)
            counts += self._count_batch(net, defence, x, y, self.seed + batch_index, pairs)
            bar.update(1)
            bar.set_postfix(fine_tunes=defence.fine_tunes)
            self.stop_if_preempted(trainer)
        bar.close()
        work = torch.tensor([defence.fine_tunes, defence.cache_hits], device=pl_module.device)
        if trainer.world_size > 1:  # every process calls the collectives
            counts = trainer.strategy.reduce(counts, reduce_op="sum")
            pairs = trainer.strategy.reduce(pairs, reduce_op="sum")
            work = trainer.strategy.reduce(work, reduce_op="sum")
        result = self._result(trainer, pl_module, stage, counts.tolist(), pairs, work.tolist(), time.time() - started)
        result["provenance"] = provenance(trainer, pl_module, started, self)
        self.results.append(result)
        if trainer.is_global_zero:
            self._report(trainer, result)
        return result

    def _defence(self, trainer, pl_module) -> PostTrain:
        train_set = trainer.datamodule.dataset(self.train_split)
        try:
            labels = labels_of(train_set)
        except TypeError:  # a dataset that keeps no labels: PostTrain reads them item by item
            labels = None
        return PostTrain(getattr(pl_module, "net", pl_module), train_set, self.defence, labels=labels)

    def _count_batch(self, net, defence: PostTrain, x, y, seed: int, pairs: torch.Tensor) -> torch.Tensor:
        """Counts in COUNTS order; ``pairs[0 | 1][a, b]`` += samples whose (sorted) pair is {a, b},
        on clean | adversarial inputs."""
        x_adv = create_attack({**self.attack, "seed": seed})(net, x, y)
        counts = [y.numel()]
        in_pair, no_neighbour = [], []
        for kind, inputs in enumerate((x, x_adv)):
            with attack_mode(net), torch.no_grad():
                base = net(inputs).argmax(1)
            original, neighbour = defence.neighbours(inputs, seed)
            defended = defence.classify(inputs, original, neighbour)
            counts += [(base == y).sum(), (defended == y).sum()]
            in_pair.append(((original == y) | (neighbour == y)).sum())
            no_neighbour.append((original == neighbour).sum())
            low, high = torch.minimum(original, neighbour), torch.maximum(original, neighbour)
            pairs[kind].index_put_((low, high), torch.ones_like(low), accumulate=True)
        return torch.stack([torch.as_tensor(c, device=y.device) for c in counts + in_pair + no_neighbour])

    def _result(self, trainer, pl_module, stage, counts: list[int], pairs: torch.Tensor, work: list[int],
                seconds: float) -> dict[str, Any]:
        c = dict(zip(COUNTS, counts))
        total = max(c["samples"], 1)
        eps = create_attack(self.attack).eps
        off_diagonal = ~torch.eye(pairs.shape[1], dtype=torch.bool, device=pairs.device)
        distinct = ((pairs > 0) & off_diagonal).flatten(1).sum(1).tolist()
        rows = [{"attack": defence, "eps": e, "accuracy": c[key] / total, "correct": c[key], "total": c["samples"]}
                for defence, suffix in (("base", ""), ("post_train", "_post_train"))
                for e, key in ((0.0, f"clean_correct{suffix}"), (eps, f"robust_correct{suffix}"))]
        hparams = dict(getattr(pl_module, "hparams", {}))
        return {
            "stage": stage, "split": self.split, "epoch": trainer.current_epoch, "global_step": trainer.global_step,
            "evaluation": "non-adaptive", "threat_model": NON_ADAPTIVE,
            "num_samples": c["samples"],
            "clean_correct": c["clean_correct"], "clean_accuracy": c["clean_correct"] / total,
            "clean_accuracy_post_train": c["clean_correct_post_train"] / total,
            "robust_accuracy": c["robust_correct"] / total,
            "robust_accuracy_post_train": c["robust_correct_post_train"] / total,
            "counts": c,
            "label_in_pair": {"clean": c["clean_label_in_pair"] / total,
                              "adversarial": c["adversarial_label_in_pair"] / total},
            "no_neighbour": {"clean": c["clean_no_neighbour"] / total,
                             "adversarial": c["adversarial_no_neighbour"] / total},
            "distinct_pairs": {"clean": distinct[0], "adversarial": distinct[1]},
            "fine_tunes_all_processes": work[0], "cache_hits_all_processes": work[1],
            "attack": {**self.attack, "eps": eps}, "defence": self.defence.to_dict(),
            "rows": rows,
            "model": {k: hparams.get(k) for k in ("backbone", "source", "num_classes", "objective", "attack") if k in hparams},
            "data": trainer.datamodule.describe() if hasattr(trainer.datamodule, "describe") else {},
            "world_size": trainer.world_size, "seconds": round(seconds, 2),
        }

    def _report(self, trainer, result: dict[str, Any]) -> None:
        path = run_directory(trainer) / self.filename
        append_json(path, result)
        log_to_loggers(trainer.loggers, {**result, "split": f"{self.split}/post_train"}, trainer.global_step)
        grid = format_table(result).split("\n", 1)[1]  # the accuracy grid, without the sweep's header line
        rank_zero_info(f"post-train defence on {result['num_samples']} {self.split} images; {NON_ADAPTIVE}\n"
                       f"rows: base model, post-train; eps 0 = clean inputs, eps > 0 = {self.attack['name']} on the "
                       f"base model\n{grid}\nwritten to {path}")
