"""Box coders: the mapping between boxes and what a head regresses.

DFL distance coding (GFL / YOLOv8): a box is the four distances (left, top, right, bottom)
from an anchor point to its sides; each distance is predicted as a discrete distribution
over bins 0..reg_max-1 and decoded as the distribution's expectation.
"""

from __future__ import annotations

import torch


def distances_to_boxes(points: torch.Tensor, distances: torch.Tensor) -> torch.Tensor:
    """(..., 2) points and (..., 4) ltrb distances -> (..., 4) xyxy boxes."""
    left_top, right_bottom = distances.chunk(2, dim=-1)
    return torch.cat((points - left_top, points + right_bottom), dim=-1)


def boxes_to_distances(points: torch.Tensor, boxes: torch.Tensor, max_distance: float | None = None) -> torch.Tensor:
    """(..., 2) points and (..., 4) xyxy boxes -> (..., 4) ltrb distances, optionally clamped to [0, max]."""
    distances = torch.cat((points - boxes[..., :2], boxes[..., 2:] - points), dim=-1)
    return distances if max_distance is None else distances.clamp(0, max_distance)


def dfl_expectation(bin_logits: torch.Tensor, reg_max: int) -> torch.Tensor:
    """(..., 4 * reg_max) logits -> (..., 4) expected distances sum_i i * softmax(logits)_i, in bins."""
    probabilities = bin_logits.unflatten(-1, (4, reg_max)).softmax(-1)
    bins = torch.arange(reg_max, device=bin_logits.device, dtype=probabilities.dtype)
    return probabilities @ bins


def decode_dfl(points: torch.Tensor, bin_logits: torch.Tensor, reg_max: int) -> torch.Tensor:
    """Anchor points (A, 2) and bin logits (B, A, 4 * reg_max) -> boxes (B, A, 4) xyxy, in the points' units."""
    return distances_to_boxes(points, dfl_expectation(bin_logits, reg_max))
