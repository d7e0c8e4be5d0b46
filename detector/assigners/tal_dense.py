"""The task-aligned assigner written the straightforward dense way, on (B, M, A) tensors.

It is the reference that the sparse `TaskAlignedAssigner` is checked and benchmarked against
(tests/assigners/test_tal.py, scripts/benchmark.py); select it with `assigner=tal_dense`. Memory grows
as batch x GT x anchors (x 4 for the pairwise boxes), so it is only practical for few GT per image.
Positives with alignment exactly 0 are dropped, as in the sparse version (see its docstring).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from detector.assigners.base import AssignerInput, Assignment, background_assignment
from detector.assigners.tal import TaskAlignedAssigner


class DenseTaskAlignedAssigner(TaskAlignedAssigner):
    @torch.no_grad()
    def forward(self, inputs: AssignerInput) -> Assignment:
        pred_scores, pred_boxes, points = inputs.pred_scores, inputs.pred_boxes, inputs.priors.points
        gt_labels, gt_boxes, gt_mask = inputs.gt_labels, inputs.gt_boxes, inputs.gt_mask
        batch, anchors, num_classes = pred_scores.shape
        num_gt = gt_boxes.shape[1]
        if num_gt == 0 or not gt_mask.any():
            return background_assignment(batch, anchors, self.num_classes, pred_boxes)
        gt_labels = gt_labels.long().clamp(min=0)  # padded rows (-1) are masked out by `inside`
        candidate_boxes = self.candidate_boxes(gt_boxes, inputs.priors)
        left_top = points[None, None] - candidate_boxes[:, :, None, :2]
        right_bottom = candidate_boxes[:, :, None, 2:] - points[None, None]
        inside = (torch.cat([left_top, right_bottom], -1).amin(-1) > 1e-9) & gt_mask[..., None]
        pairs_gt = gt_boxes[:, :, None].expand(-1, -1, anchors, -1)
        pairs_pred = pred_boxes[:, None].expand(-1, num_gt, -1, -1)
        overlaps = self.overlap(pairs_gt, pairs_pred).clamp(min=0).to(pred_scores.dtype) * inside
        class_scores = pred_scores.gather(2, gt_labels[:, None, :].expand(-1, anchors, -1)).transpose(1, 2)
        align = class_scores.pow(self.alpha) * overlaps.pow(self.beta) * inside
        top = align.topk(min(self.topk, anchors), dim=-1).indices
        positive = torch.zeros_like(inside).scatter_(-1, top, True) & inside & (align > 0)
        contested = positive.sum(1, keepdim=True) > 1
        best = F.one_hot(overlaps.argmax(1), num_gt).transpose(1, 2).bool()
        positive = torch.where(contested, best, positive)
        foreground = positive.any(1)
        gt_index = positive.long().argmax(1)
        align, overlaps = align * positive, overlaps * positive
        quality = (align * overlaps.amax(-1, keepdim=True) / (align.amax(-1, keepdim=True) + self.eps)).amax(1)
        labels = gt_labels.gather(1, gt_index).clamp(min=0)
        boxes = gt_boxes.gather(1, gt_index.unsqueeze(-1).expand(-1, -1, 4))
        scores = F.one_hot(labels, self.num_classes).to(pred_scores.dtype) * (quality * foreground).unsqueeze(-1)
        return Assignment(labels, boxes, scores, foreground, gt_index)
