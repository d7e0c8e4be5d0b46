"""Priors: where predictions live. Anchor points (cell centres) for anchor-free heads, default boxes and
anchors for anchor-based heads, and `Priors`, the one type in which every head hands them on.

Every head, assigner, coder and post-processing step takes its priors from here.
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import torch


class Priors(NamedTuple):
    """The priors of a head output, in input pixels: what an assigner matches the ground truth against.

    points (A, 2) prior centres (x, y); strides (A, 1) the stride (centre spacing) of each prior's level;
    boxes (A, 4) xyxy prior boxes of anchor-based heads, None for anchor-free heads (assigners that need boxes
    then build them from points and strides, e.g. `square_priors`); level_sizes: the number of priors of each
    level, in order (sum = A)."""

    points: torch.Tensor
    strides: torch.Tensor
    boxes: torch.Tensor | None
    level_sizes: tuple[int, ...]

    def level_starts(self) -> list[int]:
        """The index of the first prior of each level."""
        return [0, *itertools.accumulate(self.level_sizes[:-1])]

    def level_strides(self) -> list[float]:
        """The stride of each level, in level order."""
        return self.strides[self.level_starts(), 0].tolist()


def anchor_points(
    feature_sizes: list[tuple[int, int]], strides: tuple[int, ...], offset: float = 0.5,
    device: torch.device | None = None, dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell-centre points of every level, flattened level by level, row-major (y outer, x inner).

    Returns points (A, 2) as (x, y) in grid units of their own level (x = col + offset) and the
    stride of each point (A, 1); points in pixels are `points * strides`.
    """
    points, point_strides = [], []
    for (height, width), stride in zip(feature_sizes, strides):
        ys = torch.arange(height, device=device, dtype=dtype) + offset
        xs = torch.arange(width, device=device, dtype=dtype) + offset
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack((grid_x, grid_y), -1).reshape(-1, 2))
        point_strides.append(torch.full((height * width, 1), float(stride), device=device, dtype=dtype))
    return torch.cat(points), torch.cat(point_strides)


# ----------------------------------------------------------------------------------------------------
# Anchor boxes (anchor-based heads: SSD default boxes, multi-scale anchors)
# ----------------------------------------------------------------------------------------------------


def ssd_scales(
    num_levels: int, min_scale: float = 0.2, max_scale: float = 0.9, first_scale: float | None = 0.1,
) -> list[float]:
    """Box scales (fractions of the image side) of SSD's default boxes, num_levels + 1 values.

    Liu et al., "SSD: Single Shot MultiBox Detector" (ECCV 2016), eq. 4: for the m levels
        s_k = s_min + (s_max - s_min) (k - 1) / (m - 1),   k = 1..m.
    SSD300 convention (`first_scale` not None): the first level (conv4_3) gets its own smaller scale
    (0.1 for VOC, 0.07 for COCO) and s_min..s_max are spread over the m - 1 other levels.
    The extra value s_{m+1} (used for the extra box sqrt(s_m s_{m+1}) of the last level) continues the
    progression by one step, as the reference Caffe implementation does (e.g. 0.87 + 0.18 = 1.05 for COCO).
    """
    if num_levels < 1:
        raise ValueError("need at least one level")
    head = [] if first_scale is None else [first_scale]
    spread = num_levels - len(head)  # levels that share min_scale..max_scale
    if spread == 0:  # a single level with its own first_scale: its extra box reaches min_scale
        return [*head, min_scale]
    if spread == 1:
        return [*head, min_scale, max_scale]
    step = (max_scale - min_scale) / (spread - 1)
    return [*head, *(min_scale + step * k for k in range(spread)), max_scale + step]


def _box_shapes(scale: float, next_scale: float, aspect_ratios: tuple[float, ...]) -> list[tuple[float, float]]:
    """(w, h) of the default boxes at one location, in the reference order: ratio 1 at s_k, ratio 1 at
    sqrt(s_k s_{k+1}), then for each ratio r > 1 listed: (s sqrt(r), s / sqrt(r)) and (s / sqrt(r), s sqrt(r))."""
    shapes = [(scale, scale)]
    extra = math.sqrt(scale * next_scale)
    shapes.append((extra, extra))
    for ratio in aspect_ratios:
        root = math.sqrt(ratio)
        shapes.extend([(scale * root, scale / root), (scale / root, scale * root)])
    return shapes


def default_boxes(
    feature_sizes: list[tuple[int, int]], image_size: tuple[int, int],
    aspect_ratios: list[tuple[float, ...]] | tuple[tuple[float, ...], ...],
    scales: list[float] | None = None, min_scale: float = 0.2, max_scale: float = 0.9,
    first_scale: float | None = 0.1, steps: list[float] | None = None, clip: bool = True,
    device: torch.device | None = None, dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """SSD default boxes of every level, xyxy in input pixels, shape (A, 4).

    feature_sizes: (h, w) of each level; image_size: (height, width) of the input.
    aspect_ratios: per level, the ratios r > 1 (w / h) besides 1; each r adds r and 1/r, so (2,) gives
        {1, 2, 1/2} (4 boxes per location with the extra box) and (2, 3) gives {1, 2, 3, 1/2, 1/3} (6 boxes).
    scales: num_levels + 1 box scales as fractions of the image side (the last one only serves the extra box
        of the last level); default `ssd_scales(num_levels, min_scale, max_scale, first_scale)`.
    steps: per level, the pixel distance between box centres (SSD300: 8, 16, 32, 64, 100, 300): centres at
        (i + 0.5) * step / image side. Without steps: (i + 0.5) / f_k (f_k the feature size).
    clip: clamp each box's width and height to [0, 1] of the image side (torchvision's clip: boxes larger than
        the image are capped at the image size, centres are kept).
    Order: level by level, row-major over locations (y outer, x inner), the boxes of one location innermost
    in the `_box_shapes` order, i.e. the order of a head output permuted to (B, H, W, boxes, ...).
    """
    num_levels = len(feature_sizes)
    if len(aspect_ratios) != num_levels:
        raise ValueError(f"{len(aspect_ratios)} aspect-ratio lists for {num_levels} feature levels")
    scales = list(scales) if scales is not None else ssd_scales(num_levels, min_scale, max_scale, first_scale)
    if len(scales) != num_levels + 1:
        raise ValueError(f"need num_levels + 1 = {num_levels + 1} scales (the last one for the extra box), got {len(scales)}")
    height, width = image_size
    boxes = []
    for level, (fh, fw) in enumerate(feature_sizes):
        if steps is not None:
            cy = (torch.arange(fh, device=device, dtype=torch.float64) + 0.5) * steps[level] / height
            cx = (torch.arange(fw, device=device, dtype=torch.float64) + 0.5) * steps[level] / width
        else:
            cy = (torch.arange(fh, device=device, dtype=torch.float64) + 0.5) / fh
            cx = (torch.arange(fw, device=device, dtype=torch.float64) + 0.5) / fw
        grid_y, grid_x = torch.meshgrid(cy, cx, indexing="ij")
        centres = torch.stack((grid_x, grid_y), -1).reshape(-1, 1, 2)  # (HW, 1, 2)
        shapes = torch.tensor(_box_shapes(scales[level], scales[level + 1], tuple(aspect_ratios[level])),
                              device=device, dtype=torch.float64)  # (n, 2)
        cxcywh = torch.cat((centres.expand(-1, len(shapes), -1), shapes.expand(len(centres), -1, -1)), -1)
        boxes.append(cxcywh.reshape(-1, 4))
    boxes = torch.cat(boxes)
    if clip:
        boxes = torch.cat((boxes[:, :2], boxes[:, 2:].clamp(0, 1)), -1)
    size = torch.tensor([width, height, width, height], device=device, dtype=torch.float64)
    xyxy = torch.cat((boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2), -1) * size
    return xyxy.to(dtype)


# SSD300 as in the reference implementations (Caffe SSD, ssd.pytorch, torchvision's ssd300_vgg16):
# min sizes 21, 45, 99, 153, 207, 261 and max sizes 45, 99, 153, 207, 261, 315 on 300 px.
SSD300_FEATURE_SIZES = ((38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1))
SSD300_STEPS = (8, 16, 32, 64, 100, 300)
SSD300_SCALES = (0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05)
SSD300_ASPECT_RATIOS = ((2,), (2, 3), (2, 3), (2, 3), (2,), (2,))


def ssd300_default_boxes(device: torch.device | None = None, clip: bool = True) -> torch.Tensor:
    """The 8732 default boxes of SSD300, xyxy pixels on the 300 x 300 input."""
    return default_boxes(list(SSD300_FEATURE_SIZES), (300, 300), SSD300_ASPECT_RATIOS, scales=list(SSD300_SCALES),
                         steps=list(SSD300_STEPS), clip=clip, device=device)


def multiscale_anchors(
    feature_sizes: list[tuple[int, int]], strides: tuple[int, ...],
    sizes: list[tuple[float, ...]] | tuple[tuple[float, ...], ...],
    aspect_ratios: list[tuple[float, ...]] | tuple[tuple[float, ...], ...], offset: float = 0.5,
    device: torch.device | None = None, dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The classic anchor generator (Faster R-CNN / RetinaNet): on each level, every (size, ratio) pair,
    centred at (i + offset) * stride. Size s and ratio r = w / h give w = s sqrt(r), h = s / sqrt(r)
    (area s^2). Returns xyxy pixels (A, 4): level by level, row-major over locations, then ratio-major,
    size-minor at one location (torchvision's AnchorGenerator order; note its ratio is h / w and it
    rounds the base anchors to integers, this one does not round).
    RetinaNet: sizes ((32, 40.3, 50.8), (64, ...), ...) (3 octave scales of 4 * stride), ratios (0.5, 1, 2)."""
    if not len(feature_sizes) == len(strides) == len(sizes) == len(aspect_ratios):
        raise ValueError("feature_sizes, strides, sizes and aspect_ratios need one entry per level")
    anchors = []
    for (fh, fw), stride, level_sizes, level_ratios in zip(feature_sizes, strides, sizes, aspect_ratios):
        ratios = torch.tensor(level_ratios, device=device, dtype=torch.float64).sqrt()
        scales = torch.tensor(level_sizes, device=device, dtype=torch.float64)
        ws = (ratios[:, None] * scales[None, :]).reshape(-1)
        hs = (scales[None, :] / ratios[:, None]).reshape(-1)
        base = torch.stack((-ws, -hs, ws, hs), -1) / 2  # (n, 4)
        ys = (torch.arange(fh, device=device, dtype=torch.float64) + offset) * stride
        xs = (torch.arange(fw, device=device, dtype=torch.float64) + offset) * stride
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        centres = torch.stack((grid_x, grid_y, grid_x, grid_y), -1).reshape(-1, 1, 4)
        anchors.append((centres + base).reshape(-1, 4))
    return torch.cat(anchors).to(dtype)


def box_centres(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) xyxy -> (..., 2) centres (x, y)."""
    return (boxes[..., :2] + boxes[..., 2:]) / 2


def square_priors(points: torch.Tensor, strides: torch.Tensor, scale: float = 4.0) -> torch.Tensor:
    """Square prior boxes of side `scale * stride` centred on anchor points, xyxy in the points' units
    ((A, 2) points and (A, 1) strides in pixels -> (A, 4) pixels). Lets prior-box matchers (SSD) work on
    anchor-free heads; 4 * stride is RetinaNet's base anchor size."""
    half = strides * scale / 2
    return torch.cat((points - half, points + half), -1)
