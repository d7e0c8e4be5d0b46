"""What every assigner returns: per-anchor targets for one batch."""

from __future__ import annotations

from typing import NamedTuple

import torch


class Assignment(NamedTuple):
    """labels (B, A) long, boxes (B, A, 4) xyxy pixels, scores (B, A, C) soft class targets,
    foreground (B, A) bool, gt_index (B, A) long index into the padded GT rows."""

    labels: torch.Tensor
    boxes: torch.Tensor
    scores: torch.Tensor
    foreground: torch.Tensor
    gt_index: torch.Tensor


def background_assignment(batch: int, anchors: int, num_classes: int, like: torch.Tensor) -> Assignment:
    """Every anchor is background (used for batches without ground truth)."""
    device = like.device
    return Assignment(
        labels=torch.zeros(batch, anchors, dtype=torch.long, device=device),
        boxes=torch.zeros(batch, anchors, 4, dtype=like.dtype, device=device),
        scores=torch.zeros(batch, anchors, num_classes, dtype=like.dtype, device=device),
        foreground=torch.zeros(batch, anchors, dtype=torch.bool, device=device),
        gt_index=torch.zeros(batch, anchors, dtype=torch.long, device=device),
    )
