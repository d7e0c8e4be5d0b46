"""Priors: where predictions live. Anchor points (cell centres) for anchor-free heads.

Every head, assigner, coder and post-processing step takes its priors from here.
"""

from __future__ import annotations

import torch


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
