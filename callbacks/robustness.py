"""Epsilon-sweep robustness evaluation as a Lightning callback.

For a list of attacks and epsilons (pixel units, [0, 1] images), the robust accuracy
of the model on the val or test split: per attack, and per sample the worst case over
all attacks. eps = 0 is always part of the sweep, so the chart starts at clean accuracy.

Distributed: the evaluated samples are cut into the same global batches whatever the
number of processes; process r evaluates batches r, r + W, r + 2W, ... and the counts
are summed over processes. No sample is padded or duplicated, and each batch's attack
seeds depend on the batch index only, so counts equal a one-process run's.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from tqdm.auto import tqdm

from attacks import as_float, attack_mode, create_attack
from attacks.norms import BALLS
from callbacks.batch_cache import BatchCache
from callbacks.evaluation import EvaluationCallback
from callbacks.plots import robustness_curve
from callbacks.provenance import provenance
from callbacks.report import append_json, format_table, log_to_loggers, sanity_warnings
from callbacks.run_dir import run_directory
from callbacks.sweep import CHECK_COLUMNS, attack_check_warnings, masking_probe, sweep_batch
from datamodules.identity import dataset_identity



class RobustnessEvaluation(EvaluationCallback):
    """Robust accuracy over attacks x epsilons, written to robustness.json and the loggers.

    Args:
        attacks: attack specs, e.g. ``[{name: pgd, steps: 40, alpha: 0.01}, {name: fgsm}]``;
            their ``eps`` is set by the sweep.
        epsilons: perturbation budgets in pixel units (numbers or fractions like "8/255").
        split: ``test`` or ``val``.
        num_samples: evaluate a fixed, seeded subset of this size (None = the whole split).
        batch_size: evaluation batch size (the global batching, not per process).
        run_on: when to run: ``fit_end``, ``test_end``, ``validation_epoch`` (see every_n_epochs).
        every_n_epochs: with ``validation_epoch``, run after every N-th validation epoch.
        seed: seed of the subset and of the attacks' random starts.
        filename: results file, in the run directory.
        cache_dir: when set, each batch's counts are kept under this folder, keyed by the
            model weights and these settings; a restarted evaluation skips finished batches.
        masking_checks: also probe the first ``check_samples`` samples for gradient masking
            (PGD at an unbounded eps must reach ~0% accuracy; PGD-50 must not do worse
            than PGD-10 at the largest eps). Points fooled only by a black-box attack are
            always counted.
    """

    STAGES = ("fit_end", "test_end", "validation_epoch")

    def __init__(
        self,
        attacks: Sequence[Union[str, dict[str, Any]]] = ({"name": "pgd", "steps": 10},),
        epsilons: Sequence[Union[float, str]] = (8 / 255,),
        split: str = "test",
        num_samples: Optional[int] = None,
        batch_size: int = 256,
        run_on: Sequence[str] = ("fit_end", "test_end"),
        every_n_epochs: int = 1,
        seed: int = 0,
        filename: str = "robustness.json",
        cache_dir: Optional[str] = None,
        masking_checks: bool = True,
        check_samples: int = 200,
    ):
        self.attacks = [{"name": a} if isinstance(a, str) else dict(a) for a in attacks]
        # unknown names/options fail now, not after training; L2 and L1 budgets may exceed 1
        norms = [create_attack({**spec, "eps": 0.0}).norm for spec in self.attacks]
        limit = 1.0 if "linf" in norms or not norms else float("inf")
        self.epsilons = sorted({0.0, *(as_float(e) for e in epsilons)})
        for eps in self.epsilons:
            if not 0.0 <= eps <= limit:
                raise ValueError(f"epsilon {eps} is outside [0, 1]; epsilons are in [0, 1] pixel units (write 8/255); "
                                 "only sweeps of L2 or L1 attacks alone take eps > 1")
        super().__init__(split, num_samples, batch_size, run_on, seed, filename)
        self.every_n_epochs = every_n_epochs
        self.cache_dir = cache_dir
        self.masking_checks, self.check_samples = masking_checks, check_samples
        # the PGD probes need a norm PGD has (not L1): the first such attack's, none for an L1-only sweep
        probe_norms = [n for n in norms if n in BALLS]
        self.probe_norm = probe_norms[0] if probe_norms else (None if self.attacks else "linf")

    def on_validation_end(self, trainer, pl_module):
        if ("validation_epoch" in self.run_on and not trainer.sanity_checking and trainer.state.fn == "fit"
                and (trainer.current_epoch + 1) % self.every_n_epochs == 0):
            self.evaluate(trainer, pl_module, "validation_epoch")

    # -- the evaluation ----------------------------------------------------------------
    def evaluate(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> dict[str, Any]:
        self.require_gradients()
        started = time.time()
        batches = self.my_batches(trainer)
        world, rank = trainer.world_size, trainer.global_rank
        n_attacks, n_eps = len(self.attacks), len(self.epsilons)
        counts = torch.zeros(self._layout()["size"], dtype=torch.long, device=pl_module.device)
        bar = tqdm(total=len(batches), desc=f"robustness ({self.split}, {n_attacks} attacks x {n_eps} eps)",
                   disable=rank != 0, leave=False, dynamic_ncols=True)
        cache = self._cache(trainer, pl_module)
        with attack_mode(pl_module):
            for batch_index, (x, y) in batches:
                batch_counts = cache.load(batch_index, x, y) if cache else None
                if batch_counts is None:
                    batch_counts = self._count_batch(pl_module, x, y, batch_index)
                    if cache:
                        cache.save(batch_index, x, y, batch_counts)
                counts += batch_counts.to(counts.device)
                bar.update(1)
                self.stop_if_preempted(trainer)
        bar.close()
        counts = trainer.strategy.reduce(counts, reduce_op="sum") if world > 1 else counts
        result = self._result(trainer, pl_module, stage, counts.cpu().tolist(), time.time() - started)
        result["provenance"] = provenance(trainer, pl_module, started, self)
        if trainer.is_global_zero:  # the evaluated checkpoint's epoch and step (a test loop restores neither)
            result.update(epoch=result["provenance"]["checkpoint"]["epoch"],
                          global_step=result["provenance"]["checkpoint"]["global_step"])
        self.results.append(result)
        if trainer.is_global_zero:
            self._report(trainer, result)
        return result

    def _layout(self) -> dict[str, Any]:
        """Where each count sits in the per-batch counts vector."""
        n_robust = (len(self.attacks) + 1) * len(self.epsilons)  # each attack, then the worst case
        black_box = 2 + n_robust
        probes = black_box + len(self.epsilons)
        checks = probes + 4
        return {"robust": slice(2, black_box), "black_box_only": slice(black_box, probes),
                "probes": slice(probes, checks),
                "checks": slice(checks, checks + len(self.attacks) * len(CHECK_COLUMNS)),
                "size": checks + len(self.attacks) * len(CHECK_COLUMNS)}

    def _count_batch(self, pl_module, x, y, batch_index: int) -> torch.Tensor:
        """[samples, clean correct, robust correct per (attack, eps) and worst case per eps,
        black-box-only per eps, probe samples, probe correct: unbounded, PGD-10, PGD-50]."""
        x, y = x.to(pl_module.device), y.to(pl_module.device)
        sweep = sweep_batch(pl_module, x, y, self.attacks, self.epsilons, self.seed + batch_index)
        worst = sweep.robust.all(dim=0, keepdim=True)
        layout = self._layout()
        counts = torch.zeros(layout["size"], dtype=torch.long, device=y.device)
        counts[0], counts[1] = y.numel(), sweep.clean_correct.sum()
        counts[layout["robust"]] = torch.cat([sweep.robust, worst]).sum(dim=2).flatten()
        counts[layout["black_box_only"]] = sweep.black_box_only.sum(dim=1)
        counts[layout["checks"]] = sweep.checks.flatten()
        probe_eps = max(self.epsilons)
        if self.masking_checks and self.probe_norm and probe_eps > 0 and batch_index * self.batch_size < self.check_samples:
            probe = masking_probe(pl_module, x, y, self.probe_norm, probe_eps, self.seed + batch_index)
            counts[layout["probes"]] = torch.cat([torch.tensor([y.numel()], device=y.device), probe])
        return counts

    def _cache(self, trainer, pl_module) -> Optional[BatchCache]:
        if self.cache_dir is None:
            return None
        settings = {"attacks": self.attacks, "epsilons": self.epsilons, "split": self.split,
                    "num_samples": self.num_samples, "seed": self.seed, "batch_size": self.batch_size,
                    "masking_checks": self.masking_checks, "check_samples": self.check_samples,
                    "counts_layout": self._layout()["size"],
                    "data": trainer.datamodule.describe() if hasattr(trainer.datamodule, "describe") else None,
                    "data_identity": dataset_identity(trainer.datamodule, trainer.datamodule.dataset(self.split))}
        return BatchCache(Path(self.cache_dir), pl_module, settings)

    def _result(self, trainer, pl_module, stage, counts: list[int], seconds: float) -> dict[str, Any]:
        layout = self._layout()
        total, clean_correct = counts[0], counts[1]
        robust = counts[layout["robust"]]
        names = [self._attack_label(spec) for spec in self.attacks] + ["worst_case"]
        rows = []
        for a, name in enumerate(names):
            for e, eps in enumerate(self.epsilons):
                correct = robust[a * len(self.epsilons) + e]
                rows.append({"attack": name, "eps": eps, "accuracy": correct / max(total, 1),
                             "correct": correct, "total": total})
        probe_total, unbounded, pgd10, pgd50 = counts[layout["probes"]]
        checks = {"black_box_only": dict(zip(map(str, self.epsilons), counts[layout["black_box_only"]]))}
        if probe_total:
            checks.update({
                "probe_samples": probe_total, "probe_norm": self.probe_norm, "probe_eps": max(self.epsilons),
                "unbounded_pgd20_accuracy": unbounded / probe_total,
                "pgd10_accuracy": pgd10 / probe_total, "pgd50_accuracy": pgd50 / probe_total,
            })
        hparams = dict(getattr(pl_module, "hparams", {}))
        result = {
            "stage": stage, "split": self.split, "epoch": trainer.current_epoch, "global_step": trainer.global_step,
            "num_samples": total, "clean_correct": clean_correct, "clean_accuracy": clean_correct / max(total, 1),
            "threat_model": "white-box; every attack differentiates through the whole model, [0, 1] pixels to logits",
            "attacks": [{**spec, "label": label} for spec, label in zip(self.attacks, names)],
            "norms": sorted({create_attack({**s, "eps": 0.0}).norm for s in self.attacks}),
            "rows": rows,
            "gradient_masking_checks": checks,
            "model": {k: hparams.get(k) for k in ("backbone", "source", "num_classes", "objective", "attack", "preprocessing") if k in hparams},
            "data": trainer.datamodule.describe() if hasattr(trainer.datamodule, "describe") else {},
            "world_size": trainer.world_size, "seconds": round(seconds, 2),
        }
        attack_checks = counts[layout["checks"]]
        result["attack_checks"] = {
            label: dict(zip(CHECK_COLUMNS, attack_checks[a * len(CHECK_COLUMNS):(a + 1) * len(CHECK_COLUMNS)]))
            for a, label in enumerate(names[:-1]) if any(attack_checks[a * len(CHECK_COLUMNS):(a + 1) * len(CHECK_COLUMNS)])}
        result["warnings"] = sanity_warnings(result) + attack_check_warnings(result["attack_checks"])
        return result

    @staticmethod
    def _attack_label(spec: dict[str, Any]) -> str:
        options = ",".join(f"{k}={v}" for k, v in spec.items() if k not in ("name", "eps", "seed"))
        return f"{spec['name']}({options})" if options else spec["name"]

    def _report(self, trainer, result: dict[str, Any]) -> None:
        path = run_directory(trainer) / self.filename
        append_json(path, result)
        curve = robustness_curve(
            result, path.with_name(f"{path.stem}_{result['stage']}_step{result['global_step']}.png"))
        log_to_loggers(trainer.loggers, result, trainer.global_step)
        rank_zero_info(format_table(result) + f"\nwritten to {path} (curve: {curve.name})")
        for warning in result["warnings"]:
            rank_zero_warn(f"robustness sanity check: {warning}")

    @property
    def state_key(self) -> str:
        """Several sweeps in one run (e.g. APGD on a subset beside the full sweep) keep their own state."""
        return self._generate_state_key(attacks=self.attacks, epsilons=self.epsilons, split=self.split,
                                        num_samples=self.num_samples, seed=self.seed)

    def state_dict(self) -> dict[str, Any]:
        return {"results": self.results}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.results = list(state_dict.get("results", []))
