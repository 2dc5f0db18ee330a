"""Callbacks: epsilon-sweep robustness evaluation, the transfer attack it can run, post-train evaluation,
the blur report's perturbation score, an image gallery, run provenance."""
from callbacks.gallery import ImageGallery
from callbacks.post_train import PostTrainEvaluation
from callbacks.preemption import Preemption
from callbacks.perturbation_score import PerturbationScore, perturbation_score
from callbacks.robustness import RobustnessEvaluation
from callbacks.run_dir import run_directory
from callbacks.transfer import TransferAttack

__all__ = ["ImageGallery", "PerturbationScore", "Preemption", "PostTrainEvaluation", "RobustnessEvaluation",
           "TransferAttack", "perturbation_score",
           "run_directory"]
