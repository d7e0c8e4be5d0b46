"""Parts of a criterion whose behaviour follows the training epoch (a warm-up assigner, a loss-weight schedule).

`LitDetector` calls `set_epoch(epoch, max_epochs)` on every `EpochScheduled` module it holds at the start of each
training epoch, with the trainer's own epoch counter: the state is derived from it, never counted on the side, so a
run resumed from a checkpoint is in the same state as the uninterrupted run.
"""

from __future__ import annotations


class EpochScheduled:
    """Mixin: `set_epoch(epoch, max_epochs)` (0-based epoch) before the epoch's first step."""

    def set_epoch(self, epoch: int, max_epochs: int) -> None:
        raise NotImplementedError


def linear_schedule(start: float, end: float, epoch: int, max_epochs: int) -> float:
    """start at epoch 0, end at the last epoch (max_epochs - 1), linear in between (YOLO26's one-to-many weight)."""
    return start + (end - start) * min(epoch / max(max_epochs - 1, 1), 1.0)
