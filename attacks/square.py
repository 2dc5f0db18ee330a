"""Square Attack, L-inf: a score-based black-box attack by random search.

Andriushchenko, Croce, Flammarion and Hein, "Square Attack: a query-efficient black-box
adversarial attack via random search", ECCV 2020 (arXiv:1912.00049).

Threat model: ||x_adv - x||_inf <= eps and x_adv in [0, 1]; eps is in [0, 1] pixel
units (default 8/255). Untargeted, black box: the attack sees only the logits of
forward passes (no gradients; every query runs under ``torch.no_grad()``) and
minimises the margin loss ``z_y - max_{i != y} z_i``; a sample is fooled when the
model's prediction differs from ``y`` (margin < 0).

The search, per sample:

1. Initialise with vertical stripes of width 1: every column of every channel is moved
   to x + eps or x - eps (random sign), clipped to [0, 1].
2. Each iteration draws one square of side ``s = round(sqrt(p * h * w))`` (clamped to
   [1, min(h, w) - 1] as in the reference code) at a uniformly random position and,
   per channel, sets the square to x + eps or x - eps (random sign) while the rest of
   the current best point is kept. The proposal is clipped to [0, 1] and the ball and
   accepted when its margin loss is lower than the current one. A proposal that would
   not change the current point is redrawn, as in the reference code.
3. Only samples that are not fooled yet are queried.

``p`` follows the paper's piecewise-constant schedule, defined for 10 000 queries and
rescaled to ``n_queries``: ``p_init`` while the rescaled iteration ``int(it / n_queries
* 10000)`` is <= 10, then halved after 10, 50, 200, 500, 1000, 2000, 4000, 6000 and
8000 (see :func:`p_schedule`).

Departures from the reference implementation, and why:

- The stripes are x +- eps (the paper); the reference code's initialisation multiplies
  eps twice (x +- eps^2), a known slip.
- A square may be placed anywhere in the image, last row and column included (the
  reference's ``randint(0, h - s)`` never reaches them); non-square images are allowed.
- Query accounting is honest and bounded: one clean forward pass per sample finds the
  samples that are already misclassified (they are returned unchanged) and counts as a
  query of the first restart, so the first restart runs one iteration fewer. Each
  restart uses at most ``n_queries`` queries per sample, so ``queries <= n_queries *
  n_restarts``.
- Restarts (as in AutoAttack's version) rerun the search from fresh stripes on the
  samples not fooled yet; per sample the point with the lowest margin loss over the
  clean input and all restarts is returned, so the result is never worse than x or
  any stripe initialisation.

With ``bn_mode="train"`` BatchNorm sees the statistics of the batch being queried,
which shrinks as samples are fooled; black-box results are meant for ``"eval"``.

``last_info``: ``queries`` (int64, forward passes that included the sample, clean check
included) and ``success`` (bool, the model's prediction on the returned point is not y).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from attacks.base import Attack, as_float
from attacks.losses import margin_loss
from attacks.norms import make_ball
from attacks.registry import register_attack

# iterations (for a budget of 10 000 queries) after which p is halved
P_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
_REFERENCE_BUDGET = 10_000
# a proposal that would leave the current point unchanged is redrawn at most this often
_MAX_REDRAWS = 32


def p_schedule(p_init: float, it: int, n_queries: int) -> float:
    """Fraction of pixels a square covers at iteration ``it`` (0-based) of ``n_queries``.

    The paper's schedule for 10 000 queries, rescaled: ``p_init`` up to rescaled
    iteration 10, halved after each of 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000.
    """
    rescaled = int(it / n_queries * _REFERENCE_BUDGET)
    return p_init / 2 ** sum(rescaled > b for b in P_HALVINGS)


def square_side(p: float, height: int, width: int) -> int:
    """Side of a square covering a fraction ``p`` of an image's pixels (per channel).

    ``round(sqrt(p * height * width))``, at least 1 and at most ``min(height, width) - 1``
    (the reference code's cap, so that a square never covers the whole image).
    """
    side = int(round(math.sqrt(p * height * width)))
    return min(max(side, 1), max(min(height, width) - 1, 1))


@register_attack("square")
class SquareAttack(Attack):
    """Square Attack, L-inf (Andriushchenko et al. 2020): black-box random search.

    eps: L-inf radius in [0, 1] pixel units (default 8/255); n_queries: query budget per
    sample and restart (default 5000); p_init: initial fraction of pixels a square
    covers (default 0.8), halved on the paper's rescaled schedule; n_restarts: searches
    from fresh stripes on the samples not fooled yet (default 1); norm: only "linf";
    bn_mode: see attacks.model_mode; seed: seeds the random search.
    """

    black_box = True

    def __init__(
        self,
        eps: float = 8 / 255,
        n_queries: int = 5000,
        p_init: float = 0.8,
        n_restarts: int = 1,
        norm: str = "linf",
        bn_mode: str = "eval",
        seed: int | None = None,
    ):
        if norm != "linf":
            raise ValueError(f"square: only norm='linf' is supported (got {norm!r})")
        super().__init__(eps, norm=norm, bn_mode=bn_mode, seed=seed)
        self.n_queries = int(n_queries)
        self.p_init = as_float(p_init)
        self.n_restarts = int(n_restarts)
        if self.n_queries < 1 or self.n_restarts < 1:
            raise ValueError(
                f"square: n_queries and n_restarts must be >= 1 (got {n_queries}, {n_restarts})"
            )
        if not 0 < self.p_init <= 1:
            raise ValueError(f"square: p_init is a fraction of pixels in (0, 1] (got {p_init})")

    # -- pieces of the search ----------------------------------------------------------
    def p_at(self, it: int) -> float:
        """Square size (fraction of pixels) at iteration ``it`` for this budget."""
        return p_schedule(self.p_init, it, self.n_queries)

    @staticmethod
    def _random_signs(shape, generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
        bits = torch.randint(0, 2, shape, generator=generator, device=like.device)
        return bits.to(like.dtype) * 2 - 1

    def stripes(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The initialisation: vertical stripes of width 1 at x +- eps, clipped to [0, 1]."""
        n, c, _, w = x.shape
        signs = self._random_signs((n, c, 1, w), generator, x)
        return make_ball("linf", self.eps).project_around(x, x + self.eps * signs)

    def square_proposal(self, x: torch.Tensor, x_best: torch.Tensor, side: int,
                        generator: torch.Generator) -> torch.Tensor:
        """``x_best`` with one random ``side`` x ``side`` square per sample set to x +- eps.

        The sign is drawn per sample and channel; the square is clipped to [0, 1]. A
        draw that leaves a sample's point unchanged is redrawn (bounded).
        """
        n, c, h, w = x.shape
        dev = x.device
        top = torch.randint(0, h - side + 1, (n,), generator=generator, device=dev)
        left = torch.randint(0, w - side + 1, (n,), generator=generator, device=dev)
        rows, cols = torch.arange(h, device=dev), torch.arange(w, device=dev)
        in_rows = (rows >= top[:, None]) & (rows < top[:, None] + side)
        in_cols = (cols >= left[:, None]) & (cols < left[:, None] + side)
        window = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]  # (n, 1, h, w)

        signs = self._random_signs((n, c, 1, 1), generator, x)
        proposal = torch.where(window, (x + self.eps * signs).clamp(0, 1), x_best)
        todo = (proposal == x_best).flatten(1).all(1).nonzero().squeeze(1)
        for _ in range(_MAX_REDRAWS):
            if todo.numel() == 0:
                break
            signs = self._random_signs((todo.numel(), c, 1, 1), generator, x)
            xs, bests = x[todo], x_best[todo]
            proposal[todo] = torch.where(window[todo], (xs + self.eps * signs).clamp(0, 1), bests)
            todo = todo[(proposal[todo] == bests).flatten(1).all(1)]
        return proposal

    @staticmethod
    def _query(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One forward pass: (margin loss, fooled) per sample."""
        logits = model(x)
        return margin_loss(logits, y), logits.argmax(1) != y

    # -- the search ----------------------------------------------------------------------
    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"square: expects image batches shaped (N, C, H, W), got shape {tuple(x.shape)}")
        with torch.no_grad():
            return self._attack(model, x, y)

    def _attack(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        generator = self.generator(x.device)
        best_margin, success = self._query(model, x, y)  # the clean check: query 1
        queries = torch.ones(x.shape[0], dtype=torch.long, device=x.device)
        best_x = x.clone()
        for restart in range(self.n_restarts):
            budget = self.n_queries - (1 if restart == 0 else 0)
            idx = (~success).nonzero().squeeze(1)
            if budget < 1 or idx.numel() == 0:
                continue
            run_x, run_margin, run_fooled, run_queries = self._search(model, x[idx], y[idx], budget, generator)
            queries[idx] += run_queries
            better = run_fooled | (run_margin < best_margin[idx])
            upd = idx[better]
            best_x[upd] = run_x[better]
            best_margin[upd] = run_margin[better]
            success[upd] = run_fooled[better]
        self.last_info = {"queries": queries, "success": success}
        return best_x

    def _search(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, budget: int,
                generator: torch.Generator):
        """One random search with at most ``budget`` queries per sample (budget >= 1)."""
        _, _, h, w = x.shape
        x_best = self.stripes(x, generator)
        margin, fooled = self._query(model, x_best, y)
        queries = torch.ones(x.shape[0], dtype=torch.long, device=x.device)
        for it in range(budget - 1):
            active = (~fooled).nonzero().squeeze(1)
            if active.numel() == 0:
                break
            side = square_side(self.p_at(it), h, w)
            proposal = self.square_proposal(x[active], x_best[active], side, generator)
            new_margin, new_fooled = self._query(model, proposal, y[active])
            queries[active] += 1
            improved = new_margin < margin[active]
            upd = active[improved]
            x_best[upd] = proposal[improved]
            margin[upd] = new_margin[improved]
            fooled[upd] = new_fooled[improved]
        return x_best, margin, fooled, queries
