"""Box-constrained L-BFGS attack (Szegedy et al. 2013, "Intriguing properties of neural
networks", section 4.1).

For each sample, minimise over the perturbation r

    c * ||r||_2^2 + CE(f(clip_[0,1](x + r)), target)

with L-BFGS (``torch.optim.LBFGS`` on r, strong-Wolfe line search), for a sequence of
penalty weights c searched per sample, and keep the smallest perturbation that makes
the model predict the target.

Box constraint x + r in [0, 1]: handled by projection inside the objective, the
model sees clip_[0,1](x + r). The penalty is on the unclipped r, so any part of r
that leaves the box only adds penalty and is pulled back: minimisers lie in the box,
and the returned point clip_[0,1](x + r) is never further from x than r. (Szegedy et
al. used L-BFGS-B, whose bounds torch's L-BFGS lacks; a tanh change of variables was
not used because it cannot move pixels that are exactly 0 or 1.)

Search over c (per sample, ``binary_search_steps`` rounds, starting at ``c_init``):
a round that reaches the target raises c (x10 until a failing c is known, then
bisection), a round that does not lowers it (/10 until a succeeding c is known,
then bisection). Every point L-BFGS evaluates is a candidate: per sample the
closest one (L2) classified as the target is kept. The samples of a batch are
optimised jointly (their objectives are summed; with bn_mode="eval" they do not
interact), which costs one batched forward/backward per evaluation.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attacks.base import as_float
from attacks.norms import l2_norms
from attacks.registry import register_attack
from attacks.targeted import TargetedAttack


@register_attack("lbfgs")
class LBFGS(TargetedAttack):
    """Box-constrained L-BFGS targeted attack (Szegedy et al. 2013).

    Threat model: white box, targeted, ||x' - x||_2 <= eps, x' in [0, 1]. eps: L2
    budget over the whole image in [0, 1] pixel units, default inf (unbounded); a
    sample whose smallest successful perturbation is longer than eps, or that never
    reached the target, is returned as x. c_init: first penalty weight, default 1e-2;
    binary_search_steps: rounds of the search over c, default 5; max_iter: L-BFGS
    iterations per round, default 20; target_rule: default "least_likely" (see
    :mod:`attacks.targeted`). last_info: "target", "success" (prediction on x'
    equals the target), "l2_norm" (||x' - x||_2 of the returned point).
    """

    def __init__(self, eps: float = float("inf"), c_init: float = 1e-2, binary_search_steps: int = 5,
                 max_iter: int = 20, target_rule: str = "least_likely", bn_mode: str = "eval",
                 seed: int | None = None):
        super().__init__(eps, norm="l2", target_rule=target_rule, bn_mode=bn_mode, seed=seed)
        self.c_init = as_float(c_init)
        self.binary_search_steps = binary_search_steps
        self.max_iter = max_iter
        if not self.c_init > 0 or binary_search_steps < 1 or max_iter < 1:
            raise ValueError(
                f"{self.name}: c_init must be > 0, binary_search_steps and max_iter >= 1 "
                f"(got {c_init}, {binary_search_steps}, {max_iter})"
            )

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                target: torch.Tensor | None = None) -> torch.Tensor:
        targets = self.targets(model, x, y, target)
        n = x.shape[0]
        c = torch.full((n,), self.c_init, device=x.device, dtype=torch.float32)
        lo = torch.zeros_like(c)  # largest c known to reach the target (0: none yet)
        hi = torch.full_like(c, float("inf"))  # smallest c known to fail
        best_norm = torch.full_like(c, float("inf"))
        best_x = x.clone()
        for _ in range(self.binary_search_steps):
            reached = self._minimise(model, x, targets, c, best_x, best_norm)
            lo = torch.where(reached, c, lo)
            hi = torch.where(reached, hi, c)
            bisect = (lo > 0) & torch.isfinite(hi)
            c = torch.where(bisect, (lo + hi) / 2, torch.where(reached, c * 10, c / 10))
        return self.finish(model, x, best_x, targets, report_norm=True)

    def _minimise(self, model: nn.Module, x: torch.Tensor, targets: torch.Tensor, c: torch.Tensor,
                  best_x: torch.Tensor, best_norm: torch.Tensor) -> torch.Tensor:
        """One L-BFGS run from r = 0 at penalty weights c; updates best_x/best_norm in place.

        Returns, per sample, whether any evaluated point reached the target.
        """
        shape = (-1, *([1] * (x.dim() - 1)))
        reached = torch.zeros_like(c, dtype=torch.bool)
        r = torch.zeros_like(x, requires_grad=True)
        opt = torch.optim.LBFGS([r], lr=1.0, max_iter=self.max_iter, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            x_try = (x + r).clamp(0, 1)
            logits = model(x_try).float()
            penalty = c * r.float().flatten(1).pow(2).sum(dim=1)
            loss = (penalty + F.cross_entropy(logits, targets, reduction="none")).sum()
            (grad,) = torch.autograd.grad(loss, r)  # w.r.t. r only: no parameter .grad
            r.grad = grad
            with torch.no_grad():
                hit = logits.argmax(dim=1) == targets
                dist = l2_norms(x_try - x).float()
                better = hit & (dist < best_norm)
                best_norm.copy_(torch.where(better, dist, best_norm))
                best_x.copy_(torch.where(better.view(shape), x_try.detach(), best_x))
                reached.logical_or_(hit)
            return loss.detach()

        opt.step(closure)
        return reached
