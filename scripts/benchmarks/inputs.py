"""Synthetic inputs shared by the sections: the YOLOv8 head's anchor grid and random ground truth."""

from __future__ import annotations

import torch

from detector.models.priors import Priors, anchor_points

NUM_CLASSES = 80


def head_grid(size: int) -> Priors:
    """The priors (anchor points in pixels, strides) of the YOLOv8-style head on a `size` x `size` input."""
    strides = (8, 16, 32)
    sizes = [(size // s, size // s) for s in strides]
    points, point_strides = anchor_points(sizes, strides)
    return Priors(points * point_strides, point_strides, None, tuple(h * w for h, w in sizes))


def random_gt(batch: int, num_gt: int, size: int, num_classes: int, generator: torch.Generator):
    xy = torch.rand(batch, num_gt, 2, generator=generator) * size * 0.85
    wh = 8 + torch.rand(batch, num_gt, 2, generator=generator) * size * 0.15
    boxes = torch.cat([xy, (xy + wh).clamp(max=size)], -1)
    labels = torch.randint(0, num_classes, (batch, num_gt), generator=generator)
    return labels, boxes, torch.ones(batch, num_gt, dtype=torch.bool)
