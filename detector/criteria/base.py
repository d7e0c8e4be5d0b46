"""The criterion contract: a head output and the padded ground truth in, the weighted losses and the assignment
statistics of that call out (`CriterionOutput`); a criterion keeps no state between calls.

`Criterion` holds what every criterion shares whatever its arithmetic: the assigner, the classification and box
losses, the assignment call (`assign`), the activation under which the assigner sees the class scores
(`activation`, the classification loss's), and the statistics of training calls (`statistics_of`).
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from detector.assigners.base import Assigner, AssignerInput, Assignment
from detector.assigners.statistics import assignment_statistics
from detector.losses.base import Activation, BoxLoss, ClassificationLoss


class CriterionOutput(NamedTuple):
    """losses: the weighted components and their sum 'loss'. assignment_stats: the sums of the (main branch's)
    assignment statistics of a training call (`detector.assigners.statistics.assignment_statistics`: detached,
    on the device, no host synchronisation), None in eval mode or with `statistics=False`."""

    losses: dict[str, torch.Tensor]
    assignment_stats: dict[str, torch.Tensor] | None = None


class Criterion(nn.Module):
    """Base class of the criteria: `forward(output, gt_labels, gt_boxes, gt_mask, image_size=None) ->
    CriterionOutput`. Two class attributes declare what a criterion trains (read by `detector.config`):
    `head_output`, the head-output type it takes, and `takes_dfl`, whether it has a DFL term."""

    head_output: ClassVar[type]
    takes_dfl: ClassVar[bool] = False

    def __init__(self, assigner: Assigner, cls_loss: ClassificationLoss, box_loss: BoxLoss, statistics: bool = True) -> None:
        """`statistics`: return the assignment statistics of training calls."""
        super().__init__()
        self.assigner, self.cls_loss, self.box_loss = assigner, cls_loss, box_loss
        self.statistics = statistics

    @property
    def activation(self) -> Activation:
        return self.cls_loss.activation

    @torch.no_grad()
    def assign(self, output: Any, gt_labels: torch.Tensor, gt_boxes: torch.Tensor, gt_mask: torch.Tensor,
               pred_boxes: torch.Tensor | None = None, assigner: Assigner | None = None) -> Assignment:
        """The assignment the loss of `output` uses, by `assigner` (default: the criterion's); `pred_boxes`: the
        decoded boxes when the caller has them (the diagnostics call it with the head output only)."""
        pred_boxes = output.decode_boxes() if pred_boxes is None else pred_boxes
        return (assigner or self.assigner)(AssignerInput(
            output.class_scores(self.activation).detach(), pred_boxes.detach(), output.priors,
            gt_labels, gt_boxes.float(), gt_mask,
        ))

    def statistics_of(self, assignment: Assignment, gt_boxes: torch.Tensor, gt_mask: torch.Tensor, output: Any,
                      pred_boxes: torch.Tensor, positives: tuple[torch.Tensor, torch.Tensor] | None = None,
                      ) -> dict[str, torch.Tensor] | None:
        """The assignment statistics of a training call with `statistics` on, else None (nothing computed)."""
        if not (self.statistics and self.training):
            return None
        return assignment_statistics(assignment, gt_boxes, gt_mask, output.priors, pred_boxes, positives=positives)

    def forward(self, output: Any, gt_labels: torch.Tensor, gt_boxes: torch.Tensor, gt_mask: torch.Tensor,
                image_size: tuple[int, int] | None = None) -> CriterionOutput:
        raise NotImplementedError
