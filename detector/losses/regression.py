"""Coordinate regression losses: element-wise on 4-vectors, summed over the 4 coordinates.

`pred` and `target` are (..., 4): encoded offsets (SSD-style (dx, dy, dw, dh) against anchors) or decoded
boxes (YOLOv8-style xyxy in grid units). Every function computes in float32 and returns (...,) =
sum over the last dimension of the per-coordinate loss of d = pred - target, unreduced.
"""

from __future__ import annotations

import math

import torch

from detector.losses.base import CoordinateLoss


def _difference(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return pred.float() - target.float()


def l2_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L2 / squared error: L = sum_i d_i^2 over the 4 coordinates (no 1/2 factor). torch's MSELoss with mean
    reduction over the 4 coordinates of a box is L / 4."""
    return _difference(pred, target).pow(2).sum(-1)


def l1_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 / absolute error: L = sum_i |d_i|."""
    return _difference(pred, target).abs().sum(-1)


def smooth_l1_loss(pred: torch.Tensor, target: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Smooth L1 (Girshick, "Fast R-CNN", ICCV 2015; used by SSD, Liu et al. ECCV 2016):

        l(d) = 0.5 d^2 / beta      if |d| < beta
             = |d| - 0.5 beta      otherwise,          L = sum_i l(d_i)

    beta = 1.0 is Fast R-CNN's, SSD's and torch's default (and this module's); RetinaNet/Detectron use
    beta = 1/9 (~0.11) on their offsets. beta = 0 is plain L1. Same values as `torch.nn.functional.smooth_l1_loss`."""
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    d = _difference(pred, target).abs()
    if beta == 0:
        return d.sum(-1)
    return torch.where(d < beta, 0.5 * d**2 / beta, d - 0.5 * beta).sum(-1)


def balanced_l1_loss(
    pred: torch.Tensor, target: torch.Tensor, alpha: float = 0.5, gamma: float = 1.5, beta: float = 1.0,
) -> torch.Tensor:
    """Balanced L1 (Pang et al., "Libra R-CNN", CVPR 2019). The paper's loss, for beta = 1:

        l_b(x) = alpha / b (b |x| + 1) ln(b |x| + 1) - alpha |x|     if |x| < 1
               = gamma |x| + gamma / b - alpha                       otherwise,
        with alpha ln(b + 1) = gamma (continuity of the gradient at |x| = 1), i.e. b = exp(gamma / alpha) - 1,

    whose gradient is alpha ln(b |x| + 1) inside and gamma outside (inliers get larger gradients than smooth L1).
    The breakpoint is moved to beta by scaling, l(x) = beta * l_b(x / beta), which keeps the gradient
    alpha ln(b |x| / beta + 1) | gamma, continuous at |x| = beta. Paper defaults alpha 0.5, gamma 1.5, beta 1.

    Convention for beta != 1 (the paper only defines beta = 1): mmdetection's `balanced_l1_loss` scales only part of
    the formula, alpha / b (b |x| + 1) ln(b |x| / beta + 1) - alpha |x| inside and gamma |x| + gamma / b - alpha beta
    outside, so its gradient jumps at |x| = beta (by alpha ((b beta + 1) / (beta (b + 1)) - 1)); this function
    scales the whole curve and stays C1. Both agree for beta = 1."""
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    b = math.exp(gamma / alpha) - 1
    x = _difference(pred, target).abs() / beta
    inside = alpha / b * (b * x + 1) * torch.log1p(b * x) - alpha * x
    outside = gamma * x + gamma / b - alpha
    return (beta * torch.where(x < 1, inside, outside)).sum(-1)


class L2Loss(CoordinateLoss):
    """Squared error summed over the 4 coordinates. See `l2_loss`."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return l2_loss(pred, target)


class L1Loss(CoordinateLoss):
    """Absolute error summed over the 4 coordinates. See `l1_loss`."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return l1_loss(pred, target)


class SmoothL1Loss(CoordinateLoss):
    """Smooth L1 summed over the 4 coordinates, beta = 1.0 by default (Fast R-CNN / SSD). See `smooth_l1_loss`."""

    def __init__(self, beta: float = 1.0) -> None:
        super().__init__()
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        self.beta = beta

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return smooth_l1_loss(pred, target, self.beta)


class BalancedL1Loss(CoordinateLoss):
    """Balanced L1 (Libra R-CNN) summed over the 4 coordinates; alpha 0.5, gamma 1.5, beta 1. See `balanced_l1_loss`."""

    def __init__(self, alpha: float = 0.5, gamma: float = 1.5, beta: float = 1.0) -> None:
        super().__init__()
        if beta <= 0:
            raise ValueError(f"beta must be > 0, got {beta}")
        self.alpha, self.gamma, self.beta = alpha, gamma, beta

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return balanced_l1_loss(pred, target, self.alpha, self.gamma, self.beta)
