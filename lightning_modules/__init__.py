"""LightningModules: the adversarial classifier, its backbones and training objectives."""
from lightning_modules import backbones  # noqa: F401  (registers our nets in timm)
from lightning_modules.classifier import AdversarialClassifier
from lightning_modules.normalization import Normalize
from lightning_modules.objectives import OBJECTIVES, create_objective

__all__ = ["AdversarialClassifier", "Normalize", "OBJECTIVES", "create_objective"]
