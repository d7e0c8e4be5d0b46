"""The dense (YOLOv8) criterion for the DFL head: assigner -> targets -> classification + box (+ DFL) losses.

With T the assigned soft class targets and tss = max(sum T, 1) over the whole batch:
    cls = sum_{anchors, classes} cls_loss(logits, T) / tss
    box = sum_{positives} box_loss(pred, gt) * w / tss,  w = sum_c T(anchor, c)
    dfl = sum_{positives} DFL(bins, gt distances) * w / tss
    total = gain_box * box + gain_cls * cls + gain_dfl * dfl
This is YOLOv8's definition, except that the total is *not* multiplied by the batch size: it is a
per-batch quantity whose scale does not depend on the batch size (see docs/losses.md, "Loss scaling").
Box losses see boxes in grid units (pixels / stride); the assigner works in pixels.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from detector.assigners.base import Assigner, AssignerInput
from detector.losses.base import BoxLoss, ClassificationLoss
from detector.models.coders import boxes_to_distances
from detector.models.heads.dfl import DFLHeadOutput


class DetectionCriterion(nn.Module):
    # the head output it takes, and whether it trains a DFL term (read by the config check, detector.config)
    head_output: ClassVar[type] = DFLHeadOutput
    takes_dfl: ClassVar[bool] = True

    def __init__(
        self, assigner: Assigner, cls_loss: ClassificationLoss, box_loss: BoxLoss, dfl_loss: nn.Module | None,
        box_gain: float = 7.5, cls_gain: float = 0.5, dfl_gain: float = 1.5,
    ) -> None:
        super().__init__()
        self.assigner, self.cls_loss, self.box_loss, self.dfl_loss = assigner, cls_loss, box_loss, dfl_loss
        self.gains = {"box": box_gain, "cls": cls_gain, "dfl": dfl_gain}

    @property
    def activation(self) -> str:
        return self.cls_loss.activation

    def forward(self, output: DFLHeadOutput, gt_labels: torch.Tensor, gt_boxes: torch.Tensor, gt_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """gt_* are padded per image: labels (B, M), boxes (B, M, 4) xyxy in input pixels, mask (B, M).
        Returns the weighted components 'box', 'cls', 'dfl' and their sum 'loss'."""
        strides = output.priors.strides
        box_logits, cls_logits = output.box_logits.float(), output.cls_logits.float()
        pred_pixels = output.decode_boxes()
        assignment = self.assigner(AssignerInput(
            output.class_scores(self.activation).detach(), pred_pixels.detach(), output.priors,
            gt_labels, gt_boxes.float(), gt_mask,
        ))
        target_scores = assignment.scores
        total_score = target_scores.sum().clamp(min=1)
        losses = {"cls": self.cls_loss(cls_logits, target_scores).sum() / total_score}

        fg = assignment.foreground.nonzero(as_tuple=True)  # (image, anchor) of the positives: one synchronisation
        weight = target_scores.sum(-1)[fg]
        pred_boxes = pred_pixels / strides  # grid units
        target_boxes = (assignment.boxes / strides)[fg]
        losses["box"] = (self.box_loss(pred_boxes[fg], target_boxes) * weight).sum() / total_score
        if self.dfl_loss is not None:
            points = output.priors.points / strides
            target_distances = boxes_to_distances(points[fg[1]], target_boxes)
            losses["dfl"] = (self.dfl_loss(box_logits[fg], target_distances) * weight).sum() / total_score
        else:
            losses["dfl"] = box_logits.new_zeros(())
        losses = {name: value * self.gains[name] for name, value in losses.items()}
        losses["loss"] = losses["box"] + losses["cls"] + losses["dfl"]
        return losses
