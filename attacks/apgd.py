"""Auto-PGD (APGD): step-size-free PGD with momentum, untargeted and targeted.

Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble
of diverse parameter-free attacks" (ICML 2020), Algorithm 1 and Section 3.

Threat model: white box; ||x_adv - x|| <= eps in the chosen norm ("linf" or "l2")
and x_adv in [0, 1]. eps and the step size are in [0, 1] pixel units; default
eps = 8/255.

The algorithm (per sample, all samples of a batch in parallel):

- Start at a random point of the eps-ball around x (clipped to [0, 1]).
- Step size eta starts at 2 * eps. Iterates
  z = P(x_k + eta * d(grad f(x_k))),
  x_{k+1} = P(x_k + alpha (z - x_k) + (1 - alpha)(x_k - x_{k-1})),
  with alpha = 0.75 (the first step has no momentum, i.e. alpha = 1), d the
  steepest-ascent direction of the norm (sign for L-inf, normalised gradient for
  L2) and P the projection on the eps-ball intersected with [0, 1].
- Checkpoints w_j = ceil(p_j * n_iter), p_0 = 0, p_1 = 0.22,
  p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06) (see :func:`apgd_checkpoints`).
  At a checkpoint eta is halved if (1) the loss increased in fewer than
  rho = 0.75 of the iterations since the previous checkpoint, or (2) eta was not
  halved at the previous checkpoint and the best loss has not changed since; a
  halved sample restarts from the best point found so far.
- Restarts run on the samples not yet misclassified. Per sample the output is a
  misclassified point if one was found, otherwise the highest-loss point.

Losses: cross-entropy ("ce") and the Difference of Logits Ratio (DLR),
untargeted ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)`` and targeted
``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)`` (pi sorts the logits
decreasingly); both DLR forms are invariant to shifting and positive scaling of
the logits. Losses are computed in float32.

Where the paper and the authors' reference code differ, this follows the paper:
condition 1 is the strict "< rho" (the code uses <=), condition 2 may already fire
at the first checkpoint (w_0 = 0 counts as a checkpoint without a reduction; the
code disables it there), and the checkpoints are exactly ceil(p_j * n_iter) (the
code uses an integer-rounded version of the same recurrence). After a restart
from the best point, the next "did the loss increase" comparison is against the
best loss, since that point is now the iterate. The random start is uniform in
the ball (:meth:`ball.random_point`), where the code scales the noise onto the
ball's boundary; and per sample the first misclassified iterate is returned.
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from attacks.base import Attack, as_float
from attacks.losses import margin_loss
from attacks.norms import TINY, make_ball, per_sample
from attacks.registry import register_attack

# ---------------------------------------------------------------------------------
# losses: per-sample, float32, larger = more adversarial
# ---------------------------------------------------------------------------------


def _check_classes(logits: torch.Tensor, needed: int, loss: str) -> None:
    if logits.shape[1] < needed:
        raise ValueError(f"the {loss} loss needs at least {needed} classes, the model has {logits.shape[1]}")


def ce_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample cross-entropy of the true label (untargeted: ascend it)."""
    return F.cross_entropy(logits.float(), y, reduction="none")


def dlr_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Untargeted DLR: -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12)."""
    z = logits.float()
    _check_classes(z, 3, "DLR")
    z_sorted = z.sort(dim=1, descending=True).values
    return -margin_loss(z, y) / (z_sorted[:, 0] - z_sorted[:, 2] + TINY)


def dlr_targeted_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Targeted DLR: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)."""
    z = logits.float()
    _check_classes(z, 4, "targeted DLR")
    z_sorted = z.sort(dim=1, descending=True).values
    z_y = z.gather(1, y[:, None]).squeeze(1)
    z_t = z.gather(1, target[:, None]).squeeze(1)
    return -(z_y - z_t) / (z_sorted[:, 0] - 0.5 * (z_sorted[:, 2] + z_sorted[:, 3]) + TINY)


LOSSES: dict[str, Callable[..., torch.Tensor]] = {"ce": ce_loss, "dlr": dlr_loss}

# ---------------------------------------------------------------------------------
# the checkpoint schedule
# ---------------------------------------------------------------------------------


def apgd_checkpoints(n_iter: int) -> list[int]:
    """Checkpoints w_j = ceil(p_j * n_iter) for all p_j <= 1, starting with w_0 = 0.

    p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06). Computed
    with exact fractions (0.22 * 100 is 22.000000000000004 in floating point).
    Repeated values (possible for very small n_iter) are dropped.
    """
    p_prev, p = Fraction(0), Fraction(22, 100)
    points = [Fraction(0)]
    while p <= 1:
        points.append(p)
        p_prev, p = p, p + max(p - p_prev - Fraction(3, 100), Fraction(6, 100))
    return sorted({math.ceil(q * n_iter) for q in points})


# ---------------------------------------------------------------------------------
# the attacks
# ---------------------------------------------------------------------------------


class _APGDBase(Attack):
    """Shared machinery of APGD and APGD-T: one APGD run and the per-sample bookkeeping."""

    def __init__(self, eps, norm, n_iter, n_restarts, rho, momentum, bn_mode, seed, early_stop=False):
        super().__init__(eps, norm=norm, bn_mode=bn_mode, seed=seed)
        make_ball(norm, self.eps)  # fail early on an unknown norm
        self.early_stop = bool(early_stop)
        if self.early_stop and bn_mode != "eval":
            raise ValueError(f"{self.name}: early_stop needs bn_mode eval (batch statistics couple the samples)")
        self.n_iter = int(n_iter)
        self.n_restarts = int(n_restarts)
        self.rho = as_float(rho)
        self.momentum = as_float(momentum)
        if self.n_iter < 1 or self.n_restarts < 1:
            raise ValueError(f"{self.name}: n_iter and n_restarts must be >= 1 (got {n_iter}, {n_restarts})")
        if not 0 < self.momentum <= 1 or not 0 < self.rho <= 1:
            raise ValueError(f"{self.name}: rho and momentum must lie in (0, 1] (got {rho}, {momentum})")

    def checkpoints(self) -> list[int]:
        return apgd_checkpoints(self.n_iter)

    # -- evaluation --------------------------------------------------------------------
    @staticmethod
    def _evaluate(model, x, y, loss_fn, target, need_grad=True, rows=None, fill=None):
        """Per-sample loss, misclassification flag and (optionally) the input gradient.

        With ``rows`` (early stopping) only those samples run the model; the others, already
        fooled, get the loss ``fill``, the flag True and a zero gradient."""
        if rows is not None:
            loss, wrong, grad = _APGDBase._evaluate(model, x[rows], y[rows], loss_fn,
                                                    None if target is None else target[rows], need_grad)
            grad = torch.zeros_like(x).index_copy_(0, rows, grad) if need_grad else None
            return fill.index_copy(0, rows, loss), torch.ones_like(y, dtype=torch.bool).index_copy(0, rows, wrong), grad
        x = x.detach().requires_grad_(need_grad)
        logits = model(x).float()
        loss = loss_fn(logits, y, target)
        grad = torch.autograd.grad(loss.sum(), x)[0] if need_grad else None
        return loss.detach(), logits.detach().argmax(1) != y, grad

    # -- one APGD run (Algorithm 1) ----------------------------------------------------
    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn, target=None):
        """Returns (x_out, loss_out, fooled): a misclassified point where one was found,
        else the highest-loss point, with the attack loss at that point."""
        ball = make_ball(self.norm, self.eps)
        checkpoints = set(self.checkpoints()[1:])

        def project(x_new):
            return ball.project_around(x, x_new)

        x_cur = project(x + ball.random_point(x, self.generator(x.device)))
        loss, wrong, grad = self._evaluate(model, x_cur, y, loss_fn, target)
        x_best, loss_best, grad_best = x_cur.clone(), loss.clone(), grad.clone()
        fooled, x_fooled, loss_fooled = wrong.clone(), x_cur.clone(), loss.clone()

        eta = torch.full((x.shape[0],), 2 * self.eps, device=x.device, dtype=x.dtype)
        x_prev, loss_prev = x_cur, loss
        increases = torch.zeros_like(loss)
        best_at_last_check = loss_best.clone()
        reduced_last_check = torch.zeros_like(fooled)
        last_check = 0

        for k in range(1, self.n_iter + 1):
            with torch.no_grad():
                a = 1.0 if k == 1 else self.momentum
                z = project(x_cur + ball.step(grad, per_sample(eta, x)))
                x_next = project(x_cur + a * (z - x_cur) + (1 - a) * (x_cur - x_prev))
            x_prev, x_cur = x_cur, x_next
            rows = (~fooled).nonzero().squeeze(1) if self.early_stop else None
            if rows is not None and rows.numel() == 0:
                break  # early stopping: every sample is fooled
            loss, wrong, grad = self._evaluate(model, x_cur, y, loss_fn, target, need_grad=k < self.n_iter,
                                               rows=rows, fill=loss_prev)

            with torch.no_grad():
                increases += (loss > loss_prev).to(increases.dtype)
                loss_prev = loss
                # remember a misclassified point (the first one found for each sample)
                new = wrong & ~fooled
                x_fooled = torch.where(per_sample(new, x), x_cur, x_fooled)
                loss_fooled = torch.where(new, loss, loss_fooled)
                fooled |= wrong
                # the best point so far
                better = loss > loss_best
                x_best = torch.where(per_sample(better, x), x_cur, x_best)
                loss_best = torch.where(better, loss, loss_best)
                if grad is not None:
                    grad_best = torch.where(per_sample(better, x), grad, grad_best)

                if k in checkpoints and k < self.n_iter:
                    cond1 = increases < self.rho * (k - last_check)
                    cond2 = ~reduced_last_check & (loss_best <= best_at_last_check)
                    reduce = cond1 | cond2
                    eta = torch.where(reduce, eta / 2, eta)
                    x_cur = torch.where(per_sample(reduce, x), x_best, x_cur)
                    grad = torch.where(per_sample(reduce, x), grad_best, grad)
                    loss_prev = torch.where(reduce, loss_best, loss_prev)
                    reduced_last_check = reduce
                    best_at_last_check = loss_best.clone()
                    increases.zero_()
                    last_check = k

        x_out = torch.where(per_sample(fooled, x), x_fooled, x_best)
        return x_out, torch.where(fooled, loss_fooled, loss_best), fooled

    # -- bookkeeping over restarts and targets ----------------------------------------
    def _attack_remaining(self, model, x, y, state, loss_fn, target=None) -> torch.Tensor:
        """One run on the samples of ``state`` not yet fooled; keep per sample a fooling
        point if there is one, else the point with the highest loss. Returns the
        indices of the samples whose point was replaced."""
        x_out, loss_out, fooled = state
        idx = (~fooled).nonzero().squeeze(1)
        if idx.numel() == 0:
            return idx
        x_new, loss_new, fooled_new = self._run(
            model, x[idx], y[idx], loss_fn, None if target is None else target[idx])
        keep = fooled_new | (loss_new > loss_out[idx])
        sel = idx[keep]
        x_out[sel] = x_new[keep]
        loss_out[sel] = loss_new[keep]
        fooled[sel] = fooled_new[keep]
        return sel

    def _initial_state(self, model, x, y, loss_fn, target=None):
        """Clean points: those already misclassified count as fooled (x is returned)."""
        with torch.no_grad():
            logits = model(x).float()
            loss = loss_fn(logits, y, target)
        fooled = logits.argmax(1) != y
        loss = torch.where(fooled, loss, torch.full_like(loss, float("-inf")))
        return x.clone(), loss, fooled, logits

    def _finish(self, state, **extra) -> torch.Tensor:
        x_out, loss_out, fooled = state
        self.last_info = {"loss": loss_out, "fooled": fooled, **extra}
        return x_out


@register_attack("apgd_ce")
class APGD(_APGDBase):
    """Auto-PGD, untargeted (Croce & Hein 2020, Algorithm 1).

    eps: ball radius in pixel units (default 8/255); norm: "linf" (default) or "l2";
    n_iter: iterations per run (default 100); n_restarts: random restarts, each on
    the samples not yet misclassified (default 1); loss: "ce" (cross-entropy,
    default, i.e. APGD-CE) or "dlr" (APGD-DLR); rho: checkpoint threshold on the
    fraction of loss increases (paper: 0.75); momentum: alpha of the update
    (paper: 0.75); bn_mode: see attacks.model_mode; seed: seeds the random starts;
    early_stop: stop computing a sample once an iterate fools the model (the result is
    the same, the first misclassified iterate; needs bn_mode eval).

    ``last_info``: per sample the attack loss at the returned point ("loss") and
    whether it is misclassified ("fooled").
    """

    def __init__(
        self,
        eps: float = 8 / 255,
        norm: str = "linf",
        n_iter: int = 100,
        n_restarts: int = 1,
        loss: str = "ce",
        rho: float = 0.75,
        momentum: float = 0.75,
        bn_mode: str = "eval",
        seed: int | None = None,
        early_stop: bool = False,
    ):
        super().__init__(eps, norm, n_iter, n_restarts, rho, momentum, bn_mode, seed, early_stop)
        if loss not in LOSSES:
            raise ValueError(f"{self.name}: unknown loss {loss!r}; valid losses: {', '.join(sorted(LOSSES))}")
        self.loss = loss

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss_fn = LOSSES[self.loss]
        *state, _ = self._initial_state(model, x, y, loss_fn)
        for _ in range(self.n_restarts):
            self._attack_remaining(model, x, y, state, loss_fn)
        return self._finish(state)


@register_attack("apgd_t")
class APGDTargeted(_APGDBase):
    """Targeted Auto-PGD with the targeted DLR loss, APGD-T (Croce & Hein 2020, Sec. 4).

    For each of the ``n_target_classes`` classes with the highest clean logits other
    than y (default 9, capped at num_classes - 1), APGD runs towards that target on
    the points still correctly classified (``n_restarts`` runs per target). Success
    means misclassification. Needs at least 4 classes (the DLR denominator).

    eps: ball radius in pixel units (default 8/255); norm: "linf" (default) or "l2";
    n_iter: iterations per run (default 100); rho, momentum: as in APGD (0.75);
    bn_mode: see attacks.model_mode; seed: seeds the random starts; early_stop: as in APGD.

    ``last_info``: "loss" (targeted DLR at the returned point), "fooled", and
    "target" (target class of the returned point, -1 if x itself is returned).
    """

    def __init__(
        self,
        eps: float = 8 / 255,
        norm: str = "linf",
        n_iter: int = 100,
        n_restarts: int = 1,
        n_target_classes: int = 9,
        rho: float = 0.75,
        momentum: float = 0.75,
        bn_mode: str = "eval",
        seed: int | None = None,
        early_stop: bool = False,
    ):
        super().__init__(eps, norm, n_iter, n_restarts, rho, momentum, bn_mode, seed, early_stop)
        self.n_target_classes = int(n_target_classes)
        if self.n_target_classes < 1:
            raise ValueError(f"{self.name}: n_target_classes must be >= 1 (got {n_target_classes})")

    @staticmethod
    def target_classes(logits: torch.Tensor, y: torch.Tensor, n: int) -> torch.Tensor:
        """(batch, min(n, num_classes - 1)) classes other than y, by decreasing clean logit."""
        n = min(n, logits.shape[1] - 1)
        masked = logits.float().scatter(1, y[:, None], float("-inf"))
        return masked.argsort(dim=1, descending=True)[:, :n]

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            clean_logits = model(x).float()
        _check_classes(clean_logits, 4, "targeted DLR")
        targets = self.target_classes(clean_logits, y, self.n_target_classes)
        *state, _ = self._initial_state(model, x, y, dlr_targeted_loss, targets[:, 0])
        target_used = torch.full_like(y, -1)
        for j in range(targets.shape[1]):
            for _ in range(self.n_restarts):
                sel = self._attack_remaining(model, x, y, state, dlr_targeted_loss, targets[:, j])
                target_used[sel] = targets[sel, j]
        return self._finish(state, target=target_used)
