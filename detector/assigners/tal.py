"""Task-aligned assigner (Feng et al., "TOOD: Task-aligned One-stage Object Detection", ICCV 2021),
with the settings YOLOv8 uses.

For each GT g and anchor point a strictly inside g:
    t(a, g) = s(a, class(g))^alpha * u(a, g)^beta
with s the predicted class probability and u the overlap (CIoU, clamped at 0) of the anchor's
decoded prediction with g. Each GT keeps its top-k anchors by t; an anchor kept by several GTs
goes to the GT with the largest overlap. The soft class target of a positive anchor is
    max_g  t(a, g) * max_a' u(a', g) / (max_a' t(a', g) + eps).

Memory: the overlap is evaluated only for (image, GT, anchor) candidates inside a GT, so no
(B, M, A, 4) tensor is formed; the (B, M, A) score tensors are the largest ones.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from detector.assigners.base import Assignment, background_assignment
from detector.losses.iou import ciou


class TaskAlignedAssigner(nn.Module):
    def __init__(
        self, num_classes: int, topk: int = 10, alpha: float = 0.5, beta: float = 6.0, eps: float = 1e-9,
        overlap: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = ciou,
    ) -> None:
        super().__init__()
        self.num_classes, self.topk, self.alpha, self.beta, self.eps = num_classes, topk, alpha, beta, eps
        self.overlap = overlap

    @torch.no_grad()
    def forward(
        self, pred_scores: torch.Tensor, pred_boxes: torch.Tensor, points: torch.Tensor,
        gt_labels: torch.Tensor, gt_boxes: torch.Tensor, gt_mask: torch.Tensor,
    ) -> Assignment:
        """pred_scores (B, A, C) probabilities, pred_boxes (B, A, 4) and points (A, 2) in pixels,
        gt_labels (B, M), gt_boxes (B, M, 4) pixels, gt_mask (B, M) True for real (not padded) rows."""
        batch, anchors, _ = pred_scores.shape
        num_gt = gt_boxes.shape[1]
        if num_gt == 0:
            return background_assignment(batch, anchors, self.num_classes, pred_boxes)

        inside = self._points_inside(points, gt_boxes) & gt_mask.unsqueeze(-1)  # (B, M, A)
        b, g, a = inside.nonzero(as_tuple=True)
        gt_labels = gt_labels.long()
        overlaps = pred_boxes.new_zeros(batch, num_gt, anchors)
        overlaps[b, g, a] = self.overlap(gt_boxes[b, g], pred_boxes[b, a]).clamp(min=0).to(overlaps.dtype)
        align = torch.zeros_like(overlaps)
        scores = pred_scores[b, a, gt_labels[b, g]]
        align[b, g, a] = scores.pow(self.alpha) * overlaps[b, g, a].pow(self.beta)

        topk = min(self.topk, anchors)
        top_index = align.topk(topk, dim=-1).indices
        positive = torch.zeros_like(inside).scatter_(-1, top_index, True) & inside

        claims = positive.sum(1)  # (B, A)
        contested = claims > 1
        if contested.any():
            best_gt = F.one_hot(overlaps.argmax(1), num_gt).transpose(1, 2).bool()
            positive = torch.where(contested.unsqueeze(1), best_gt, positive)
        foreground = positive.any(1)
        gt_index = positive.long().argmax(1)  # (B, A)

        labels = gt_labels.gather(1, gt_index).clamp(min=0)
        boxes = gt_boxes.gather(1, gt_index.unsqueeze(-1).expand(-1, -1, 4))
        align = align * positive
        overlaps = overlaps * positive
        max_align = align.amax(-1, keepdim=True)
        max_overlap = overlaps.amax(-1, keepdim=True)
        quality = (align * max_overlap / (max_align + self.eps)).amax(1)  # (B, A)
        scores = F.one_hot(labels, self.num_classes).to(pred_scores.dtype)
        scores = scores * (quality * foreground).unsqueeze(-1)
        return Assignment(labels, boxes, scores, foreground, gt_index)

    @staticmethod
    def _points_inside(points: torch.Tensor, gt_boxes: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
        """(A, 2) points, (B, M, 4) boxes -> (B, M, A) True where the point is strictly inside the box."""
        x, y = points[:, 0], points[:, 1]
        x1, y1, x2, y2 = (gt_boxes[..., i : i + 1] for i in range(4))
        return (x - x1 > eps) & (y - y1 > eps) & (x2 - x > eps) & (y2 - y > eps)
