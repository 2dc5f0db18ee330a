"""The reference AutoAttack (Croce & Hein 2020) on one batch: the authors' code, `pyautoattack`.

``{name: autoattack, version: standard|plus|rand, norm: linf|l2|l1, eps: ...}`` runs
pyautoattack's ``run_standard_evaluation`` on the batch, so its numbers can stand next to
a RobustBench entry (standard: APGD-CE, APGD-T, FAB-T, Square, each on the points still
robust). Our own reimplementation of the cascade is ``apgd_cascade``.

Threat model: the ``norm``-ball of radius ``eps`` (pixel units) around x, intersected with
[0, 1]; the model maps [0, 1] pixels to logits. Every output is checked against it before
it is counted: a sample outside the ball or [0, 1] (beyond float rounding, 1e-5) is given
back as its clean input and counted in ``last_info["threat_model_violations"]``, an
evaluation error, never a success.

Randomness: the reference seeds torch's global generator itself. Each call gets ``seed``
(the sweep sets it per global batch, attack and eps, so results do not depend on the number
of processes) and runs inside ``torch.random.fork_rng``, so the caller's global RNG state
is left as it was.

The reference's own checks (randomised or dynamic defence, softmax output, zero gradients,
Square succeeding where the white-box attacks failed, too few classes) are caught from its
logger and reported per check in ``last_info["reference_checks"]`` (one 0/1 flag per
entry of :data:`REFERENCE_CHECKS`); the sweep turns them into evaluation warnings.
"""
from __future__ import annotations

import logging
import warnings

import torch
from torch import nn

from attacks.base import Attack
from attacks.registry import register_attack

NORMS = {"linf": "Linf", "l2": "L2", "l1": "L1"}
VERSIONS = ("standard", "plus", "rand")
TOLERANCE = 1e-5  # float rounding allowed at the edge of the ball and of [0, 1]

# (key, text the reference's message contains, what it means for our numbers)
REFERENCE_CHECKS = (
    ("randomized", "randomized defense",
     "the model's outputs change between identical calls: a randomised defence; use version: rand"),
    ("softmax_output", "probability distribution",
     "the model seems to return probabilities, not logits; attacks on softmax outputs are weakened"),
    ("dynamic", "dynamic defense",
     "the forward pass computes gradients (a dynamic defence): AutoAttack may be insufficient"),
    ("zero_gradients", "zero gradient",
     "points with an all-zero input gradient: gradient-based attacks are unreliable there (masking?)"),
    ("square_success", "Square Attack has decreased",
     "Square (black box) lowered robust accuracy after the white-box attacks: the evaluation is "
     "likely unreliable (gradient masking); run an adaptive attack"),
    ("n_classes", "classes",
     "too few classes for the targeted attacks' DLR loss or target count"),
    ("other", "",
     "another warning of the reference"),
)
COMPONENTS = {"standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
              "plus": ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"), "rand": ("apgd-ce", "apgd-dlr")}
CHECK_KEYS = tuple(key for key, _, _ in REFERENCE_CHECKS)


def lp_norms(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-sample L-inf, L2 or L1 norm of a batch of perturbations, shape (N,)."""
    flat = delta.flatten(1)
    if norm == "linf":
        return flat.abs().amax(dim=1)
    if norm == "l2":
        return flat.norm(dim=1)
    return flat.abs().sum(dim=1)


def threat_model_violations(x_adv: torch.Tensor, x: torch.Tensor, norm: str, eps: float,
                            tolerance: float = TOLERANCE) -> torch.Tensor:
    """Per sample: True where x_adv is non-finite, outside [0, 1] or outside the eps-ball of x."""
    flat = x_adv.flatten(1)
    bad = ~torch.isfinite(flat).all(dim=1)
    bad |= (flat < -tolerance).any(dim=1) | (flat > 1 + tolerance).any(dim=1)
    bad |= lp_norms(torch.nan_to_num(x_adv - x), norm) > eps + tolerance
    return bad


def classify_check(message: str) -> str:
    """Which of :data:`REFERENCE_CHECKS` a message of the reference is."""
    for key, text, _ in REFERENCE_CHECKS:
        if text and text in message:
            return key
    return "other"


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@register_attack("autoattack")
class ReferenceAutoAttack(Attack):
    """The reference AutoAttack (pyautoattack) on one batch; see the module docstring.

    eps: radius in pixel units (default 8/255); norm: "linf", "l2" or "l1"; version:
    "standard" (RobustBench's), "plus" or "rand" (for randomised defences, EOT over 20 draws);
    components: run only these of the version's attacks, with the version's settings (e.g.
    ``[apgd-ce]``; for validating our components, never a leaderboard figure).
    """

    def __init__(self, eps: float = 8 / 255, norm: str = "linf", version: str = "standard",
                 components: list[str] | None = None, bn_mode: str = "eval", seed: int | None = None):
        if norm not in NORMS:
            raise ValueError(f"autoattack: unknown norm {norm!r}; valid norms: {', '.join(NORMS)}")
        if version not in VERSIONS:
            raise ValueError(f"autoattack: unknown version {version!r}; valid versions: {', '.join(VERSIONS)} "
                             "(our own cascade is apgd_cascade)")
        super().__init__(eps, norm=norm, bn_mode=bn_mode, seed=seed)
        self.version = version
        self.components = list(components) if components else None
        valid = COMPONENTS[version]
        unknown = sorted(set(self.components or []) - set(valid))
        if unknown:
            raise ValueError(f"autoattack {version}: unknown components {unknown}; valid: {', '.join(valid)}")
        self.messages: list[str] = []  # the reference's warnings of the last call, verbatim

    @staticmethod
    def _cap_targets(reference, n_classes: int) -> list[str]:
        """The reference's targeted attacks take 9 targets and fail on fewer than 10 classes: use all the others."""
        wanted = max(reference.apgd_targeted.n_target_classes, reference.fab.n_target_classes)
        if wanted <= n_classes - 1:
            return []
        reference.apgd_targeted.n_target_classes = min(reference.apgd_targeted.n_target_classes, n_classes - 1)
        reference.fab.n_target_classes = min(reference.fab.n_target_classes, n_classes - 1)
        return [f"with {n_classes} classes the targeted attacks use {n_classes - 1} target classes "
                f"instead of the version's {wanted}"]

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, **kwargs) -> torch.Tensor:
        try:
            from pyautoattack import AutoAttack
        except ImportError:
            raise ImportError("attack 'autoattack' runs the reference implementation: pip install pyautoattack") from None
        with torch.no_grad():
            n_classes = model(x[:1]).shape[1]
        if self.version in ("standard", "plus") and n_classes < 4:
            raise ValueError(f"autoattack {self.version}: the reference's targeted attacks need at least 4 classes, "
                             f"the model has {n_classes}; use {{name: apgd_cascade}} or apgd_ce for this task")
        # unseeded: the seed Attack.__call__ drew from torch's global generator (seed_everything reaches it)
        seed = self.seed if self.seed is not None else self._call_seed % 2**31
        devices = [x.device] if x.device.type == "cuda" else []
        handler, logger = _Collect(), logging.getLogger("auto-attack")
        propagate = logger.propagate
        logger.addHandler(handler)
        logger.propagate = False  # reported once, as evaluation warnings, not per batch on stderr
        try:
            with torch.random.fork_rng(devices=devices), warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                reference = AutoAttack(model, device=x.device, eps=self.eps, norm=NORMS[self.norm],
                                       seed=seed, version=self.version)
                capped = self._cap_targets(reference, n_classes)
                if self.components:
                    reference.attacks_to_run = [a for a in reference.attacks_to_run if a in self.components]
                x_adv, _ = reference.run_standard_evaluation(x, y, batch_size=x.shape[0])
        finally:
            logger.removeHandler(handler)
            logger.propagate = propagate
        ours = [w for w in caught if "pyautoattack" in (w.filename or "")]
        for w in caught:  # other libraries' warnings pass through
            if w not in ours:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        self.messages = capped + handler.messages + [str(w.message) for w in ours]
        x_adv = x_adv.to(device=x.device, dtype=x.dtype)
        violations = threat_model_violations(x_adv, x, self.norm, self.eps)
        x_adv = torch.where(violations.view(-1, *([1] * (x.dim() - 1))), x, x_adv.clamp(0, 1))
        flags = torch.zeros(len(CHECK_KEYS), dtype=torch.long, device=x.device)
        for message in self.messages:
            flags[CHECK_KEYS.index(classify_check(message))] = 1
        self.last_info = {"reference_checks": flags, "threat_model_violations": violations}
        return x_adv
