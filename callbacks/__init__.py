"""Callbacks: epsilon-sweep robustness evaluation, post-train evaluation,
the blur report's perturbation score, an image gallery, run provenance."""
from callbacks.gallery import ImageGallery
from callbacks.post_train import PostTrainEvaluation
from callbacks.preemption import Preemption
from callbacks.perturbation_score import PerturbationScore, perturbation_score
from callbacks.robustness import RobustnessEvaluation
from callbacks.run_dir import run_directory

__all__ = ["ImageGallery", "PerturbationScore", "Preemption", "PostTrainEvaluation", "RobustnessEvaluation",
           "perturbation_score", "run_directory"]
