"""The assigner contract: every assigner takes one `AssignerInput` and returns one `Assignment`.

A criterion builds the input from its head output (class probabilities, decoded boxes, priors) and the padded
ground truth, calls `assigner(inputs)`, and never needs to know which assigner it holds.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from detector.models.priors import Priors


class AssignerInput(NamedTuple):
    """What an assigner may look at, for one batch (all boxes xyxy in input pixels):
    pred_scores (B, A, C) predicted class probabilities, pred_boxes (B, A, 4) decoded predicted boxes (both
    detached), priors (points, strides, prior boxes of anchor-based heads, priors per level), gt_labels (B, M) long,
    gt_boxes (B, M, 4) padded per image, gt_mask (B, M) True for real (not padded) rows."""

    pred_scores: torch.Tensor
    pred_boxes: torch.Tensor
    priors: Priors
    gt_labels: torch.Tensor
    gt_boxes: torch.Tensor
    gt_mask: torch.Tensor


class Assignment(NamedTuple):
    """Per-anchor targets for one batch: labels (B, A) long, boxes (B, A, 4) xyxy pixels, scores (B, A, C) soft
    class targets (0 for negatives), foreground (B, A) bool, gt_index (B, A) long row of the matched padded GT."""

    labels: torch.Tensor
    boxes: torch.Tensor
    scores: torch.Tensor
    foreground: torch.Tensor
    gt_index: torch.Tensor


class Assigner(nn.Module):
    """Base class of the assigners: `forward(inputs: AssignerInput) -> Assignment`, without gradients."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes

    def forward(self, inputs: AssignerInput) -> Assignment:
        raise NotImplementedError


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


def segment_max(values: torch.Tensor, segments: torch.Tensor, size: int) -> torch.Tensor:
    """(size,) max of `values` within each segment id 0..size-1 (0 for empty segments): the per-GT or per-anchor
    maxima of the sparse assigners, computed on their lists of (GT, anchor) pairs."""
    return values.new_zeros(size).scatter_reduce(0, segments, values, "amax", include_self=False)
