"""Callbacks: epsilon-sweep robustness evaluation, and the transfer attack it can run."""
from callbacks.robustness import RobustnessEvaluation
from callbacks.run_dir import run_directory
from callbacks.transfer import TransferAttack

__all__ = ["RobustnessEvaluation", "TransferAttack", "run_directory"]
