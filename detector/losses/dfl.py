"""Distribution focal loss (Li et al., "Generalized Focal Loss", NeurIPS 2020).

A continuous target y between bins y_l = floor(y) and y_r = y_l + 1 is learned as
DFL(S) = -((y_r - y) log S_l + (y - y_l) log S_r), S = softmax of the bin logits.

Configured by `configs/loss/dfl/`: `dfl` (this loss, weighted by `loss.weights.dfl`) or `none`
(`loss/dfl=none`: loss.dfl is null and the criterion reports a zero DFL component).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def distribution_focal_loss(bin_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """bin_logits (N, 4, reg_max), target (N, 4) distances in bins, within [0, reg_max - 1).
    Returns (N,): the loss averaged over the four box sides."""
    bin_logits, target = bin_logits.float(), target.float()
    left = target.long()
    right = left + 1
    weight_left = right - target
    log_probs = F.log_softmax(bin_logits, dim=-1)
    loss = -(
        log_probs.gather(-1, left.unsqueeze(-1)).squeeze(-1) * weight_left
        + log_probs.gather(-1, right.unsqueeze(-1)).squeeze(-1) * (1 - weight_left)
    )
    return loss.mean(-1)


class DFLoss(nn.Module):
    """Distribution focal loss on ltrb distances: bin_logits (N, 4 * reg_max) (reg_max read from their shape),
    target_distances (N, 4) in bins, clamped to [0, reg_max - 1 - 0.01]. Returns (N,)."""

    def forward(self, bin_logits: torch.Tensor, target_distances: torch.Tensor) -> torch.Tensor:
        reg_max = bin_logits.shape[-1] // 4
        target = target_distances.clamp(0, reg_max - 1 - 0.01)
        return distribution_focal_loss(bin_logits.unflatten(-1, (4, reg_max)), target)
