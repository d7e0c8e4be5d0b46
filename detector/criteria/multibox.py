"""The MultiBox criterion of SSD heads: assigner -> targets -> (mined) classification + box losses.

Same design as `detector.criteria.yolov8.YOLOv8Criterion` (any assigner, any classification loss, any box loss
from the loss zoo), for heads that predict C + 1 class logits (background at index 0) and 4 offsets against
prior boxes (`detector.models.heads.ssd.SSDHeadOutput`). What happens is read from the losses' declarations
(`detector.losses.base`):

Classification, by the loss's `activation`:
  softmax (`loss/cls=ce`, SSD): cross-entropy over the C + 1 logits with target class (matched class + 1) for
      positives and 0 (background) for negatives, label smoothing as configured in the loss. Positive anchors
      are weighted 1 (an assigner's soft scores are not used).
  sigmoid (bce, focal, qfl, vfl; RetinaNet / YOLOv8 style): the loss on the C foreground logits (the background
      logit is unused) against the assigner's scores (one-hot for the SSD matcher, TAL's soft quality targets
      for TAL), summed over the classes.
Selection: `sampler` (e.g. `detector.criteria.hard_negative_mining.HardNegativeMiner`, 3:1) picks the anchors whose
classification loss counts; None counts every anchor (the choice for focal loss).
Box, by the loss's `input`: a coordinate loss (smooth L1, L1, ...) compares encoded offsets
(`detector.models.coders.encode_boxes`, the head's variances); a box loss (the IoU family) compares the decoded
boxes in pixels.

With N = max(number of positives, 1) in the whole batch (softmax), or N = max(sum of the target scores, 1)
(sigmoid; equal to the number of positives for one-hot targets) and w the positive's weight (1, or its summed
target score in sigmoid mode):
    cls = sum_{selected anchors} cls_loss / N,   box = sum_{positives} w * box_loss / N
    total = cls_gain * cls + box_gain * box          (SSD: cls_gain 1, box_gain = alpha = 1)

Every assigner gets the predicted class probabilities of the C classes under the loss's activation, the decoded
boxes and the head's priors (with its default boxes), all in pixels.

In training mode (and with `statistics=True`) each call also returns the sums of its assignment statistics
(`CriterionOutput.assignment_stats`), as `YOLOv8Criterion` does.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from detector.assigners.base import Assigner
from detector.criteria.base import Criterion, CriterionOutput
from detector.losses.base import BoxLoss, ClassificationLoss, image_size_argument
from detector.models.coders import encode_boxes
from detector.models.heads.ssd import SSDHeadOutput


class MultiBoxCriterion(Criterion):
    head_output: ClassVar[type] = SSDHeadOutput
    takes_dfl: ClassVar[bool] = False

    def __init__(
        self, assigner: Assigner, cls_loss: ClassificationLoss, box_loss: BoxLoss, sampler: nn.Module | None = None,
        box_gain: float = 1.0, cls_gain: float = 1.0, statistics: bool = True,
    ) -> None:
        """`statistics`: return the assignment statistics of training calls."""
        super().__init__(assigner, cls_loss, box_loss, statistics)
        self.sampler = sampler
        self.gains = {"box": box_gain, "cls": cls_gain}

    def forward(self, output: SSDHeadOutput, gt_labels: torch.Tensor, gt_boxes: torch.Tensor, gt_mask: torch.Tensor,
                image_size: tuple[int, int] | None = None) -> CriterionOutput:
        """gt_* padded per image: labels (B, M), boxes (B, M, 4) xyxy input pixels, mask (B, M); image_size: the
        input's (height, width) in pixels, required by a box loss that `needs_image_size` (MPDIoU).
        The losses are the weighted components 'box', 'cls' and their sum 'loss'."""
        priors = output.priors.boxes
        deltas, logits = output.box_deltas.float(), output.cls_logits.float()
        pred_boxes = output.decode_boxes()  # (B, A, 4) pixels
        assignment = self.assign(output, gt_labels, gt_boxes, gt_mask, pred_boxes)
        stats = self.statistics_of(assignment, gt_boxes, gt_mask, output, pred_boxes)
        fg = assignment.foreground
        if self.activation == "softmax":
            targets = torch.where(fg, assignment.labels + 1, 0)
            per_anchor = self.cls_loss(logits.flatten(0, 1), targets.flatten()).view(fg.shape)
            normaliser = fg.sum().clamp(min=1).to(logits.dtype)
            weight = torch.ones_like(fg, dtype=logits.dtype)[fg]
        else:
            target_scores = assignment.scores.to(logits.dtype)
            per_anchor = self.cls_loss(logits[..., 1:], target_scores).sum(-1)
            normaliser = target_scores.sum().clamp(min=1)
            weight = target_scores.sum(-1)[fg]
        selected = self.sampler(per_anchor.detach(), fg) if self.sampler is not None else None
        cls = (per_anchor if selected is None else per_anchor * selected).sum() / normaliser

        if self.box_loss.input == "coordinates":
            target = encode_boxes(assignment.boxes[fg], priors.expand_as(pred_boxes)[fg], output.variances)
            box_losses = self.box_loss(deltas[fg], target)
        else:
            image = image_size_argument(self.box_loss, image_size, pred_boxes.new_ones(1, 1))  # pixels, like the boxes
            box_losses = self.box_loss(pred_boxes[fg], assignment.boxes[fg].float(), *image)
        box = (box_losses * weight).sum() / normaliser
        losses = {"box": box * self.gains["box"], "cls": cls * self.gains["cls"]}
        losses["loss"] = losses["box"] + losses["cls"]
        return CriterionOutput(losses, stats)
