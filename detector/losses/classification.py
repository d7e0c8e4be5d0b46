"""Classification losses, element-wise over (..., C) logits and soft targets in [0, 1]."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BCEWithLogits(nn.Module):
    """Sigmoid binary cross-entropy with soft targets t (YOLOv8 default):
    L = -[t log sigma(x) + (1 - t) log(1 - sigma(x))], per anchor and class, unreduced."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none")
