"""Per-sample robustness of one batch over attacks x epsilons (pure torch).

For every epsilon and every attack the result says, per sample, whether the model
still classifies the attacked input correctly. Only samples the model gets right on
clean inputs are attacked (a wrong clean prediction is never robust). The worst case
over the attacks is the per-sample AND of their results.

It also marks, per eps, the samples a black-box attack fooled although every white-box
attack failed on them: a sign of gradient masking. Per attack it counts the reference
AutoAttack's own checks that fired (:data:`attacks.reference_autoattack.REFERENCE_CHECKS`,
one count per eps at which a check fired) and the samples whose output broke the threat
model (given back clean by the attack, so never counted as fooled).

A minimum-norm attack (``attack.minimum_norm``: cw_l2, deepfool, fmn) runs once, at the
largest eps: its smallest adversarial point per sample gives the result at every eps
(see :func:`minimum_norm_robust`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from attacks import Attack, WrappedAttack, create_attack
from attacks.norms import MEASURE_BALLS, make_ball
from attacks.reference_autoattack import CHECK_KEYS, REFERENCE_CHECKS

#: per attack, what ``BatchSweep.checks`` counts: each reference check, then threat-model violations
CHECK_COLUMNS = (*CHECK_KEYS, "threat_model_violations")
#: how an attack reaches the evaluated model (:func:`threat_model`), as results describe it
THREAT_MODELS = {
    "white-box": "differentiates through the whole model, [0, 1] pixels to logits",
    "black-box": "queries the model's scores only, no gradients",
    "transfer": "crafted on another model; the evaluated model only classifies the results",
}


@dataclass
class BatchSweep:
    clean_correct: torch.Tensor  # (N,) bool
    robust: torch.Tensor  # (num_attacks, num_eps, N) bool
    black_box_only: torch.Tensor  # (num_eps, N) bool
    checks: torch.Tensor  # (num_attacks, len(CHECK_COLUMNS)) long


def threat_model(attack: Attack) -> str:
    """``white-box``, ``black-box`` or ``transfer`` (see THREAT_MODELS); a wrapper's is its inner attack's."""
    if isinstance(attack, WrappedAttack):
        return threat_model(attack.inner)
    if attack.name == "transfer":
        return "transfer"
    return "black-box" if attack.black_box else "white-box"


def attack_seed(seed: int, attack_index: int, eps_index: int) -> int:
    """Seed of one attack at one eps: depends on these indices only, never on the process."""
    return seed + 7919 * attack_index + 104729 * eps_index


def sweep_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attacks: Sequence[Mapping[str, Any]],
                epsilons: Sequence[float], seed: int) -> BatchSweep:
    with torch.no_grad():
        clean_correct = model(x).argmax(1) == y
    n = x.shape[0]
    robust = torch.zeros(len(attacks), len(epsilons), n, dtype=torch.bool, device=x.device)
    black_box_only = torch.zeros(len(epsilons), n, dtype=torch.bool, device=x.device)
    idx = clean_correct.nonzero().flatten()
    black_box = torch.zeros(len(attacks), dtype=torch.bool)
    checks = torch.zeros(len(attacks), len(CHECK_COLUMNS), dtype=torch.long, device=x.device)
    for a, spec in enumerate(attacks):
        if epsilons and create_attack({**spec, "eps": 0.0}).minimum_norm:
            e_max = max(range(len(epsilons)), key=lambda e: epsilons[e])
            attack = create_attack({**spec, "eps": epsilons[e_max], "seed": attack_seed(seed, a, e_max)})
            if idx.numel():
                robust[a][:, idx] = minimum_norm_robust(model, attack, x[idx], y[idx], epsilons)
            continue
        for e, eps in enumerate(epsilons):
            attack = create_attack({**spec, "eps": eps, "seed": attack_seed(seed, a, e)})
            black_box[a] = attack.black_box
            if idx.numel() == 0:
                continue
            x_adv = attack(model, x[idx], y[idx])
            with torch.no_grad():
                robust[a, e, idx] = model(x_adv).argmax(1) == y[idx]
            if "black_box_only" in attack.last_info:  # a cascade that flags them itself
                black_box_only[e, idx] |= attack.last_info["black_box_only"]
            if "reference_checks" in attack.last_info:  # the reference AutoAttack's own flags
                checks[a, :-1] += attack.last_info["reference_checks"].to(checks.device)
                checks[a, -1] += attack.last_info["threat_model_violations"].sum()
    if black_box.any() and (~black_box).any():
        fooled_by_black_box = (~robust[black_box]).any(0) & clean_correct
        black_box_only |= fooled_by_black_box & robust[~black_box].all(0)
    return BatchSweep(clean_correct, robust, black_box_only, checks)


def minimum_norm_robust(model: nn.Module, attack, x: torch.Tensor, y: torch.Tensor,
                        epsilons: Sequence[float]) -> torch.Tensor:
    """(num_eps, N) bool: still correct at each eps, from ONE run of a minimum-norm attack.

    The attack runs at ``attack.eps`` (the largest eps) and gives back, per sample, its
    smallest adversarial point (or x). Nothing it reports is trusted: the sample counts
    as fooled at eps when the model, re-evaluated on that point, misclassifies it and the
    point's own distance to x in the attack's norm is <= eps.
    """
    x_adv = attack(model, x, y)
    if x_adv.shape != x.shape or x_adv.min() < 0 or x_adv.max() > 1:
        raise RuntimeError(f"{attack!r} returned points outside [0, 1] (or of another shape); "
                           "its output breaks the attack contract and cannot be counted")
    with torch.no_grad():
        fooled = model(x_adv).argmax(1) != y
    distance = make_ball(attack.norm, attack.eps, kinds=MEASURE_BALLS).norm(x_adv - x)
    budgets = torch.tensor([float(e) for e in epsilons], device=x.device, dtype=distance.dtype)
    return ~(fooled[None] & (distance[None] <= budgets[:, None]))


def masking_probe(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str, eps: float,
                  seed: int) -> torch.Tensor:
    """Correct counts under three PGD probes of gradient masking, on this batch:
    [PGD-20 at an unbounded eps, PGD-10 at ``eps``, PGD-50 at ``eps``].

    Unbounded means 1 in L-inf and the diameter of the [0, 1] cube in L2: every image is
    reachable, so an attack that works drives accuracy to about 0. More steps must
    not help the model.
    """
    unbounded = 1.0 if norm == "linf" else math.sqrt(x[0].numel())
    probes = [(unbounded, 20), (eps, 10), (eps, 50)]
    counts = []
    for i, (probe_eps, steps) in enumerate(probes):
        attack = create_attack({"name": "pgd", "norm": norm, "eps": probe_eps, "steps": steps, "seed": seed + i})
        with torch.no_grad():
            counts.append((model(attack(model, x, y)).argmax(1) == y).sum())
    return torch.stack(counts)


def attack_check_warnings(attack_checks: Mapping[str, Mapping[str, int]]) -> list[str]:
    """Warnings for the checks attacks raised, ``{attack label: {check: count}}`` summed over batches."""
    meaning = {key: text for key, _, text in REFERENCE_CHECKS}
    warnings = []
    for label, counts in attack_checks.items():
        for key, count in counts.items():
            if not count:
                continue
            if key == "threat_model_violations":
                warnings.append(f"error: {label}: {count} adversarial examples left the eps-ball or [0, 1]; they were "
                                "not counted as fooled (the attack's numbers are unreliable; report it)")
            else:
                warnings.append(f"{label}: the reference AutoAttack's check '{key}' fired "
                                f"({count} batch x eps runs): {meaning[key]}")
    return warnings
