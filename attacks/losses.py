"""Per-sample losses on logits that several attacks share (float32, shape (N,))."""
from __future__ import annotations

import torch


def margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``z_y - max_{i != y} z_i`` per sample, in float32: negative exactly when the model is fooled.

    Square minimises it, APGD's DLR loss divides it by a logit spread, and the minimum-norm
    attacks (CW, DeepFool, FMN) use its negation, the distance past the decision boundary.
    """
    logits = logits.float()
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    z_other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return z_y - z_other
