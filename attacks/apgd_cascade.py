"""Our AutoAttack-style cascade (``apgd_cascade``): not the reference AutoAttack.

Components run one after another, each only on the points every earlier component
failed on; per sample the first successful adversarial is kept, so the result is the
per-sample worst case over the components.

How it differs from the reference (``{name: autoattack}``, pyautoattack, Croce & Hein 2020):
it has no FAB-T; APGD-CE, APGD-T and Square are our reimplementations (attacks/apgd.py,
attacks/square.py), seeded from our generators, so per-sample results differ from the
reference's even where robust accuracy agrees; Square is L-inf only. Its figures are
labelled ``apgd_cascade(...)``, never "AutoAttack"; benchmarks/autoattack_validation.py
compares it with the reference on trained models.

- version "standard" (L-inf): APGD-CE (100 iterations), APGD-T (9 target classes,
  100 iterations each), Square (5000 queries). For L2 Square is left out (ours is L-inf
  only), so the L2 standard version is white-box only and says so in ``components()``.
- version "apgd": APGD-CE then APGD-T as in "standard", without Square (the white-box part).
- version "cheap": APGD-CE (20 iterations) then APGD-T (3 targets, 20 iterations): a
  strong attack affordable during training (``val_attack``).
- version "fast": the reference standard version's answer at a fraction of its time, for
  evaluation (``bn_mode: eval`` only). APGD-CE and APGD-T as in "standard", but a sample
  stops being computed at its first misclassified iterate (the same points as without early
  stopping, bitwise on CPU); then Square with 500 queries instead of 5000 (L-inf); no FAB-T.
  The reference spends most of its time on points that end robust: on our three models
  FAB-T and Square took 80-92% of it and FAB-T fooled nothing (Square: one image of 500).
  benchmarks/autoattack_fast.py measures where its time goes and prints both answers, their
  times and the per-sample disagreements. Fewer APGD-T targets would save more but lost
  images there (the last of the 9 targets still fooled some).

APGD-T needs at least 4 classes (its DLR loss); on fewer classes (Cats vs Dogs) it is
skipped, and ``last_info["skipped"]`` names it.

Threat model: the given norm's eps-ball around x (pixel units) intersected with [0, 1].
``last_info``: ``fooled_by`` (index of the component that fooled each sample, -1 if
none) and ``black_box_only`` (fooled by a black-box component after every white-box one
failed: a sign of gradient masking).
"""
from __future__ import annotations

import torch
from torch import nn

from attacks.base import Attack
from attacks.registry import create_attack, register_attack

VERSIONS = {
    "standard": [
        {"name": "apgd_ce", "n_iter": 100},
        {"name": "apgd_t", "n_iter": 100, "n_target_classes": 9},
        {"name": "square", "n_queries": 5000},
    ],
    "apgd": [
        {"name": "apgd_ce", "n_iter": 100},
        {"name": "apgd_t", "n_iter": 100, "n_target_classes": 9},
    ],
    "cheap": [
        {"name": "apgd_ce", "n_iter": 20},
        {"name": "apgd_t", "n_iter": 20, "n_target_classes": 3},
    ],
    "fast": [
        {"name": "apgd_ce", "n_iter": 100, "early_stop": True},
        {"name": "apgd_t", "n_iter": 100, "n_target_classes": 9, "early_stop": True},
        {"name": "square", "n_queries": 500},
    ],
}


@register_attack("apgd_cascade")
class APGDCascade(Attack):
    """Our cascade of APGD-CE, APGD-T and Square on still-correct points; not the reference
    AutoAttack (see the module docstring for the differences).

    eps: radius in pixel units (default 8/255); norm: "linf" or "l2"; version: "standard",
    "apgd", "cheap" or "fast".
    """

    def __init__(self, eps: float = 8 / 255, norm: str = "linf", version: str = "standard",
                 bn_mode: str = "eval", seed: int | None = None):
        super().__init__(eps, norm=norm, bn_mode=bn_mode, seed=seed)
        if version not in VERSIONS:
            raise ValueError(f"apgd_cascade: unknown version {version!r}; valid versions: {', '.join(VERSIONS)} "
                             "(the reference AutoAttack is {name: autoattack})")
        self.version = version
        if version == "fast" and bn_mode != "eval":
            raise ValueError(f"apgd_cascade: version fast stops computing fooled samples early, which needs bn_mode "
                             f"eval (got {bn_mode!r}); use version standard")

    def components(self) -> list[dict]:
        specs = VERSIONS[self.version]
        if self.norm != "linf":
            specs = [s for s in specs if s["name"] != "square"]
        base = 0 if self.seed is None else self.seed
        return [{**spec, "eps": self.eps, "norm": self.norm, "bn_mode": self.bn_mode, "seed": base + i}
                for i, spec in enumerate(specs)]

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, **kwargs) -> torch.Tensor:
        x_adv = x.clone()
        with torch.no_grad():
            logits = model(x)
        robust = logits.argmax(1) == y
        components = self.components()
        skipped = [s["name"] for s in components if s["name"] == "apgd_t" and logits.shape[1] < 4]
        components = [s for s in components if s["name"] not in skipped]
        fooled_by = torch.full_like(y, -1)
        white_box_failed = robust.clone()
        black_box_only = torch.zeros_like(robust)
        for index, spec in enumerate(components):
            idx = robust.nonzero().flatten()
            if idx.numel() == 0:
                break
            attack = create_attack(spec)
            candidate = attack(model, x[idx], y[idx])
            with torch.no_grad():
                fooled = model(candidate).argmax(1) != y[idx]
            won = idx[fooled]
            x_adv[won] = candidate[fooled]
            robust[won] = False
            fooled_by[won] = index
            if attack.black_box:
                black_box_only[won] = white_box_failed[won]
            else:
                white_box_failed[won] = False
        self.last_info = {"fooled_by": fooled_by, "black_box_only": black_box_only, "skipped": skipped}
        return x_adv
