"""Targeted attacks: push x towards a chosen class instead of away from its label.

Every targeted attack picks its target classes with one shared rule (option
``target_rule``, see :func:`choose_targets`):

- ``"given"``: the caller passes ``target=`` (a LongTensor of classes, one per sample)
  to the call, ``attack(model, x, y, target=t)``; without it the call is a ValueError.
- ``"least_likely"``: the class with the smallest clean logit (Kurakin et al. 2016's
  "least-likely class", the hardest and most damaging target).
- ``"random"``: uniform among the classes other than ``y``, drawn from the attack's
  seeded generator (so ``seed`` reproduces the targets).

Attacks in this module:

- ``fgsm_targeted`` (:class:`FGSMTargeted`): Kurakin, Goodfellow & Bengio 2016,
  "Adversarial examples in the physical world", one-step target class method.
- ``l2_iterative_targeted`` (:class:`L2IterativeTargeted`): the L2-normalised iterative
  targeted attack of Jézéquel 2019, "Protecting networks against adversial attacks"
  (the blur-preprocessing report), section 2.1.

The box-constrained L-BFGS attack of Szegedy et al. 2013 lives in :mod:`attacks.lbfgs`
and uses the same target rules. Every attack here writes ``last_info["target"]`` and
``last_info["success"]`` (the model's prediction on the returned point equals the
target), one entry per sample.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attacks.base import Attack, as_float
from attacks.norms import L2Ball, make_ball, per_sample
from attacks.registry import register_attack

TARGET_RULES = ("given", "least_likely", "random")


def check_target_rule(rule: str) -> str:
    """Return ``rule`` if it is a known target rule, else a ValueError naming the valid ones."""
    if rule not in TARGET_RULES:
        raise ValueError(f"unknown target_rule {rule!r}; valid target rules: {', '.join(TARGET_RULES)}")
    return rule


def choose_targets(
    rule: str,
    clean_logits: torch.Tensor,
    y: torch.Tensor,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Target classes (LongTensor, one per sample, on ``y``'s device) for ``rule``.

    ``clean_logits`` are the model's logits on the clean inputs (N x num_classes);
    ``target`` is used by, and only by, the rule "given"; ``generator`` draws the
    "random" targets.
    """
    check_target_rule(rule)
    n, num_classes = clean_logits.shape
    device = clean_logits.device
    if rule == "given":
        if target is None:
            raise ValueError('target_rule="given" needs the target classes: call attack(model, x, y, target=t)')
        t = torch.as_tensor(target, device=device).long()
        if t.dim() == 0:
            t = t.expand(n)
        if t.shape != (n,):
            raise ValueError(f"target must hold one class per sample: shape ({n},), got {tuple(t.shape)}")
        if t.numel() and (t.min() < 0 or t.max() >= num_classes):
            raise ValueError(f"target classes must lie in [0, {num_classes - 1}]")
        return t.clone()
    if target is not None:
        raise ValueError(f'target= was passed but target_rule is {rule!r}; use target_rule="given" to attack given targets')
    if rule == "least_likely":
        return clean_logits.argmin(dim=1)
    # "random": uniform over the num_classes - 1 classes other than y
    if num_classes < 2:
        raise ValueError('target_rule="random" needs at least two classes')
    draw = torch.randint(0, num_classes - 1, (n,), generator=generator, device=device)
    y = y.to(device).long()
    return draw + (draw >= y).long()


class TargetedAttack(Attack):
    """Base for targeted attacks: the target rule and the per-sample bookkeeping.

    Not registered itself. Subclasses call :meth:`targets` at the start of
    ``perturb`` and :meth:`finish` at its end.
    """

    def __init__(self, eps: float, norm: str = "linf", target_rule: str = "least_likely",
                 bn_mode: str = "eval", seed: int | None = None):
        super().__init__(eps, norm=norm, bn_mode=bn_mode, seed=seed)
        make_ball(norm, self.eps)  # fail early on an unknown norm
        self.target_rule = check_target_rule(target_rule)

    def targets(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                target: torch.Tensor | None = None) -> torch.Tensor:
        """Targets for this batch by ``self.target_rule`` (clean logits from the model in attack mode)."""
        with torch.no_grad():
            logits = model(x).float()
        gen = self.generator(x.device) if self.target_rule == "random" else None
        return choose_targets(self.target_rule, logits, y, target=target, generator=gen)

    def finish(self, model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, targets: torch.Tensor,
               enforce_budget: bool = True, report_norm: bool = False) -> torch.Tensor:
        """Apply the budget, fill ``last_info`` and return the final points.

        enforce_budget: samples whose perturbation is longer than eps (in ``self.norm``)
        are replaced by x (failure within budget). report_norm: add
        ``last_info["<norm>_norm"]``, the norm of the returned perturbation.
        """
        ball = make_ball(self.norm, self.eps)
        x_adv = x_adv.detach()
        with torch.no_grad():
            if enforce_budget:
                over = ball.norm(x_adv - x) > self.eps
                x_adv = torch.where(per_sample(over, x), x, x_adv)
            pred = model(x_adv).float().argmax(dim=1)
        self.last_info = {"target": targets, "success": pred == targets}
        if report_norm:
            self.last_info[f"{self.norm}_norm"] = ball.norm(x_adv - x)
        return x_adv


@register_attack("fgsm_targeted")
class FGSMTargeted(TargetedAttack):
    """One-step target class method (Kurakin, Goodfellow & Bengio 2016, eq. 4).

    x' = clip_[0,1](x - eps * sign(grad_x J(x, y_target))), J the cross-entropy: one
    signed step down the loss of the target class. With norm="l2" the step is
    eps * g / ||g||_2 instead (the targeted fast gradient method).

    Threat model: white box, targeted, ||x' - x||_inf <= eps (or L2 with norm="l2"),
    x' in [0, 1]. eps in [0, 1] pixel units, default 8/255. target_rule default
    "least_likely" (the paper's "step l.l."); see :mod:`attacks.targeted` for the rules.
    last_info: "target", "success" (prediction on x' equals the target).
    """

    def __init__(self, eps: float = 8 / 255, norm: str = "linf", target_rule: str = "least_likely",
                 bn_mode: str = "eval", seed: int | None = None):
        super().__init__(eps, norm=norm, target_rule=target_rule, bn_mode=bn_mode, seed=seed)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                target: torch.Tensor | None = None) -> torch.Tensor:
        targets = self.targets(model, x, y, target)
        ball = make_ball(self.norm, self.eps)
        grad = self.input_gradient(model, x, targets)
        x_adv = ball.project_around(x, x - ball.step(grad, self.eps))
        # the step is eps long by construction: no sample is over budget (bar rounding)
        return self.finish(model, x, x_adv, targets, enforce_budget=False)


@register_attack("l2_iterative_targeted")
class L2IterativeTargeted(TargetedAttack):
    """L2-normalised iterative targeted attack (Jézéquel 2019, section 2.1, the
    blur-preprocessing report).

    Repeat x <- clip_[0,1](x - alpha * g / ||g||_2), g = grad_x CE(f(x), c_target),
    for each sample until f(x) = c_target (that sample then stops moving) or
    ``max_steps`` steps. No projection during the run: the attack is unbounded as in
    the paper; a sample whose final perturbation is longer than eps is returned as x
    (failure within budget).

    Threat model: white box, targeted, ||x' - x||_2 <= eps, x' in [0, 1].
    eps: L2 budget in [0, 1] pixel units over the whole image, default inf
    (unbounded); alpha: L2 length of each step in pixel units, default 0.1 (the
    report's update rate); max_steps: default 100; target_rule: default
    "least_likely" (the report leaves c_obj to the attacker; use "given" for that).
    last_info: "target", "success" (target reached within the budget), "l2_norm"
    (||x' - x||_2 of the returned point), "steps" (steps taken per sample).
    """

    def __init__(self, eps: float = float("inf"), alpha: float = 0.1, max_steps: int = 100,
                 target_rule: str = "least_likely", bn_mode: str = "eval", seed: int | None = None):
        super().__init__(eps, norm="l2", target_rule=target_rule, bn_mode=bn_mode, seed=seed)
        self.alpha = as_float(alpha)
        self.max_steps = max_steps
        if not self.alpha > 0 or max_steps < 1:
            raise ValueError(f"{self.name}: alpha must be > 0 and max_steps >= 1 (got {alpha}, {max_steps})")

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                target: torch.Tensor | None = None) -> torch.Tensor:
        targets = self.targets(model, x, y, target)
        step = L2Ball(self.alpha).step
        shape = (-1, *([1] * (x.dim() - 1)))
        x_adv = x.clone()
        done = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        steps = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        for _ in range(self.max_steps):
            xr = x_adv.detach().requires_grad_(True)
            logits = model(xr).float()
            done |= logits.argmax(dim=1) == targets
            if done.all():
                break
            (grad,) = torch.autograd.grad(F.cross_entropy(logits, targets, reduction="sum"), xr)
            moved = (x_adv - step(grad, self.alpha)).clamp(0, 1)
            x_adv = torch.where(done.view(shape), x_adv, moved.detach())
            steps += (~done).long()
        x_adv = self.finish(model, x, x_adv, targets, report_norm=True)
        self.last_info["steps"] = steps
        return x_adv
