"""An adaptive attack on the post-train defence (Zheng et al.), designed from its mechanics as
Tramer et al. 2020 ("On Adaptive Attacks to Adversarial Example Defenses") advise.

The defence answers an input x' with a copy of the base model fine-tuned on the pair
{y', y''}: y' the base model's class of x', y'' its class of the defender's own
self-attacked x''. Its robustness rests on the true class y being in that pair. The
attacker knows the neighbour search and the fine-tuning, and tries three candidates:

1. out of the pair: descend a high-confidence margin (``z_y - max_{i != y} z_i``, clipped at
   ``-kappa``) of the base model at x_adv AND at the defender's self-attacked x'' of x_adv.
   x'' is recomputed by the defender's own attack at every step; its gradient is taken
   straight through that step (BPDA: d x''/d x_adv = identity, as x'' = x_adv + a perturbation
   the attacker treats as fixed). The self-attack is deterministic given the defender's seed,
   which the white-box attacker knows, so no EOT is needed. Per sample the first iterate with
   y out of {y', y''} is kept.
2. the base model's own PGD (cross-entropy, random start): the non-adaptive attack, so the
   adaptive one is never weaker by construction of the worst case.
3. the pair models: descend the margin of the copy that answers the input (the answer
   rule's margin: within the pair, or over all classes), fine-tuned as the defence
   fine-tunes it and taken from its cache; from x, from candidate 1 and from candidate 2.

Each candidate is evaluated through the real defence, and per sample the first that fools
it is returned (else candidate 1); later candidates only attack the samples still unfooled. The defence's fine-tunes land in its own cache, so the
evaluation that follows reuses them.

Threat model: ||x_adv - x|| <= eps (``norm`` linf or l2) and x_adv in [0, 1]; eps and alpha in
pixel units. White box: ``defence`` (passed at call time, ``attack(model, x, y, defence=...)``)
is the defence itself; it needs ``neighbour_inputs``, ``answering_models``, ``classify`` and
``config.restrict_to_pair`` (lightning_modules.defences.post_train.PostTrain has them).
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from attacks.base import Attack, as_float
from attacks.losses import margin_loss
from attacks.model_mode import attack_mode
from attacks.norms import make_ball, per_sample
from attacks.registry import create_attack, register_attack


@register_attack("post_train_adaptive")
class PostTrainAdaptive(Attack):
    """Adaptive attack on post-train: push y out of the defender's pair (BPDA through its self-attack), and
    attack the fine-tuned pair model; per sample the first candidate that fools the real defence.

    eps: ball radius (pixel units); alpha: step size (default 2.5 * eps / steps); steps: descent steps
    of each candidate; kappa: confidence (logit margin) the out-of-pair candidate aims for; norm:
    "linf" or "l2"; bn_mode, seed: see attacks.base. Call with ``defence=`` (and ``defence_seed=``,
    the seed the defender's self-attack uses, when it has a random start).
    """

    def __init__(self, eps: float = 8 / 255, alpha: Optional[float] = None, steps: int = 20, kappa: float = 10.0,
                 norm: str = "linf", bn_mode: str = "eval", seed: int | None = None):
        super().__init__(eps, norm=norm, bn_mode=bn_mode, seed=seed)
        make_ball(norm, self.eps)  # fail early on an unknown norm
        self.alpha = None if alpha is None else as_float(alpha)
        self.steps, self.kappa = steps, as_float(kappa)
        if steps < 1:
            raise ValueError(f"{self.name}: steps must be >= 1 (got {steps})")

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, defence: Any = None,
                defence_seed: Optional[int] = None) -> torch.Tensor:
        if defence is None:
            raise ValueError(f"{self.name} attacks the post-train defence itself: call it as "
                             "attack(model, x, y, defence=PostTrain(...)) (PostTrainEvaluation's adaptive option does)")
        out_of_pair = self._out_of_pair(model, x, y, defence, defence_seed)
        base_pgd = create_attack({"name": "pgd", "eps": self.eps, "alpha": self._step_size(), "steps": self.steps,
                                  "norm": self.norm, "bn_mode": self.bn_mode, "seed": self._seed()})(model, x, y)
        best = out_of_pair.clone()
        fooled = torch.zeros_like(y, dtype=torch.bool)
        candidates = [lambda rows: out_of_pair[rows], lambda rows: base_pgd[rows]]
        candidates += [lambda rows, start=start: self._pair_model(x[rows], y[rows], start[rows], defence, defence_seed)
                       for start in (x, out_of_pair, base_pgd)]  # the pair model from each starting point
        for candidate in candidates:
            rows = (~fooled).nonzero().flatten()
            if rows.numel() == 0:
                break
            x_rows = candidate(rows)
            hit = self._defended(defence, x_rows, defence_seed) != y[rows]
            best[rows[hit]], fooled[rows[hit]] = x_rows[hit], True
        return best

    # -- the candidates ------------------------------------------------------------------
    def _out_of_pair(self, model, x, y, defence, defence_seed) -> torch.Tensor:
        """Candidate 1: base-model margin at x_adv and (BPDA) at the defender's x'' of x_adv, both below -kappa."""
        ball, alpha = make_ball(self.norm, self.eps), self._step_size()
        x_adv, kept = x.clone(), x.clone()
        done = torch.zeros_like(y, dtype=torch.bool)
        for _ in range(self.steps + 1):  # the last pass only checks the final iterate
            original, x_neighbour = self._self_attack(defence, x_adv, defence_seed)
            x_var = x_adv.detach().requires_grad_(True)
            through = x_neighbour + (x_var - x_var.detach())  # value x'', gradient identity (BPDA)
            logits, logits_neighbour = model(x_var).float(), model(through).float()
            out = (original != y) & (logits_neighbour.argmax(1) != y)
            new = out & ~done
            kept[new], done = x_adv[new], done | out
            if done.all():
                break
            loss = (margin_loss(logits, y).clamp(min=-self.kappa)
                    + margin_loss(logits_neighbour, y).clamp(min=-self.kappa)).sum()
            (grad,) = torch.autograd.grad(loss, x_var)
            x_adv = ball.project_around(x, x_adv - ball.step(grad, alpha))
        return torch.where(per_sample(done, x), kept, x_adv)

    def _pair_model(self, x, y, start, defence, defence_seed) -> torch.Tensor:
        """Candidates 2 and 3: descend the answer margin of the copy that answers ``start`` (projected around x)."""
        ball, alpha = make_ball(self.norm, self.eps), self._step_size()
        x_adv = start.clone()
        original, x_neighbour = self._self_attack(defence, start, defence_seed)
        for rows, pair, copy in list(defence.answering_models(start, original, x_neighbour)):
            with attack_mode(copy, self.bn_mode):
                for _ in range(self.steps):
                    x_var = x_adv[rows].detach().requires_grad_(True)
                    logits = copy(x_var).float()
                    if defence.config.restrict_to_pair:  # y out of the pair: margin -inf, clipped, no gradient
                        outside = torch.ones(logits.shape[1], dtype=torch.bool, device=logits.device)
                        outside[list(pair)] = False
                        logits = logits.masked_fill(outside, float("-inf"))
                    margin = margin_loss(logits, y[rows]).clamp(min=-self.kappa)
                    (grad,) = torch.autograd.grad(margin.sum(), x_var)
                    x_adv[rows] = ball.project_around(x[rows], x_var.detach() - ball.step(grad, alpha))
        return x_adv

    # -- helpers -------------------------------------------------------------------------
    def _seed(self) -> int:
        """The seed of the base-model PGD's random start: this attack's (or this call's) seed."""
        return self._call_seed if self.seed is None else self.seed

    def _step_size(self) -> float:
        return self.alpha if self.alpha is not None else 2.5 * self.eps / self.steps

    @staticmethod
    def _self_attack(defence, x, defence_seed):
        """The defender's own (y', x'') of x."""
        with torch.no_grad():
            return defence.neighbour_inputs(x.detach(), defence_seed)

    @staticmethod
    def _defended(defence, x, defence_seed) -> torch.Tensor:
        with torch.no_grad():
            return defence.classify(x, *defence.neighbour_inputs(x, defence_seed))

