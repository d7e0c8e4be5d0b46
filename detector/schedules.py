"""Schedules over training time, both derived from the trainer's own counters (so a resumed run is in the same
state as the uninterrupted one):

The learning rate, stepped every optimizer step (`warmup_decay`, the `scheduler` config group): linear warm-up,
then cosine or linear decay,
    factor(t) = (t + 1) / (W + 1)                           for t < W (warm-up steps)
    factor(t) = f + (1 - f) * (1 + cos(pi * p)) / 2         cosine, p = (t - W) / (T - W)
    factor(t) = 1 - (1 - f) * p                             linear
with f = `final_lr_ratio`; lr(t) = base_lr * factor(t).

The parts of a criterion that follow the epoch (a warm-up assigner, a loss-weight schedule): `LitDetector` calls
`set_epoch(epoch, max_epochs)` on every `EpochScheduled` module of its criterion at the start of each training
epoch, with the trainer's epoch counter, never a count kept on the side.
"""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR


def warmup_decay(
    optimizer: torch.optim.Optimizer, total_steps: int, steps_per_epoch: int, warmup_epochs: float = 3.0,
    min_warmup_steps: int = 100, final_lr_ratio: float = 0.01, decay: str = "cosine",
) -> LambdaLR:
    """W = max(warmup_epochs * steps_per_epoch, min_warmup_steps), at most T - 1."""
    if decay not in ("cosine", "linear"):
        raise ValueError(f"unknown decay {decay!r}; choose 'cosine' or 'linear'")
    warmup_steps = min(max(round(warmup_epochs * steps_per_epoch), min_warmup_steps), max(total_steps - 1, 0))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
        if decay == "cosine":
            return final_lr_ratio + (1 - final_lr_ratio) * (1 + math.cos(math.pi * progress)) / 2
        return 1 - (1 - final_lr_ratio) * progress

    return LambdaLR(optimizer, factor)


class EpochScheduled:
    """Mixin: `set_epoch(epoch, max_epochs)` (0-based epoch) before the epoch's first step."""

    def set_epoch(self, epoch: int, max_epochs: int) -> None:
        raise NotImplementedError


def linear_schedule(start: float, end: float, epoch: int, max_epochs: int) -> float:
    """start at epoch 0, end at the last epoch (max_epochs - 1), linear in between (YOLO26's one-to-many weight)."""
    return start + (end - start) * min(epoch / max(max_epochs - 1, 1), 1.0)
