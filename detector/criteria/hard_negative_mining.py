"""Which anchors the classification loss sees.

Hard negative mining (Liu et al., "SSD", ECCV 2016, sec. 2.2): after matching, most priors are negatives.
Instead of using all of them, SSD sorts the negatives of each image by their classification loss and keeps
the top ones so that negatives : positives is at most 3 : 1; the loss is then normalised by the number of
positives (done by the criterion). The alternative is no mining at all (`sampler: null`), with a loss built
for the imbalance such as the focal loss (RetinaNet), normalised the same way.
"""

from __future__ import annotations

import torch
from torch import nn


class HardNegativeMiner(nn.Module):
    """forward(loss (B, A), positive (B, A) bool) -> selected (B, A) bool: every positive, plus the
    `neg_pos_ratio * positives` (floored; at least `min_negatives`, at most all) negatives of the same
    image with the largest loss. Ties go to the lower anchor index (stable sort), so the choice is
    deterministic. An image without positives contributes `min_negatives` negatives (0 by default: SSD)."""

    def __init__(self, neg_pos_ratio: float = 3.0, min_negatives: int = 0) -> None:
        super().__init__()
        if neg_pos_ratio < 0 or min_negatives < 0:
            raise ValueError("neg_pos_ratio and min_negatives must be >= 0")
        self.neg_pos_ratio, self.min_negatives = neg_pos_ratio, min_negatives

    @torch.no_grad()
    def forward(self, loss: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
        num_negatives = (positive.sum(1, keepdim=True) * self.neg_pos_ratio).floor().long()
        num_negatives = num_negatives.clamp(min=self.min_negatives)
        ranked = loss.detach().float().masked_fill(positive, float("-inf"))
        order = ranked.sort(dim=1, descending=True, stable=True).indices
        rank = torch.empty_like(order).scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
        return positive | ((rank < num_negatives) & ~positive)
