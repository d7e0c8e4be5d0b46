"""criterion: YOLOv8 criterion forward + backward on random head outputs, batch --batch at the largest of --sizes,
80 classes, --num-gt GT per image: sparse TAL, against the dense reference (up to 200 GT).
--statistics-overhead: also the forward with and without the assignment statistics that the criterion records
while training (detector/assigners/statistics.py), alternated, and the statistics alone."""

from __future__ import annotations

import argparse
from functools import partial

import torch

from detector.assigners.base import AssignerInput
from detector.assigners.statistics import assignment_statistics
from detector.assigners.tal import TaskAlignedAssigner
from detector.assigners.tal_dense import DenseTaskAlignedAssigner
from detector.criteria.yolov8 import YOLOv8Criterion
from detector.losses.classification import BCEWithLogits
from detector.losses.dfl import DFLoss
from detector.losses.iou import CIoULoss
from detector.models.heads.dfl import DFLHeadOutput

from .harness import Case, max_rss_mib, timed, timed_alternately
from .inputs import NUM_CLASSES, head_grid, random_gt

NAME = "criterion"
DENSE_MAX_GT = 200  # the dense TAL reference is not run beyond this (memory: batch x GT x anchors x 4)


def criterion_case(num_gt: int, dense: bool, batch: int, size: int, repeats: int, warmup: int,
                   overhead: bool = False) -> dict:
    """Forward + backward of the whole YOLOv8 criterion on random head outputs (640 px: 8400 points), recording
    its assignment statistics as in training. `overhead`: also the forward alone with and without the statistics,
    alternated call by call (`forward_median_s`, `forward_off_median_s`: the same machine load for both), and
    `assignment_statistics` alone on the call's assignment (`statistics_median_s`)."""
    g = torch.Generator().manual_seed(0)
    priors = head_grid(size)
    box_logits = torch.randn(batch, len(priors.points), 64, generator=g).requires_grad_()
    cls_logits = (torch.randn(batch, len(priors.points), NUM_CLASSES, generator=g) - 4).requires_grad_()
    output = DFLHeadOutput(box_logits, cls_logits, priors)
    gt = random_gt(batch, num_gt, size, NUM_CLASSES, g)
    assigner = (DenseTaskAlignedAssigner if dense else TaskAlignedAssigner)(NUM_CLASSES)
    criterion = YOLOv8Criterion(assigner, BCEWithLogits(), CIoULoss(), DFLoss())
    losses = {}

    def step():
        box_logits.grad = cls_logits.grad = None
        out = criterion(output, *gt).losses
        out["loss"].backward()
        losses.update({k: float(v.detach()) for k, v in out.items()})

    baseline = max_rss_mib()
    result = timed(step, repeats, warmup)
    result["peak_extra_mib"] = max_rss_mib() - baseline
    result["losses"] = losses
    if overhead:
        def forward(statistics: bool) -> None:
            criterion.statistics = statistics
            criterion(output, *gt)

        on, off = timed_alternately([partial(forward, True), partial(forward, False)], repeats, warmup)
        result["forward_median_s"], result["forward_off_median_s"] = on["median_s"], off["median_s"]
        pred = output.decode_boxes().detach()
        assignment = assigner(AssignerInput(output.class_scores("sigmoid").detach(), pred, priors, *gt))
        gt_boxes, gt_mask, fg = gt[1], gt[2], assignment.foreground.nonzero(as_tuple=True)
        result["statistics_median_s"] = timed(  # as the criterion calls it
            lambda: assignment_statistics(assignment, gt_boxes, gt_mask, priors, pred, positives=fg), repeats, warmup
        )["median_s"]
    return result



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--statistics-overhead", action="store_true",
                        help="criterion: time the assignment statistics (alone, and the forward with them on and off)")


def cases(args: argparse.Namespace) -> list[Case]:
    overhead = {"overhead": True} if args.statistics_overhead else {}
    return [
        Case(f"{n} GT/img, {'dense reference' if dense else 'sparse'}", criterion_case,
             dict(num_gt=n, dense=dense, batch=args.batch, size=max(args.sizes), **overhead),
             None if dense or n > DENSE_MAX_GT else f"{n} GT/img, dense reference")
        for n in args.num_gt for dense in (False, True) if not (dense and n > DENSE_MAX_GT)
    ]
