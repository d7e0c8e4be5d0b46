"""SSD matching strategy (Liu et al., "SSD: Single Shot MultiBox Detector", ECCV 2016, sec. 2.2).

Matching is purely geometric, on the IoU of prior (default / anchor) boxes with the ground truth:
  1. each GT gets the prior with which it has the highest IoU, even when that IoU is below the threshold;
  2. every other prior whose best IoU with any GT is >= `iou_threshold` (0.5) is matched to that best GT.
Principle 1 wins conflicts: a prior that is some GT's best prior belongs to that GT even if it overlaps
another GT more. When two GTs have the same best prior, it goes to the GT it overlaps most (ties: the lower
GT index); torchvision's `SSDMatcher` gives it to the later GT row instead (an order-dependent choice).
A GT that overlaps no prior at all (IoU 0, e.g. a zero-area box) gets no forced prior.

What the returned `Assignment` holds for this matcher:
  labels      (B, A) class 0..C-1 of the matched GT for foreground priors, 0 for background priors
  boxes       (B, A, 4) the matched GT box (pixels); for background priors the box of GT row 0 (unused)
  scores      (B, A, C) one-hot of the matched class for foreground priors, all 0 for background: a hard
              target (no quality weighting, unlike TAL's soft scores), so sum(scores) = number of positives
  foreground  (B, A) matched priors
  gt_index    (B, A) row of the matched GT in the padded GT tensor (0 for background)

Priors: `priors=` (A, 4) xyxy pixels (the default boxes of an SSD head), or, for an anchor-free head, the
anchor points (A, 2) and `strides=` (A, 1) in pixels, each point then being given a square prior of side
`point_prior_scale * stride` (`detector.models.priors.square_priors`). The predictions are not used: the call takes
the same positional arguments as the task-aligned assigner so that criteria can call either.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import box_iou

from detector.assigners.base import Assigner, AssignerInput, Assignment, background_assignment
from detector.models.priors import square_priors


class SSDMatcher(Assigner):
    def __init__(self, num_classes: int, iou_threshold: float = 0.5, point_prior_scale: float = 4.0) -> None:
        super().__init__(num_classes)
        if not 0 < iou_threshold <= 1:
            raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
        self.iou_threshold, self.point_prior_scale = iou_threshold, point_prior_scale

    @torch.no_grad()
    def forward(self, inputs: AssignerInput) -> Assignment:
        """Matches the prior boxes (or the square priors of the anchor points) with the real GT rows."""
        priors = inputs.priors.boxes
        if priors is None:
            priors = square_priors(inputs.priors.points, inputs.priors.strides, self.point_prior_scale)
        gt_labels, gt_boxes, gt_mask = inputs.gt_labels, inputs.gt_boxes, inputs.gt_mask
        batch, num_gt = gt_boxes.shape[:2]
        anchors = priors.shape[0]
        if num_gt == 0 or not gt_mask.any():
            return background_assignment(batch, anchors, self.num_classes, priors)

        gt_boxes = gt_boxes.to(priors.dtype)
        iou = box_iou(gt_boxes.reshape(-1, 4), priors).view(batch, num_gt, anchors)
        iou = iou.masked_fill(~gt_mask.unsqueeze(-1), -1.0)  # padded rows never win

        # principle 2: every prior goes to its best GT if that IoU reaches the threshold
        best_gt_iou, gt_index = iou.max(1)  # (B, A)
        foreground = best_gt_iou >= self.iou_threshold

        # principle 1: each real GT claims its best prior; a prior claimed twice goes to the larger IoU
        best_prior_iou, best_prior = iou.max(2)  # (B, M)
        claims = torch.zeros_like(iou, dtype=torch.bool).scatter_(  # (B, M, A): GT g claims prior a
            2, best_prior.unsqueeze(-1), (gt_mask & (best_prior_iou > 0)).unsqueeze(-1)
        )
        claimed = claims.any(1)  # (B, A)
        claimant = iou.masked_fill(~claims, -2.0).argmax(1)  # (B, A)
        gt_index = torch.where(claimed, claimant, gt_index)
        foreground = foreground | claimed
        gt_index = gt_index * foreground

        labels = gt_labels.long().gather(1, gt_index).clamp(min=0) * foreground
        boxes = gt_boxes.gather(1, gt_index.unsqueeze(-1).expand(-1, -1, 4))
        scores = F.one_hot(labels, self.num_classes).to(priors.dtype) * foreground.unsqueeze(-1)
        return Assignment(labels, boxes, scores, foreground, gt_index)
