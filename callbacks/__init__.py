"""Callbacks: epsilon-sweep robustness evaluation."""
from callbacks.robustness import RobustnessEvaluation
from callbacks.run_dir import run_directory

__all__ = ["RobustnessEvaluation", "run_directory"]
