"""Cross-model adversarial augmentation (Ali, Raza & Gan; cross-model-adversarial-augmentation.md).

The paper's recipe (Sec. 3.2 and 4.2):

1. Train a source model conventionally (their ResNet-18, the most vulnerable of their ResNets).
2. Craft FGSM examples on the source model from every image of the *training* split, with
   the true labels, at eps 0.01, 0.02 and 0.03 (L-inf, [0, 1] pixel units), and add them,
   with those true labels, to the original training images: the training set becomes
   (1 + number of eps) x the clean one. Validation and test stay clean.
3. Train the target models (ResNet-18/50/101) on it, with classic augmentation (rotation,
   shift, flips, brightness, noise, ...) and undersampling to balance the classes.
   Table 3 is the same training without the adversarial part (augmentation only, here
   ``adversarial: false``), Table 4 with it; both evaluate FGSM at each eps on the test split.

Augmentation, balancing and the split come from the base datamodule's own options and are
applied to the whole augmented set. The adversarial sets are generated and cached by
:mod:`datamodules.pregenerated` (same cache, same key); the source model is white box to
the generation only, the target never sees its gradients.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

from attacks.transfer import CHECKPOINT_LOADER, Loader
from datamodules.base import ClassificationDataModule
from datamodules.pregenerated import PregeneratedAdversarialDataModule


class CrossModelAugmentedDataModule(PregeneratedAdversarialDataModule):
    """Training split = the base's training images + one adversarial copy per eps, crafted on
    ``source_checkpoint``; val and test are the base's, clean.

    Args:
        base: the datamodule to augment (its ``augment``/``balance``/split options apply).
        source_checkpoint: the advtrain checkpoint of the source model (needed unless
            ``adversarial`` is false).
        attack: the attack spec without eps (default FGSM, as in the paper).
        epsilons: one adversarial copy of the training split per eps (pixel units).
        adversarial: false gives the paper's augmentation-only baseline (the base's training
            split unchanged).
        cache_dir, seed, attack_batch_size, device, checkpoint_loader: as in
            PregeneratedAdversarialDataModule.
    """

    checkpoint_arg = "source_checkpoint"

    def __init__(self, base: ClassificationDataModule, source_checkpoint: Optional[str] = None,
                 attack: Optional[dict[str, Any]] = None, epsilons: Sequence[float] = (0.01, 0.02, 0.03),
                 adversarial: bool = True, cache_dir: Optional[str] = None, seed: int = 0,
                 attack_batch_size: int = 256, device: Optional[str] = None,
                 checkpoint_loader: Loader = CHECKPOINT_LOADER):
        attack = dict(attack or {"name": "fgsm"})
        if "eps" in attack:
            raise ValueError("give the budgets as data.init_args.epsilons, not as attack.eps")
        if adversarial and not epsilons:
            raise ValueError("epsilons is empty: give at least one eps, or adversarial: false for the "
                             "augmentation-only baseline")
        specs = [{**attack, "eps": eps} for eps in epsilons] if adversarial else []
        super().__init__(base, source_checkpoint, specs, mix="mixed", cache_dir=cache_dir, seed=seed,
                         attack_batch_size=attack_batch_size, device=device, checkpoint_loader=checkpoint_loader)
        self.source_checkpoint = source_checkpoint
        self.epsilons = list(epsilons)
        self.adversarial = adversarial
