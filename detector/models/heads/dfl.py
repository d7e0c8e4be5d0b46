"""Decoupled detection head with distribution (DFL) box regression (YOLOv8 head)."""

from __future__ import annotations

import math

import torch
from torch import nn

from detector.models.blocks import Conv


class DFLHead(nn.Module):
    """Per level: a box branch predicting `reg_max` bins for each of the 4 box sides and a class branch.

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
