"""Minimum-norm attacks: the smallest perturbation that changes the prediction.

Unlike PGD, which maximises the loss inside a fixed ball, these attacks search for
the adversarial point nearest to ``x`` and report its distance, so one run gives a
per-sample robustness radius, and with it the robust accuracy at every eps of a
sweep (``minimum_norm = True``: callbacks.sweep runs such an attack once per batch):

- Carlini & Wagner (2017), "Towards Evaluating the Robustness of Neural Networks",
  IEEE S&P, the L2 attack (:class:`CarliniWagnerL2`, registered as ``cw_l2``).
- Moosavi-Dezfooli, Fawzi & Frossard (2016), "DeepFool: a simple and accurate method
  to fool deep neural networks", CVPR, multi-class L2 (:class:`DeepFool`,
  registered as ``deepfool``).
- FMN, Pintor et al. (2021), L-inf, L2 and L1: :mod:`attacks.fmn` (``fmn``).

Threat model (all): white box, untargeted, in the attack's norm (L2 for CW and
DeepFool). Images are [0, 1] pixels and ``eps`` is a radius of that norm in the same
units (L2, L1: the whole image); the default ``eps = inf`` is unbounded. The output
is, per sample, the smallest-norm misclassified point the search found if its norm
is <= eps, and ``x`` itself otherwise (failure within the budget); it always lies in
[0, 1]. The search itself ignores eps, so a finite budget only decides which of the
found points are returned. None of them uses randomness.

With ``bn_mode="train"`` BatchNorm couples the samples of a batch through its batch
statistics, so the per-sample gradients (of losses summed over the batch) pick up
cross-sample terms; the papers assume a per-sample classifier (``bn_mode="eval"``).

``last_info`` after a call, one entry per sample:

- ``success`` (bool): the returned point is misclassified and within the budget;
  a point the model already misclassifies counts, with norm 0.
- ``<norm>_norm`` (float; ``l2_norm``, ``linf_norm``, ``l1_norm``): the norm of
  x_adv - x of the minimum perturbation found, whether or not it fits the budget;
  ``inf`` where none was found.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from attacks.base import Attack, as_float
from attacks.losses import margin_loss
from attacks.norms import MEASURE_BALLS, TINY, l2_norms, make_ball, per_sample
from attacks.registry import register_attack


class MinimumNormAttack(Attack):
    """Shared frame: threat model in ``norm``, eps default inf, budget check and last_info."""

    minimum_norm = True

    def __init__(self, eps: float, norm: str, bn_mode: str, seed: int | None):
        super().__init__(eps, norm=norm, bn_mode=bn_mode, seed=seed)
        make_ball(norm, self.eps, kinds=MEASURE_BALLS)  # fail early on an unknown norm

    def _check_eps(self) -> None:
        if self.eps != math.inf:  # inf: unbounded, in any norm
            super()._check_eps()

    def _finish(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                best_adv: torch.Tensor, best_norm: torch.Tensor) -> torch.Tensor:
        """Return the found points that fit the budget (x elsewhere) and fill last_info.

        One last forward pass on the returned batch confirms each success, so
        ``success`` agrees with the model's predictions on the output; a point that
        no longer fools the model (a boundary point lost to rounding) counts as not
        found.
        """
        within = best_norm <= self.eps  # inf (not found) never fits
        x_out = torch.where(per_sample(within, x), best_adv, x)
        with torch.no_grad():
            fooled = model(x_out).argmax(1) != y
        lost = within & ~fooled
        success = within & fooled
        x_out = torch.where(per_sample(success, x), x_out, x)
        found_norm = torch.where(lost, torch.full_like(best_norm, math.inf), best_norm)
        self.last_info = {"success": success, f"{self.norm}_norm": found_norm}
        return x_out.detach()


class _MinimumNormL2(MinimumNormAttack):
    """CW-L2 and DeepFool: the L2 threat model."""

    def __init__(self, eps: float, bn_mode: str, seed: int | None):
        super().__init__(eps, norm="l2", bn_mode=bn_mode, seed=seed)


@register_attack("cw_l2")
class CarliniWagnerL2(_MinimumNormL2):
    """Carlini & Wagner (2017) L2 attack, untargeted.

    Change of variables x_adv = (tanh(w) + 1) / 2 keeps x_adv in [0, 1]; Adam on w
    minimises ||x_adv - x||_2^2 + c * max(Z_y - max_{i != y} Z_i, -kappa) (the
    paper's f_6 on the logits Z), and a per-sample binary search over c keeps the
    smallest-norm point that is misclassified with margin >= kappa.

    eps: L2 budget in [0, 1] pixel units (default inf: unbounded).
    binary_search_steps: searches over c (paper: 9). steps: Adam steps per c
    (default 100; paper: 10000, affordable only for a few images). lr: Adam
    learning rate on w (paper: 0.01). initial_const: first c (default 1e-2; paper
    1e-3, one binary-search step lower). confidence: kappa, the logit margin a
    success must reach (paper: 0). abort_early: stop the steps for one c when the
    batch loss has not fallen by 0.01% over a tenth of them (as the paper's code).
    bn_mode: see attacks.model_mode. seed: unused (the attack is deterministic),
    kept for the common contract.
    """

    def __init__(
        self,
        eps: float = math.inf,
        binary_search_steps: int = 9,
        steps: int = 100,
        lr: float = 0.01,
        initial_const: float = 1e-2,
        confidence: float = 0.0,
        abort_early: bool = True,
        bn_mode: str = "eval",
        seed: int | None = None,
    ):
        super().__init__(eps, bn_mode=bn_mode, seed=seed)
        self.binary_search_steps = int(binary_search_steps)
        self.steps = int(steps)
        self.lr = as_float(lr)
        self.initial_const = as_float(initial_const)
        self.confidence = as_float(confidence)
        self.abort_early = bool(abort_early)
        if self.binary_search_steps < 1 or self.steps < 1:
            raise ValueError(f"{self.name}: binary_search_steps and steps must be >= 1 "
                             f"(got {binary_search_steps}, {steps})")
        if self.lr <= 0 or self.initial_const <= 0 or self.confidence < 0:
            raise ValueError(f"{self.name}: lr and initial_const must be > 0 and confidence >= 0 "
                             f"(got {lr}, {initial_const}, {confidence})")

    def _fooled(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (logits.argmax(1) != y) & (-margin_loss(logits, y) >= self.confidence)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        with torch.no_grad():
            clean_fooled = self._fooled(model(x), y)
        best_norm = torch.full((n,), math.inf, device=x.device, dtype=x.dtype).masked_fill(clean_fooled, 0.0)
        best_adv = x.clone()

        # arctanh(+-1) is infinite: pull pixels at exactly 0 or 1 a hair inside
        limit = 1 - max(1e-6, torch.finfo(x.dtype).eps)
        w0 = torch.atanh((2 * x - 1).clamp(-limit, limit))
        lower = torch.zeros(n, device=x.device)
        upper = torch.full((n,), 1e10, device=x.device)
        const = torch.full((n,), self.initial_const, device=x.device)
        check_every = max(self.steps // 10, 1)

        for _ in range(self.binary_search_steps):
            w = w0.clone().requires_grad_(True)
            optimiser = torch.optim.Adam([w], lr=self.lr)
            succeeded = torch.zeros(n, dtype=torch.bool, device=x.device)
            previous = math.inf
            for step in range(self.steps):
                x_adv = (torch.tanh(w) + 1) / 2
                logits = model(x_adv).float()
                dist_sq = (x_adv - x).flatten(1).float().pow(2).sum(1)
                hinge = margin_loss(logits, y).clamp(min=-self.confidence)
                loss = (dist_sq + const * hinge).sum()
                (grad,) = torch.autograd.grad(loss, w)
                with torch.no_grad():
                    fooled = self._fooled(logits, y)
                    norm = l2_norms(x_adv - x)
                    better = fooled & (norm < best_norm)
                    best_norm = torch.where(better, norm, best_norm)
                    best_adv = torch.where(per_sample(better, x), x_adv, best_adv)
                    succeeded |= fooled
                if self.abort_early and step % check_every == 0:
                    if loss.item() > previous * 0.9999:
                        break
                    previous = loss.item()
                w.grad = grad
                optimiser.step()
            # per-sample binary search: shrink c after a success, grow it after a failure
            upper = torch.where(succeeded, torch.minimum(upper, const), upper)
            lower = torch.where(succeeded, lower, torch.maximum(lower, const))
            const = torch.where(upper < 1e9, (lower + upper) / 2, const * 10)
        return self._finish(model, x, y, best_adv, best_norm)


@register_attack("deepfool")
class DeepFool(_MinimumNormL2):
    """DeepFool (Moosavi-Dezfooli et al. 2016), multi-class, L2, untargeted.

    At each step the logit differences Z_k - Z_y of the candidate classes are
    linearised at the current point, and the step goes to the nearest linearised
    boundary, r = (|f_l| / ||w_l|| + 1e-4) * w_l / ||w_l||. Steps add up to r_tot and
    the current point is clip(x + (1 + overshoot) * r_tot, 0, 1). A sample stops as
    soon as it is misclassified.

    eps: L2 budget in [0, 1] pixel units (default inf: unbounded). candidates: the
    classes considered, the true class and the ones with the highest clean logits
    (paper: 10; capped at the number of classes). max_steps: at most this many
    steps (paper: 50). overshoot: paper's 0.02. bn_mode: see attacks.model_mode.
    seed: unused (the attack is deterministic), kept for the common contract.
    """

    def __init__(
        self,
        eps: float = math.inf,
        candidates: int = 10,
        max_steps: int = 50,
        overshoot: float = 0.02,
        bn_mode: str = "eval",
        seed: int | None = None,
    ):
        super().__init__(eps, bn_mode=bn_mode, seed=seed)
        self.candidates = int(candidates)
        self.max_steps = int(max_steps)
        self.overshoot = as_float(overshoot)
        if self.candidates < 2 or self.max_steps < 1 or self.overshoot < 0:
            raise ValueError(f"{self.name}: candidates must be >= 2, max_steps >= 1 and overshoot >= 0 "
                             f"(got {candidates}, {max_steps}, {overshoot})")

    def _nearest_boundary_step(self, x_adv: torch.Tensor, logits: torch.Tensor, y: torch.Tensor,
                               others: torch.Tensor) -> torch.Tensor:
        """Per sample, the step to the nearest linearised boundary among ``others``."""
        z_y = logits.gather(1, y[:, None]).squeeze(1)
        best_dist = torch.full_like(z_y, math.inf)
        best_step = torch.zeros_like(x_adv)
        for j in range(others.shape[1]):
            f = logits.gather(1, others[:, j:j + 1]).squeeze(1) - z_y
            (w,) = torch.autograd.grad(f.sum(), x_adv, retain_graph=j < others.shape[1] - 1)
            w_norm = l2_norms(w).float().clamp_min(TINY)
            dist = f.detach().abs() / w_norm
            closer = dist < best_dist
            step = per_sample((dist + 1e-4) / w_norm, w).to(w.dtype) * w
            best_dist = torch.where(closer, dist, best_dist)
            best_step = torch.where(per_sample(closer, x_adv), step, best_step)
        return best_step

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            clean_logits = model(x).float()
        k = min(self.candidates, clean_logits.shape[1])
        # the true class first, then the k - 1 other classes with the highest clean logits
        ranked = clean_logits.scatter(1, y[:, None], float("inf"))
        others = ranked.topk(k, dim=1).indices[:, 1:]

        best_norm = torch.full((x.shape[0],), math.inf, device=x.device, dtype=x.dtype)
        best_adv = x.clone()
        active = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        r_tot = torch.zeros_like(x)
        x_adv = x
        for step in range(self.max_steps + 1):
            x_adv = x_adv.detach().requires_grad_(True)
            logits = model(x_adv).float()
            with torch.no_grad():
                newly = active & (logits.argmax(1) != y)
                best_norm = torch.where(newly, l2_norms(x_adv - x), best_norm)
                best_adv = torch.where(per_sample(newly, x), x_adv, best_adv)
                active &= ~newly
            if step == self.max_steps or not active.any():
                break
            r = self._nearest_boundary_step(x_adv, logits, y, others)
            with torch.no_grad():
                r_tot = r_tot + torch.where(per_sample(active, x), r, torch.zeros_like(r))
                x_adv = (x + (1 + self.overshoot) * r_tot).clamp(0, 1)
        return self._finish(model, x, y, best_adv.detach(), best_norm)
