"""Box coders: the mapping between boxes and what a head regresses.

Centre-size coding (SSD): a box is its centre offset and log size ratio against a prior box, divided
by the variances (0.1, 0.2); `encode_boxes` / `decode_boxes` (end of this file).

DFL distance coding (GFL / YOLOv8): a box is the four distances (left, top, right, bottom)
from an anchor point to its sides; each distance is predicted as a discrete distribution
over bins 0..reg_max-1 and decoded as the distribution's expectation. With reg_max = 1 (YOLO26) there are
no bins: the head regresses the four distances directly.
"""

from __future__ import annotations

import math

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
    """Anchor points (A, 2) and bin logits (B, A, 4 * reg_max) -> boxes (B, A, 4) xyxy, in the points' units.
    reg_max = 1: the (B, A, 4) outputs are the distances themselves."""
    distances = bin_logits if reg_max == 1 else dfl_expectation(bin_logits, reg_max)
    return distances_to_boxes(points, distances)


# ----------------------------------------------------------------------------------------------------
# Centre-size coding against prior boxes (SSD / Faster R-CNN), with variances
# ----------------------------------------------------------------------------------------------------

# exp() of a decoded log-size is capped at 1000 / 16 (torchvision's bbox_xform_clip) so that an early,
# wild prediction cannot overflow; the coder is an exact inverse below that cap.
MAX_LOG_SCALE = math.log(1000.0 / 16)


def _centre_size(boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return (boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2]


def encode_boxes(boxes: torch.Tensor, priors: torch.Tensor, variances: tuple[float, float] = (0.1, 0.2)) -> torch.Tensor:
    """xyxy boxes and xyxy priors (broadcastable (..., 4), same units) -> offsets (..., 4):
        t_xy = (c_box - c_prior) / (v0 * wh_prior),   t_wh = log(wh_box / wh_prior) / v1
    (Liu et al., SSD, ECCV 2016, with the variances of the reference implementation)."""
    centre, size = _centre_size(boxes.float())
    prior_centre, prior_size = _centre_size(priors.float())
    return torch.cat(
        ((centre - prior_centre) / (variances[0] * prior_size), torch.log(size / prior_size) / variances[1]), -1
    )


def decode_boxes(offsets: torch.Tensor, priors: torch.Tensor, variances: tuple[float, float] = (0.1, 0.2)) -> torch.Tensor:
    """The inverse of `encode_boxes`: offsets (..., 4) and xyxy priors -> xyxy boxes in the priors' units."""
    offsets = offsets.float()
    prior_centre, prior_size = _centre_size(priors.float())
    centre = prior_centre + offsets[..., :2] * variances[0] * prior_size
    size = prior_size * torch.exp((offsets[..., 2:] * variances[1]).clamp(max=MAX_LOG_SCALE))
    return torch.cat((centre - size / 2, centre + size / 2), -1)
