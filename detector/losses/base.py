"""What each kind of loss consumes, declared on its class: criteria, post-processing and the config check read
these declarations instead of looking at which loss they hold.

Classification losses: `forward(logits, targets)`, unreduced; `activation` says how the logits become
probabilities: "sigmoid" (C independent logits (..., C) against soft targets (..., C) in [0, 1]) or "softmax"
(C + 1 logits (N, C + 1) with the background at index 0, against integer labels (N,)).

Box losses: `forward(pred (N, 4), target (N, 4)) -> (N,)`; `input` says what the 4 numbers must be: "boxes"
(xyxy boxes: the IoU family) or "coordinates" (compared coordinate by coordinate, any 4-vector: the SSD
criterion gives them its encoded offsets, the dense criterion its boxes in grid units).
`needs_image_size` (MPDIoU): the loss is called `forward(pred, target, image_size)`, image_size (N, 2) the
(width, height) of the input image in the units of the boxes; the criteria pass it, a loss never guesses it.
`linear_in_iou`: the loss is 1 - IoU + a penalty, so the Inner-IoU and Focaler-IoU wrappers can replace its IoU.

Distance losses (the `loss/dfl` group, YOLOv8-style heads): `forward(box_logits (N, 4 * reg_max), target (N, 4))
-> (N,)`, the ltrb target distances in grid units; `needs_bins` says which heads they train: True (DFL) for heads
with distribution bins (reg_max > 1), False for heads that regress the distances directly (reg_max = 1).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from torch import nn

Activation = Literal["sigmoid", "softmax"]
BoxInput = Literal["boxes", "coordinates"]


class ClassificationLoss(nn.Module):
    activation: ClassVar[Activation] = "sigmoid"


class BoxLoss(nn.Module):
    input: ClassVar[BoxInput] = "boxes"
    needs_image_size: bool = False
    linear_in_iou: bool = False


class DistanceLoss(nn.Module):
    needs_bins: ClassVar[bool] = True


class CoordinateLoss(BoxLoss):
    input: ClassVar[BoxInput] = "coordinates"


def image_size_argument(box_loss: BoxLoss, image_size: tuple[int, int] | None, scale: torch.Tensor) -> tuple:
    """The extra positional argument of a box loss that `needs_image_size`, () for every other loss: the input
    image's (width, height) divided by `scale` ((N, 1) per pair: the stride when the boxes are in grid units, 1 for
    pixels). `image_size` is the (height, width) in pixels that the criterion's caller passed."""
    if not box_loss.needs_image_size:
        return ()
    if image_size is None:
        raise ValueError(f"{type(box_loss).__name__} needs the input image size: call the criterion with "
                         "image_size=(height, width) in pixels")
    height, width = image_size
    return (torch.tensor([float(width), float(height)], device=scale.device) / scale,)
