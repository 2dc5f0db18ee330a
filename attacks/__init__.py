"""Adversarial attacks on [0, 1] pixels: pure torch, no Lightning.

``attack = create_attack({"name": "pgd", "eps": 0.3, "steps": 40})``, then
``x_adv = attack(model, x, y)``. :class:`Registry` (attacks/registry.py) is the one registry
the other packages use too (objectives, preprocessing, augmentations).
"""
from attacks.apgd import APGD, APGDTargeted
from attacks.apgd_cascade import APGDCascade
from attacks.base import Attack, as_float
from attacks.bpda import BPDA
from attacks.fmn import FMN
from attacks.wrapper import WrappedAttack
from attacks.lbfgs import LBFGS
from attacks.minimum_norm import CarliniWagnerL2, DeepFool
from attacks.model_mode import attack_mode
from attacks.pgd import BIM, FGSM, PGD, FGSMRandomStart
from attacks.post_train_adaptive import PostTrainAdaptive
from attacks.precision import Autocast
from attacks.reference_autoattack import ReferenceAutoAttack
from attacks.square import SquareAttack
from attacks.targeted import FGSMTargeted, L2IterativeTargeted
from attacks.transfer import TransferAttack
from attacks.registry import (ATTACKS, PROJECT_PACKAGES, Registry, attack_options, available_attacks, check_class_path,
                              create_attack, import_project_object, register_attack, spec_name)

__all__ = [
    "APGD", "APGDCascade", "APGDTargeted", "Autocast", "BPDA", "CarliniWagnerL2", "DeepFool", "FMN", "FGSMTargeted",
    "L2IterativeTargeted", "LBFGS", "PostTrainAdaptive", "ReferenceAutoAttack", "SquareAttack", "TransferAttack",
    "Attack", "as_float", "attack_mode", "BIM", "FGSM", "FGSMRandomStart", "PGD",
    "WrappedAttack", "attack_options", "available_attacks", "create_attack", "register_attack",
    "PROJECT_PACKAGES", "check_class_path", "import_project_object", "ATTACKS", "Registry", "spec_name",
]
