"""box_ops: IoULoss, GIoULoss, DIoULoss, CIoULoss forward + backward on --num-boxes random overlapping box pairs,
against torchvision.ops' generalized/distance/complete_box_iou_loss (reduction="none"), with the largest difference
of the losses and of the gradients; torchvision has no element-wise IoU loss, and pairwise IoU is not timed since
detector has none of its own (it calls torchvision.ops.box_iou)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial

import torch
from torchvision.ops import complete_box_iou_loss, distance_box_iou_loss, generalized_box_iou_loss

from detector.losses.iou import CIoULoss, DIoULoss, GIoULoss, IoULoss

from .harness import Case, timed
from .inputs import NUM_CLASSES, random_gt

NAME = "box_ops"
# our IoU-family losses and their torchvision.ops counterparts (None: torchvision has none), all unreduced
BOX_LOSSES: dict[str, tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], str | None]] = {
    "IoULoss": (IoULoss(), None),
    "GIoULoss": (GIoULoss(), "torchvision generalized_box_iou_loss"),
    "DIoULoss": (DIoULoss(), "torchvision distance_box_iou_loss"),
    "CIoULoss": (CIoULoss(), "torchvision complete_box_iou_loss"),
}

TORCHVISION_BOX_LOSSES = {
    "torchvision generalized_box_iou_loss": partial(generalized_box_iou_loss, reduction="none"),
    "torchvision distance_box_iou_loss": partial(distance_box_iou_loss, reduction="none"),
    "torchvision complete_box_iou_loss": partial(complete_box_iou_loss, reduction="none"),
}

NO_IOU_REFERENCE = "no reference: torchvision has no element-wise IoU loss (box_iou is pairwise)"

NO_PAIRWISE_IOU = ("not run: detector has no pairwise IoU of its own, it calls torchvision.ops.box_iou (detector.postprocess.nms, "
                   "assigners/ssd_matcher.py, evaluation/confusion.py)")



def random_box_pairs(num_boxes: int, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(pred, target) xyxy (num_boxes, 4): random GT-like targets and predictions jittered around them (each
    corner moved by N(0, 0.15) of the box's side), mostly overlapping as the positives of a training step."""
    _, target, _ = random_gt(1, num_boxes, size, NUM_CLASSES, generator)
    target = target[0]
    wh = (target[:, 2:] - target[:, :2]).repeat(1, 2)
    pred = target + torch.randn(num_boxes, 4, generator=generator) * 0.15 * wh
    pred = torch.cat([pred[:, :2], torch.maximum(pred[:, 2:], pred[:, :2] + 1)], -1)
    return pred, target


def box_loss_case(loss: str, num_boxes: int, repeats: int, warmup: int) -> dict:
    """Forward + backward (of the sum) of one unreduced box loss of BOX_LOSSES / TORCHVISION_BOX_LOSSES on
    `num_boxes` pairs at 640 px; outputs: the last losses and gradients w.r.t. the predictions."""
    fn = BOX_LOSSES[loss][0] if loss in BOX_LOSSES else TORCHVISION_BOX_LOSSES[loss]
    pred, target = random_box_pairs(num_boxes, 640, torch.Generator().manual_seed(0))
    pred.requires_grad_()
    last = {}

    def step():
        pred.grad = None
        last["losses"] = fn(pred, target)
        last["losses"].sum().backward()

    result = timed(step, repeats, warmup)
    result["outputs"] = {"losses": last["losses"].detach().numpy(), "gradients": pred.grad.numpy()}
    if loss in BOX_LOSSES and BOX_LOSSES[loss][1] is None:
        result["note"] = NO_IOU_REFERENCE
    return result



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--num-boxes", type=int, default=20000,
                        help="box pairs (box_ops; 20000 ~ the positives of a batch-16 criterion call with 125 GT per "
                             "image, TAL's top 10 anchors each)")


def cases(args: argparse.Namespace) -> list[Case]:
    return [
        *(Case(name, box_loss_case, dict(loss=name, num_boxes=args.num_boxes), reference)
          for name, (_, reference) in BOX_LOSSES.items()),
        *(Case(name, box_loss_case, dict(loss=name, num_boxes=args.num_boxes)) for name in TORCHVISION_BOX_LOSSES),
        Case("pairwise IoU", None, {}, skip=NO_PAIRWISE_IOU),
    ]
