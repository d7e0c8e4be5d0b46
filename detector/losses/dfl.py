"""Distribution focal loss (Li et al., "Generalized Focal Loss", NeurIPS 2020).

A continuous target y between bins y_l = floor(y) and y_r = y_l + 1 is learned as
DFL(S) = -((y_r - y) log S_l + (y - y_l) log S_r), S = softmax of the bin logits.

Configured by `configs/loss/dfl/`: `dfl` (this loss, weighted by `loss.weights.dfl`), `l1` (its counterpart for
DFL-free heads, `model.reg_max=1`: no bins, so no distribution to learn) or `none` (`loss/dfl=none`: loss.dfl is
null and the criterion reports a zero distance component).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from detector.losses.base import DistanceLoss


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


class DFLoss(DistanceLoss):
    """Distribution focal loss on ltrb distances: bin_logits (N, 4 * reg_max) (reg_max read from their shape),
    target_distances (N, 4) in bins, clamped to [0, reg_max - 1 - 0.01]. Returns (N,)."""

    def forward(self, bin_logits: torch.Tensor, target_distances: torch.Tensor) -> torch.Tensor:
        reg_max = bin_logits.shape[-1] // 4
        target = target_distances.clamp(0, reg_max - 1 - 0.01)
        return distribution_focal_loss(bin_logits.unflatten(-1, (4, reg_max)), target)


class DistanceL1Loss(DistanceLoss):
    """The distance term of DFL-free heads (reg_max = 1, YOLO26): mean over the 4 sides of |d - y|, predicted
    distances (N, 4) against target distances (N, 4), both in grid units. Returns (N,)."""

    needs_bins = False

    def forward(self, distances: torch.Tensor, target_distances: torch.Tensor) -> torch.Tensor:
        return (distances.float() - target_distances.float()).abs().mean(-1)


def distance_loss_mismatch(loss: type[DistanceLoss], reg_max: int) -> str | None:
    """Why `loss` cannot train a head with `reg_max` bins per side (None when it can): the first part of the
    one-line error of the config check and of the criterion, which append the valid choices."""
    if loss.needs_bins and reg_max <= 1:
        return f"{loss.__name__} needs distribution bins, which a head with reg_max={reg_max} does not have"
    if not loss.needs_bins and reg_max > 1:
        return f"{loss.__name__} regresses distances directly, but the head (reg_max={reg_max}) predicts bins"
    return None
