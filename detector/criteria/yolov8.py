"""The YOLOv8 criterion for the DFL head: assigner -> targets -> classification + box (+ DFL) losses.

With T the assigned soft class targets and tss = max(sum T, 1) over the whole batch:
    cls = sum_{anchors, classes} cls_loss(logits, T) / tss
    box = sum_{positives} box_loss(pred, gt) * w / tss,  w = sum_c T(anchor, c)
    dfl = sum_{positives} DFL(bins, gt distances) * w / tss
    total = gain_box * box + gain_cls * cls + gain_dfl * dfl
This is YOLOv8's definition, except that the total is *not* multiplied by the batch size: it is a
per-batch quantity whose scale does not depend on the batch size (see docs/losses.md, "Loss scaling").
Box losses see boxes in grid units (pixels / stride); the assigner works in pixels.

DFL-free heads (reg_max = 1, YOLO26): there are no bins, so there is no DFL; the distance loss is then
`DistanceL1Loss` (`loss/dfl=l1`, a DFL loss is refused with that choice named):
    l1 = sum_{positives} mean_sides |d_pred - d_gt| * w / tss      (ltrb distances in grid units, i.e. / stride)
weighted by the DFL gain and reported as 'l1' instead of 'dfl' (ultralytics 8.4 normalises these distances by
the image size instead; the issue that specified this term asked for strides, which keeps it in the units of DFL).

End-to-end heads (`model.end2end=true`, YOLOv10): the output's one-to-one branch gets the same losses with its own
assigner (`one2one_assigner`, TAL with top-k 1), and
    total = w_o2m(e) * total_one2many + w_o2o(e) * total_one2one
each weight linear from its first to its last value over the epochs e (constant 1, 1 by default as YOLOv10;
YOLO26's progressive schedule is o2m 0.8 -> 0.1, o2o 0.2 -> 0.9). The components are the weighted sums of the two
branches; 'one2one' reports the one-to-one branch's own total (already inside 'loss').

In training mode (and with `statistics=True`) each call also returns the sums of the main branch's assignment
statistics (`CriterionOutput.assignment_stats`: positives per GT, per level, their IoU and soft targets), which
`LitDetector` adds up per epoch.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from detector.assigners.base import Assigner
from detector.criteria.base import Criterion, CriterionOutput
from detector.losses.base import BoxLoss, ClassificationLoss, DistanceLoss, image_size_argument
from detector.losses.dfl import distance_loss_mismatch
from detector.models.coders import boxes_to_distances
from detector.models.heads.dfl import DFLHeadOutput
from detector.schedules import EpochScheduled, linear_schedule


class YOLOv8Criterion(Criterion, EpochScheduled):
    head_output: ClassVar[type] = DFLHeadOutput
    takes_dfl: ClassVar[bool] = True

    def __init__(
        self, assigner: Assigner, cls_loss: ClassificationLoss, box_loss: BoxLoss, dfl_loss: DistanceLoss | None,
        box_gain: float = 7.5, cls_gain: float = 0.5, dfl_gain: float = 1.5, one2one_assigner: Assigner | None = None,
        one2many_weight: tuple[float, float] = (1.0, 1.0), one2one_weight: tuple[float, float] = (1.0, 1.0),
        statistics: bool = True,
    ) -> None:
        """`one2one_assigner` trains the one-to-one branch of end-to-end heads; the branch weights are
        (first epoch, last epoch) pairs. `statistics`: return the assignment statistics of training calls."""
        super().__init__(assigner, cls_loss, box_loss, statistics)
        self.dfl_loss = dfl_loss
        self.one2one_assigner = one2one_assigner
        self.gains = {"box": box_gain, "cls": cls_gain, "dfl": dfl_gain}
        self.weight_schedules = {"one2many": tuple(one2many_weight), "one2one": tuple(one2one_weight)}
        self.branch_weights = {name: float(start) for name, (start, _) in self.weight_schedules.items()}

    def set_epoch(self, epoch: int, max_epochs: int) -> None:
        self.branch_weights = {name: linear_schedule(start, end, epoch, max_epochs)
                               for name, (start, end) in self.weight_schedules.items()}

    def forward(self, output: DFLHeadOutput, gt_labels: torch.Tensor, gt_boxes: torch.Tensor, gt_mask: torch.Tensor,
                image_size: tuple[int, int] | None = None) -> CriterionOutput:
        """gt_* are padded per image: labels (B, M), boxes (B, M, 4) xyxy in input pixels, mask (B, M); image_size:
        the input's (height, width) in pixels, required by a box loss that `needs_image_size` (MPDIoU).
        The losses are the weighted components 'box', 'cls', 'dfl' (or 'l1' for a DFL-free head) and their sum
        'loss' (+ 'one2one' for an end-to-end head); the statistics are the main branch's."""
        main = self.branch_losses(output, self.assigner, gt_labels, gt_boxes, gt_mask, image_size, statistics=True)
        if output.one2one is None:
            return main
        if self.one2one_assigner is None:
            raise ValueError("the head has a one-to-one branch (model.end2end=true) but the criterion has no one2one_assigner")
        one2one = self.branch_losses(output.one2one, self.one2one_assigner, gt_labels, gt_boxes, gt_mask, image_size).losses
        many, one = self.branch_weights["one2many"], self.branch_weights["one2one"]
        combined = {name: many * value + one * one2one[name] for name, value in main.losses.items()}
        combined["one2one"] = one2one["loss"].detach()
        return CriterionOutput(combined, main.assignment_stats)

    def branch_losses(self, output: DFLHeadOutput, assigner: Assigner, gt_labels: torch.Tensor, gt_boxes: torch.Tensor,
                      gt_mask: torch.Tensor, image_size: tuple[int, int] | None = None,
                      statistics: bool = False) -> CriterionOutput:
        """The losses of one head branch with its assignment by `assigner`; `statistics`: with the statistics of
        that assignment (training calls of a criterion whose `statistics` is on)."""
        strides = output.priors.strides
        box_logits, cls_logits = output.box_logits.float(), output.cls_logits.float()
        pred_pixels = output.decode_boxes()
        assignment = self.assign(output, gt_labels, gt_boxes, gt_mask, pred_pixels, assigner)
        target_scores = assignment.scores
        total_score = target_scores.sum().clamp(min=1)
        losses = {"cls": self.cls_loss(cls_logits, target_scores).sum() / total_score}

        fg = assignment.foreground.nonzero(as_tuple=True)  # (image, anchor) of the positives: one synchronisation
        stats = self.statistics_of(assignment, gt_boxes, gt_mask, output, pred_pixels, fg) if statistics else None
        weight = target_scores.sum(-1)[fg]
        pred_boxes = pred_pixels / strides  # grid units
        target_boxes = (assignment.boxes / strides)[fg]
        image = image_size_argument(self.box_loss, image_size, strides[fg[1]])  # in grid units, like the boxes
        losses["box"] = (self.box_loss(pred_boxes[fg], target_boxes, *image) * weight).sum() / total_score
        distance_term = "dfl" if output.reg_max > 1 else "l1"
        if self.dfl_loss is None:
            losses[distance_term] = box_logits.new_zeros(())
        else:
            mismatch = distance_loss_mismatch(type(self.dfl_loss), output.reg_max)
            if mismatch:
                raise ValueError(f"{mismatch}: choose loss/dfl={'dfl' if output.reg_max > 1 else 'l1'} or loss/dfl=none")
            target_distances = boxes_to_distances((output.priors.points / strides)[fg[1]], target_boxes)
            per_box = self.dfl_loss(box_logits[fg], target_distances)
            losses[distance_term] = (per_box * weight).sum() / total_score
        losses = {name: value * self.gains["dfl" if name == "l1" else name] for name, value in losses.items()}
        losses["loss"] = losses["box"] + losses["cls"] + losses[distance_term]
        return CriterionOutput(losses, stats)
