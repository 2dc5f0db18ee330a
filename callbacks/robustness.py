"""Epsilon-sweep robustness evaluation as a Lightning callback.

For a list of attacks and epsilons (pixel units, [0, 1] images), the robust accuracy
of the model on the val or test split: per attack, and per sample the worst case over
all attacks. eps = 0 is always part of the sweep, so the chart starts at clean accuracy.
Every eps must fit every attack's own norm (the attack checks it). The result's
``threat_model`` comes from the attacks run: white-box, black-box (Square) or transfer.

Distributed: the evaluated samples are cut into the same global batches whatever the
number of processes; process r evaluates batches r, r + W, r + 2W, ... and the counts
are summed over processes. No sample is padded or duplicated, and each batch's attack
seeds depend on the batch index only, so counts equal a one-process run's.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

from attacks import as_float, attack_mode, create_attack
from attacks.norms import BALLS
from callbacks.evaluation import Counts, EvaluationCallback, zeros
from callbacks.plots import robustness_curve
from callbacks.report import format_table, log_to_loggers, sanity_warnings
from callbacks.sweep import CHECK_COLUMNS, THREAT_MODELS, attack_check_warnings, masking_probe, sweep_batch, threat_model


class RobustnessEvaluation(EvaluationCallback):
    """Robust accuracy over attacks x epsilons, written to robustness.json and the loggers.

    Args:
        attacks: attack specs, e.g. ``[{name: pgd, steps: 40, alpha: 0.01}, {name: fgsm}]``;
            their ``eps`` is set by the sweep.
        epsilons: perturbation budgets in pixel units (numbers or fractions like "8/255"), shared
            by every attack: each must fit each attack's norm (L-inf at most 1; L2 and L1 budgets may exceed 1).
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
        run_under_fast_dev_run: evaluate in a ``fast_dev_run`` smoke run too (default: stand down).
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
        run_under_fast_dev_run: bool = False,
    ):
        self.attacks = [{"name": a} if isinstance(a, str) else dict(a) for a in attacks]
        self.epsilons = sorted({0.0, *(as_float(e) for e in epsilons)})
        built = [create_attack({**spec, "eps": 0.0}) for spec in self.attacks]  # unknown names/options fail now
        self.labels = [self._attack_label(spec) for spec in self.attacks]
        self._check_budgets()
        super().__init__(split, num_samples, batch_size, run_on, seed, filename, run_under_fast_dev_run)
        self.every_n_epochs = every_n_epochs
        self.cache_dir = cache_dir
        self.masking_checks, self.check_samples = masking_checks, check_samples
        self.norms = [attack.norm for attack in built]
        self.threat_models = [threat_model(attack) for attack in built]
        # the PGD probes need a norm PGD has (not L1): the first such attack's, none for an L1-only sweep
        probe_norms = [n for n in self.norms if n in BALLS]
        self.probe_norm = probe_norms[0] if probe_norms else (None if self.attacks else "linf")

    def _check_budgets(self) -> None:
        """Every eps within every attack's own norm range (each attack checks its own), before any work."""
        for spec, label in zip(self.attacks, self.labels):
            for eps in self.epsilons:
                try:
                    create_attack({**spec, "eps": eps})
                except ValueError as err:
                    raise ValueError(f"epsilon {eps:g} does not fit {label}: {err}. The epsilons are shared by "
                                     "every attack of a sweep; put attacks of another norm (L2 budgets above 1) "
                                     "in a RobustnessEvaluation of their own") from None

    def on_validation_end(self, trainer, pl_module):
        if (self.runs(trainer, "validation_epoch") and trainer.state.fn == "fit"
                and (trainer.current_epoch + 1) % self.every_n_epochs == 0):
            self.evaluate(trainer, pl_module, "validation_epoch")

    # -- the template's steps ----------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        return {"attacks": self.attacks, "epsilons": self.epsilons, **super().settings(),
                "masking_checks": self.masking_checks, "check_samples": self.check_samples}

    def progress_label(self) -> str:
        return f"robustness ({self.split}, {len(self.attacks)} attacks x {len(self.epsilons)} eps)"

    def zero_counts(self, trainer, pl_module) -> Counts:
        """Samples, clean correct, robust correct per (attack, eps) and per eps for the worst case (last
        row), black-box-only per eps, the probe (samples; correct under unbounded PGD-20, PGD-10, PGD-50),
        per attack the checks of CHECK_COLUMNS."""
        n_attacks, n_eps = len(self.attacks), len(self.epsilons)
        return zeros(samples=(), clean_correct=(), robust=(n_attacks + 1, n_eps), black_box_only=(n_eps,),
                     probe=(4,), checks=(n_attacks, len(CHECK_COLUMNS)))

    def count_batch(self, pl_module, x, y, batch_index: int) -> Counts:
        with attack_mode(pl_module):
            sweep = sweep_batch(pl_module, x, y, self.attacks, self.epsilons, self.seed + batch_index)
            counts = {"samples": torch.tensor(y.numel(), device=y.device), "clean_correct": sweep.clean_correct.sum(),
                      "robust": torch.cat([sweep.robust, sweep.robust.all(dim=0, keepdim=True)]).sum(dim=2),
                      "black_box_only": sweep.black_box_only.sum(dim=1), "checks": sweep.checks}
            probe_eps = max(self.epsilons)
            if (self.masking_checks and self.probe_norm and probe_eps > 0
                    and batch_index * self.batch_size < self.check_samples):
                probe = masking_probe(pl_module, x, y, self.probe_norm, probe_eps, self.seed + batch_index)
                counts["probe"] = torch.cat([torch.tensor([y.numel()], device=y.device), probe])
        return counts

    def summarise(self, trainer, pl_module, counts: Counts) -> dict[str, Any]:
        total, clean_correct = int(counts["samples"]), int(counts["clean_correct"])
        robust = counts["robust"].tolist()
        rows = [{"attack": name, "eps": eps, "accuracy": robust[a][e] / max(total, 1), "correct": robust[a][e],
                 "total": total}
                for a, name in enumerate([*self.labels, "worst_case"]) for e, eps in enumerate(self.epsilons)]
        probe_total, unbounded, pgd10, pgd50 = counts["probe"].tolist()
        checks = {"black_box_only": dict(zip(map(str, self.epsilons), counts["black_box_only"].tolist()))}
        if probe_total:
            checks.update({
                "probe_samples": probe_total, "probe_norm": self.probe_norm, "probe_eps": max(self.epsilons),
                "unbounded_pgd20_accuracy": unbounded / probe_total,
                "pgd10_accuracy": pgd10 / probe_total, "pgd50_accuracy": pgd50 / probe_total,
            })
        result = {
            "num_samples": total, "clean_correct": clean_correct, "clean_accuracy": clean_correct / max(total, 1),
            "threat_model": self._threat_model(),
            "attacks": [{**spec, "label": label, "threat_model": kind}
                        for spec, label, kind in zip(self.attacks, self.labels, self.threat_models)],
            "norms": sorted(set(self.norms)),
            "rows": rows,
            "gradient_masking_checks": checks,
            "attack_checks": {label: dict(zip(CHECK_COLUMNS, row))
                              for label, row in zip(self.labels, counts["checks"].tolist()) if any(row)},
        }
        result["warnings"] = sanity_warnings(result) + attack_check_warnings(result["attack_checks"])
        return result

    def _threat_model(self) -> str:
        """What the attacks actually run assume of the attacker, kind by kind (callbacks.sweep.THREAT_MODELS)."""
        kinds = dict.fromkeys(self.threat_models)
        return "; ".join(f"{kind} ({', '.join(l for l, k in zip(self.labels, self.threat_models) if k == kind)}): "
                         f"{THREAT_MODELS[kind]}" for kind in kinds) or "none: clean accuracy only"

    @staticmethod
    def _attack_label(spec: dict[str, Any]) -> str:
        options = ",".join(f"{k}={v}" for k, v in spec.items() if k not in ("name", "eps", "seed"))
        return f"{spec['name']}({options})" if options else spec["name"]

    def report(self, trainer, result: dict[str, Any], path: Path) -> None:
        curve = robustness_curve(
            result, path.with_name(f"{path.stem}_{result['stage']}_step{result['global_step']}.png"))
        log_to_loggers(trainer.loggers, result, trainer.global_step)
        rank_zero_info(format_table(result) + f"\nwritten to {path} (curve: {curve.name})")
        for warning in result["warnings"]:
            rank_zero_warn(f"robustness sanity check: {warning}")
