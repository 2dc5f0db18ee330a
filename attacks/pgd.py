"""First-order attacks in an L-inf or L2 ball: PGD and its one-step and no-restart kin.

All of them are projected steepest ascent on the cross-entropy loss, differing only
in defaults (start, step size, number of steps), so they share one implementation:

- FGSM (Goodfellow et al. 2014): one step of size eps from x.
- FGSM with random start, "fast" AT (Wong et al. 2020): uniform start in the ball,
  one step of size alpha (default 1.25 eps), projected back.
- BIM / I-FGSM (Kurakin et al. 2016): no random start, alpha = 1/255,
  steps = min(255 eps + 4, 1.25 * 255 eps).
- PGD (Madry et al. 2017): random start, alpha = 2.5 eps / steps by default, restarts.

Threat model: ||x_adv - x|| <= eps in the chosen norm and x_adv in [0, 1]; eps and
alpha are in [0, 1] pixel units. White box, untargeted.

PGD's ``loss: kl`` ascends KL(f(x) || f(x_adv)) instead of the cross-entropy: the
label-free inner maximisation of TRADES (Zhang et al. 2019).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from attacks.base import Attack, as_float
from attacks.norms import make_ball, per_sample
from attacks.registry import register_attack


LOSSES = ("ce", "kl")


@register_attack("pgd")
class PGD(Attack):
    """Projected gradient descent (Madry et al. 2017).

    eps: ball radius (pixel units); alpha: step size (default 2.5 * eps / steps);
    steps: ascent steps; norm: "linf" or "l2"; random_start: start uniformly in the
    ball; restarts: independent runs, per sample the one that fools the model (else
    the one with the highest loss) is kept; loss: "ce" (cross-entropy with the label) or
    "kl" (KL divergence from the clean prediction, TRADES' inner maximisation);
    early_stop: stop attacking a sample once an iterate fools the model and return that
    iterate (never weaker than the last iterate along the same path; faster when many
    samples fall early; needs bn_mode eval so a sample's logits do not depend on the
    others'); bn_mode: see attacks.model_mode.
    """

    def __init__(
        self,
        eps: float = 8 / 255,
        alpha: float | None = None,
        steps: int = 10,
        norm: str = "linf",
        random_start: bool = True,
        restarts: int = 1,
        loss: str = "ce",
        early_stop: bool = False,
        bn_mode: str = "eval",
        seed: int | None = None,
    ):
        super().__init__(eps, norm=norm, bn_mode=bn_mode, seed=seed)
        make_ball(norm, self.eps)  # fail early on an unknown norm
        self.alpha = None if alpha is None else as_float(alpha)
        self.steps = steps
        self.random_start = random_start
        self.restarts = restarts
        self.loss = loss
        if loss not in LOSSES:
            raise ValueError(f"{self.name}: unknown loss {loss!r}; valid: {', '.join(LOSSES)}")
        self.early_stop = early_stop
        if early_stop and bn_mode != "eval":
            raise ValueError(f"{self.name}: early_stop needs bn_mode eval (batch statistics couple the samples)")
        if loss == "kl" and not random_start:
            raise ValueError(f"{self.name}: loss 'kl' has zero gradient at x itself; it needs random_start: true")
        if steps < 1 or restarts < 1:
            raise ValueError(f"{self.name}: steps and restarts must be >= 1 (got {steps}, {restarts})")

    def step_size(self) -> float:
        return self.alpha if self.alpha is not None else 2.5 * self.eps / self.num_steps()

    def num_steps(self) -> int:
        return self.steps

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        best = None
        for _ in range(self.restarts):
            x_adv = self._one_run(model, x, y)
            if self.restarts == 1:
                return x_adv
            with torch.no_grad():
                logits = model(x_adv).float()
                loss = F.cross_entropy(logits, y, reduction="none")
                fooled = logits.argmax(1) != y
            if best is None:
                best = (x_adv, loss, fooled)
                continue
            best_x, best_loss, best_fooled = best
            better = (fooled & ~best_fooled) | ((fooled == best_fooled) & (loss > best_loss))
            mask = per_sample(better, x)
            best = (torch.where(mask, x_adv, best_x), torch.where(better, loss, best_loss), fooled | best_fooled)
        return best[0]

    def _summed_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable:
        """``loss(logits, rows)``: the summed ascent loss of the samples ``rows`` (float32)."""
        if self.loss == "ce":
            return lambda logits, rows: F.cross_entropy(logits, y[rows], reduction="sum")
        with torch.no_grad():
            clean_log_probs = F.log_softmax(model(x).float(), dim=1)
        return lambda logits, rows: F.kl_div(F.log_softmax(logits, dim=1), clean_log_probs[rows],
                                             reduction="sum", log_target=True)

    def _one_run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        ball = make_ball(self.norm, self.eps)
        alpha = self.step_size()
        loss = self._summed_loss(model, x, y)
        x_adv = x
        if self.random_start:
            x_adv = ball.project_around(x, x + ball.random_point(x, self.generator(x.device)))
        rows = torch.arange(len(x), device=x.device)  # the samples still attacked
        for _ in range(self.num_steps()):
            x_rows = (x_adv[rows] if self.early_stop else x_adv).detach().requires_grad_(True)
            logits = model(x_rows).float()
            (grad,) = torch.autograd.grad(loss(logits, rows), x_rows)
            if not self.early_stop:
                x_adv = ball.project_around(x, x_rows.detach() + ball.step(grad, alpha))
                continue
            correct = logits.argmax(1) == y[rows]  # fooled samples keep this iterate
            rows, x_rows, grad = rows[correct], x_rows.detach()[correct], grad[correct]
            if rows.numel() == 0:
                break
            x_adv = x_adv.index_copy(0, rows, ball.project_around(x[rows], x_rows + ball.step(grad, alpha)))
        return x_adv


@register_attack("bim")
class BIM(PGD):
    """Basic iterative method / I-FGSM (Kurakin et al. 2016): PGD from x itself.

    Defaults from the paper: alpha = 1/255 and steps = min(255 eps + 4, 1.25 * 255 eps)
    when ``steps`` is not given.
    """

    def __init__(self, eps: float = 8 / 255, alpha: float | None = 1 / 255, steps: int | None = None,
                 norm: str = "linf", bn_mode: str = "eval", seed: int | None = None):
        super().__init__(eps, alpha=alpha, steps=steps or 1, norm=norm, random_start=False,
                         bn_mode=bn_mode, seed=seed)
        self.steps = steps

    def num_steps(self) -> int:
        if self.steps is not None:
            return self.steps
        return max(1, math.ceil(min(255 * self.eps + 4, 1.25 * 255 * self.eps)))


@register_attack("fgsm")
class FGSM(PGD):
    """Fast gradient sign method (Goodfellow et al. 2014): x + eps * sign(grad), clipped to [0, 1].

    With norm="l2" this is the fast gradient method: one step of L2 length eps.
    """

    def __init__(self, eps: float = 8 / 255, norm: str = "linf", bn_mode: str = "eval", seed: int | None = None):
        super().__init__(eps, steps=1, norm=norm, random_start=False, bn_mode=bn_mode, seed=seed)

    def step_size(self) -> float:
        return self.eps


@register_attack("fgsm_rs")
class FGSMRandomStart(PGD):
    """FGSM from a uniform random start in the eps-ball, "fast" AT (Wong et al. 2020).

    One step of size alpha (default 1.25 * eps) from the random start, projected back
    onto the eps-ball and [0, 1].
    """

    def __init__(self, eps: float = 8 / 255, alpha: float | None = None, norm: str = "linf",
                 bn_mode: str = "eval", seed: int | None = None):
        super().__init__(eps, alpha=alpha, steps=1, norm=norm, random_start=True, bn_mode=bn_mode, seed=seed)

    def step_size(self) -> float:
        return self.alpha if self.alpha is not None else 1.25 * self.eps
