"""Decoupled detection head with distribution (DFL) box regression (YOLOv8 head), and its output type."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from detector.models.blocks import Conv
from detector.models.coders import decode_dfl
from detector.models.priors import Priors


class DFLHeadOutput(NamedTuple):
    """Raw output of the DFL head for one batch: box_logits (B, A, 4 * reg_max) bin logits of the ltrb distances
    in grid units (pixels / stride) (reg_max = 1: the distances themselves), cls_logits (B, A, C) one independent
    sigmoid per class (no background), priors: the anchor points (no prior boxes). one2one: the output of the
    one-to-one branch of an end-to-end model (`model.end2end=true`), same layout; None otherwise.

    `decode_boxes` is the one decoding of this head: the criterion, the post-processing and the export use it."""

    box_logits: torch.Tensor
    cls_logits: torch.Tensor
    priors: Priors
    one2one: DFLHeadOutput | None = None

    # how the class logits can become probabilities: C independent sigmoids (a softmax needs a background logit)
    activations = ("sigmoid",)

    @property
    def reg_max(self) -> int:
        return self.box_logits.shape[-1] // 4

    def decode_boxes(self) -> torch.Tensor:
        """(B, A, 4) xyxy boxes in input pixels: the expected distances of the bins, from the anchor points."""
        strides = self.priors.strides
        return decode_dfl(self.priors.points / strides, self.box_logits.float(), self.reg_max) * strides

    def class_scores(self, activation: str = "sigmoid") -> torch.Tensor:
        """(B, A, C) class probabilities."""
        check_activation(self, activation)
        return self.cls_logits.float().sigmoid()


def check_activation(output: NamedTuple, activation: str) -> None:
    """ValueError unless the head output type supports this activation of its class logits."""
    if activation not in output.activations:
        raise ValueError(f"{type(output).__name__} class logits take {' or '.join(output.activations)}, not {activation!r}")


class DFLHead(nn.Module):
    """Per level: a box branch predicting `reg_max` bins for each of the 4 box sides (reg_max = 1: the 4 distances
    directly, no bins) and a class branch.

    Returns box logits (B, A, 4 * reg_max) and class logits (B, A, num_classes), with A the
    anchor points of all levels flattened level by level, row-major inside a level.
    """

    def __init__(
        self, in_channels: tuple[int, ...], num_classes: int, strides: tuple[int, ...], reg_max: int = 16
    ) -> None:
        super().__init__()
        self.num_classes, self.reg_max, self.strides = num_classes, reg_max, tuple(strides)
        box_hidden = max(16, in_channels[0] // 4, 4 * reg_max)
        cls_hidden = max(in_channels[0], min(num_classes, 100))
        self.box_branches = nn.ModuleList(
            nn.Sequential(Conv(c, box_hidden, 3), Conv(box_hidden, box_hidden, 3), nn.Conv2d(box_hidden, 4 * reg_max, 1))
            for c in in_channels
        )
        self.cls_branches = nn.ModuleList(
            nn.Sequential(Conv(c, cls_hidden, 3), Conv(cls_hidden, cls_hidden, 3), nn.Conv2d(cls_hidden, num_classes, 1))
            for c in in_channels
        )
        self.reset_bias()

    def reset_bias(self, image_size: int = 640) -> None:
        """YOLOv8 prior: box logits bias 1; class bias log(5 / nc / (image_size / stride)^2),
        i.e. about 5 objects per image spread over the cells of a level."""
        for box, cls, stride in zip(self.box_branches, self.cls_branches, self.strides):
            nn.init.constant_(box[-1].bias, 1.0)
            nn.init.constant_(cls[-1].bias, math.log(5 / self.num_classes / (image_size / stride) ** 2))

    def forward(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        box_logits, cls_logits = [], []
        for x, box, cls in zip(features, self.box_branches, self.cls_branches):
            box_logits.append(box(x).flatten(2))
            cls_logits.append(cls(x).flatten(2))
        return torch.cat(box_logits, 2).transpose(1, 2), torch.cat(cls_logits, 2).transpose(1, 2)
