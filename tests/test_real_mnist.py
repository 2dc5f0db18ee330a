"""Real data: a short PGD-AT run on an MNIST subset is far more robust than clean training."""
from __future__ import annotations

import pytest

from tests.conftest import REPO, SHARED_DATASETS, needs_mnist
from tests.test_cli import csv_logger, evaluations
from experiments.cli import main

# the YAML's sweep alone (not its APGD evaluation), on 500 test images
SWEEP = ('[{class_path: callbacks.RobustnessEvaluation, init_args: {attacks: [{name: pgd, steps: 40, alpha: 0.01}, '
         '{name: fgsm}], epsilons: [0.1, 0.2, 0.3], num_samples: 500}}]')
SHORT_RUN = ["--data.data_dir", str(SHARED_DATASETS), "--data.train_size", "12000", "--trainer.max_epochs", "3",
             "--trainer.limit_val_batches", "2", "--trainer.enable_progress_bar", "false",
             "--trainer.callbacks", SWEEP]


def robust_accuracy(objective: str, root) -> dict:
    main(["fit", "--config", str(REPO / "experiments" / "mnist_pgd_at.yaml"), *SHORT_RUN, *csv_logger(root),
          "--model.objective", objective])
    (result,) = evaluations(root)
    return {(r["attack"], r["eps"]): r["accuracy"] for r in result["rows"]}


@pytest.mark.slow
@needs_mnist
def test_pgd_training_beats_clean_training_under_pgd40(tmp_path):
    adversarial = robust_accuracy("adversarial", tmp_path / "pgd_at")
    clean = robust_accuracy("clean", tmp_path / "clean")
    assert clean[("worst_case", 0.0)] > 0.9 and adversarial[("worst_case", 0.0)] > 0.9  # short run: 3 epochs, 12k images
    # at eps 0.3 (PGD-40 and FGSM, worst case per sample) clean training collapses, PGD-AT holds
    assert clean[("worst_case", 0.3)] < 0.05
    assert adversarial[("worst_case", 0.3)] > clean[("worst_case", 0.3)] + 0.4, (adversarial, clean)
