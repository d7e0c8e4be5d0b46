"""IoU family of box similarities and losses, element-wise on matched pairs of xyxy boxes.

All functions take `pred` and `target` of shape (..., 4), compute in float32 and return (...,).
Similarities (`iou`, `giou`, `diou`, `ciou`) lie in [-1, 1]; the losses are `1 - similarity`.
Widths/heights get `eps` added to the height and union/diagonal terms get `eps`, as in the
YOLOv8 reference, so zero-area and coincident boxes stay finite in value and gradient.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _pair_terms(pred: torch.Tensor, target: torch.Tensor, eps: float) -> dict[str, torch.Tensor]:
    """Intersection, union, IoU, and enclosing-box width/height of matched boxes."""
    pred, target = pred.float(), target.float()
    px1, py1, px2, py2 = pred.unbind(-1)
    tx1, ty1, tx2, ty2 = target.unbind(-1)
    pw, ph = px2 - px1, py2 - py1 + eps
    tw, th = tx2 - tx1, ty2 - ty1 + eps
    inter = (torch.minimum(px2, tx2) - torch.maximum(px1, tx1)).clamp(min=0) * (
        torch.minimum(py2, ty2) - torch.maximum(py1, ty1)
    ).clamp(min=0)
    union = pw * ph + tw * th - inter + eps
    enclose_w = torch.maximum(px2, tx2) - torch.minimum(px1, tx1)
    enclose_h = torch.maximum(py2, ty2) - torch.minimum(py1, ty1)
    centre_dist2 = ((tx1 + tx2 - px1 - px2) ** 2 + (ty1 + ty2 - py1 - py2) ** 2) / 4
    return dict(
        iou=inter / union, union=union, pw=pw, ph=ph, tw=tw, th=th,
        enclose_w=enclose_w, enclose_h=enclose_h, centre_dist2=centre_dist2,
    )


def iou(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """IoU = |A ∩ B| / |A ∪ B|."""
    return _pair_terms(pred, target, eps)["iou"]


def giou(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Generalized IoU (Rezatofighi et al., CVPR 2019): IoU - |C \\ (A ∪ B)| / |C|, C the enclosing box."""
    t = _pair_terms(pred, target, eps)
    enclose_area = t["enclose_w"] * t["enclose_h"] + eps
    return t["iou"] - (enclose_area - t["union"]) / enclose_area


def diou(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Distance IoU (Zheng et al., AAAI 2020): IoU - rho^2(b, b_gt) / c^2, c the enclosing box diagonal."""
    t = _pair_terms(pred, target, eps)
    return t["iou"] - t["centre_dist2"] / (t["enclose_w"] ** 2 + t["enclose_h"] ** 2 + eps)


def ciou(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Complete IoU (Zheng et al., AAAI 2020): IoU - rho^2 / c^2 - alpha * v, with
    v = 4 / pi^2 * (atan(w_gt / h_gt) - atan(w / h))^2 and alpha = v / (1 - IoU + v), alpha without gradient."""
    t = _pair_terms(pred, target, eps)
    v = (4 / math.pi**2) * (torch.atan(t["tw"] / t["th"]) - torch.atan(t["pw"] / t["ph"])) ** 2
    with torch.no_grad():
        alpha = v / (v - t["iou"] + (1 + eps))
    return t["iou"] - (t["centre_dist2"] / (t["enclose_w"] ** 2 + t["enclose_h"] ** 2 + eps) + alpha * v)


class IoULoss(nn.Module):
    """1 - IoU (UnitBox-style linear form). Returns the unreduced loss (...,)."""

    similarity = staticmethod(iou)

    def __init__(self, eps: float = 1e-7) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return 1.0 - self.similarity(pred, target, self.eps)


class GIoULoss(IoULoss):
    """1 - GIoU (Rezatofighi et al., CVPR 2019)."""

    similarity = staticmethod(giou)


class DIoULoss(IoULoss):
    """1 - DIoU (Zheng et al., AAAI 2020)."""

    similarity = staticmethod(diou)


class CIoULoss(IoULoss):
    """1 - CIoU (Zheng et al., AAAI 2020); the YOLOv8 default box loss."""

    similarity = staticmethod(ciou)
