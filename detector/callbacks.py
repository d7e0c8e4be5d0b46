"""Training callbacks built on Lightning's own mechanisms."""

from __future__ import annotations

import math

import torch
from lightning.pytorch.callbacks import WeightAveraging


class EMA(WeightAveraging):
    """Exponential moving average of the weights (and float buffers), with the YOLOv8 warm-up of the decay:
        d_k = decay * (1 - exp(-k / tau)),   ema <- d_k * ema + (1 - d_k) * weights
    after the k-th optimizer step. Lightning validates and checkpoints with the averaged weights."""

    def __init__(self, decay: float = 0.9999, tau: float = 2000.0) -> None:
        def ema_update(averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor) -> torch.Tensor:
            d = decay * (1 - math.exp(-float(num_averaged) / tau))
            return averaged * d + current * (1 - d)

        super().__init__(avg_fn=ema_update)
