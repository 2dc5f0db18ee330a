"""The blur-defence report's score: accuracy x mean ||I_adv - I||_2 (Jézéquel 2019, section 3).

The report rates a defence by the product of its accuracy and the norm of the difference
between an image and its adversarial image under the L2-normalised iterative targeted
attack of its section 2.1 (``l2_iterative_targeted``): a defence is better when it keeps
accuracy and forces the attacker to change the image more. Higher is better.

Our reading of which images the mean is over (the report does not say): the attack
"transforms an image of class A into an image classified as B" and runs until it
succeeds, so the mean is over the test images the model classifies correctly on clean
input (class A) on which the attack reached its target (class B != A) within its step
budget. Failed attacks have no adversarial image and are left out of the mean; their
share is reported as ``1 - success_rate``, so a mean over few successes is visible.
Norms are L2 over the whole image in [0, 1] pixel units; accuracy is clean accuracy on
all evaluated images.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import torch
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import nn
from tqdm.auto import tqdm

from attacks import Attack, attack_mode, create_attack
from callbacks.evaluation import Counts, EvaluationCallback, zeros

DEFAULT_ATTACK = {"name": "l2_iterative_targeted"}
DEFINITION = ("score = accuracy x mean_l2; accuracy on clean images; mean_l2 = mean ||x_adv - x||_2 ([0, 1] pixels) "
              "over clean-correct images the targeted attack moved to its target class")


def zero_perturbation_counts() -> Counts:
    """Images, clean correct, attacked, successful (long), and the sum of the successful L2 norms (float64)."""
    return {**zeros(num_samples=(), clean_correct=(), attacked=(), successful=()),
            **zeros(torch.float64, l2_sum=())}


def perturbation_counts(model: nn.Module, attack: Attack, x: torch.Tensor, y: torch.Tensor) -> Counts:
    """The counts of :func:`zero_perturbation_counts` on one batch of ``model`` (on x's device).

    ``attack`` must be a targeted attack that fills ``last_info["success"]`` and
    ``last_info["l2_norm"]`` (``l2_iterative_targeted``, or it wrapped in ``bpda``).
    """
    with attack_mode(model):
        with torch.no_grad():
            correct = model(x).argmax(1) == y
        counts = {"num_samples": torch.tensor(y.numel()), "clean_correct": correct.sum()}
        if not correct.any():
            return counts
        attack(model, x[correct], y[correct])
    info = attack.last_info
    if "success" not in info or "l2_norm" not in info:
        raise ValueError(f"{attack!r} reports no per-sample success and l2_norm in last_info; "
                         "use {name: l2_iterative_targeted} (optionally inside bpda)")
    return {**counts, "attacked": correct.sum(), "successful": info["success"].sum(),
            "l2_sum": info["l2_norm"][info["success"]].double().sum()}


def score_from_counts(counts: Mapping[str, Any]) -> dict[str, Any]:
    """Accuracy, mean L2 norm of the successful perturbations and their product (None without successes)."""
    n, correct, attacked, successful, l2_sum = (float(counts[k]) for k in
                                                ("num_samples", "clean_correct", "attacked", "successful", "l2_sum"))
    accuracy = correct / n if n else 0.0
    mean_l2 = l2_sum / successful if successful else None
    return {"accuracy": accuracy, "mean_l2": mean_l2, "score": accuracy * mean_l2 if mean_l2 is not None else None,
            "success_rate": successful / attacked if attacked else None,
            **{k: int(counts[k]) for k in ("num_samples", "clean_correct", "attacked", "successful")}}


def perturbation_score(model: nn.Module, loader: Iterable, attack: Union[str, dict[str, Any]] = DEFAULT_ATTACK,
                       device: Optional[torch.device] = None, progress: bool = True) -> dict[str, Any]:
    """The report's score of ``model`` on the (x, y) batches of ``loader``, outside a Trainer; see the module
    docstring (in a run: :class:`PerturbationScore`)."""
    attack, device = create_attack(attack), device or next(model.parameters()).device
    counts = zero_perturbation_counts()
    for x, y in tqdm(loader, desc="perturbation score", leave=False, dynamic_ncols=True, disable=not progress):
        for name, value in perturbation_counts(model, attack, x.to(device), y.to(device)).items():
            counts[name] += value.cpu()
    return score_from_counts(counts)


class PerturbationScore(EvaluationCallback):
    """The report's score (module docstring) at the end of fit and/or test; writes a json and logs it.

    Args:
        attack: targeted attack spec (default the report's ``{name: l2_iterative_targeted}``:
            unbounded, steps of L2 length 0.1, at most 100 steps, least-likely target).
        split: ``test`` or ``val``. num_samples: a fixed, seeded subset (None = whole split).
        batch_size: batch size of the evaluation. run_on: ``fit_end`` and/or ``test_end``.
        seed: seed of the subset. filename: json in the run directory (evaluations appended).
        run_under_fast_dev_run: evaluate in a ``fast_dev_run`` smoke run too (default: stand down).

    Under DDP each process scores its share of the global batches (callbacks.sharding) and the sums are added, so the
    result does not depend on the number of processes (the attack treats images independently;
    with target_rule "random" the drawn targets depend on the sharding).
    """

    def __init__(self, attack: Union[str, dict[str, Any]] = DEFAULT_ATTACK, split: str = "test",
                 num_samples: Optional[int] = 1000, batch_size: int = 256,
                 run_on: Sequence[str] = ("fit_end", "test_end"), seed: int = 0,
                 filename: str = "perturbation_score.json", run_under_fast_dev_run: bool = False):
        self.attack = {"name": attack} if isinstance(attack, str) else dict(attack)
        create_attack(self.attack)  # unknown names/options fail now, not after training
        super().__init__(split, num_samples, batch_size, run_on, seed, filename, run_under_fast_dev_run)
        self._attack: Optional[Attack] = None

    def settings(self) -> dict[str, Any]:
        return {"attack": self.attack, **super().settings()}

    def progress_label(self) -> str:
        return f"perturbation score ({self.split})"

    def prepare(self, trainer, pl_module) -> None:
        self._attack = create_attack(self.attack)  # one attack for the evaluation: its random stream continues

    def zero_counts(self, trainer, pl_module) -> Counts:
        return zero_perturbation_counts()

    def count_batch(self, pl_module, x, y, batch_index: int) -> Counts:
        return perturbation_counts(pl_module, self._attack, x, y)

    def summarise(self, trainer, pl_module, counts: Counts) -> dict[str, Any]:
        return {**score_from_counts(counts), "definition": DEFINITION, "attack": self._attack.config()}

    def report(self, trainer, result: dict[str, Any], path: Path) -> None:
        prefix = f"perturbation_score/{result['split']}"
        metrics = {f"{prefix}/{k}": result[k] for k in ("accuracy", "mean_l2", "score", "success_rate")
                   if result[k] is not None}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        if result["mean_l2"] is None:
            rank_zero_warn("perturbation score: the attack reached no target, so the mean L2 norm and the score "
                           "are undefined (a stronger attack, or gradient masking?)")
        rank_zero_info(format_score(result) + f"\nwritten to {path}")


def format_score(result: dict[str, Any]) -> str:
    """One line: accuracy, mean L2, score, success rate."""
    def fmt(v):
        return "n/a" if v is None else f"{v:.4f}"
    return (f"perturbation score on {result['num_samples']} {result.get('split', '')} images: accuracy "
            f"{fmt(result['accuracy'])} x mean L2 {fmt(result['mean_l2'])} = {fmt(result['score'])} "
            f"(targets reached on {fmt(result['success_rate'])} of {result['attacked']} attacked)")
