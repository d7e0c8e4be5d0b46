"""Box geometry of matched pairs of xyxy boxes, shared by the assigners and the losses.

Element-wise on broadcastable (..., 4) boxes: the k-th box of one tensor against the k-th of the other. The
all-pairs (N x M) IoU is torchvision's `box_iou` (SSD matcher, NMS, diagnostics). Two flavours of one arithmetic:
  - `paired_box_iou`: the IoU as torchvision computes it (no eps, the input dtype), 0 where the union is not
    positive or not finite: the assigners' overlaps and the assignment statistics.
  - `pair_terms`: everything the IoU-family losses need, in float32, with YOLOv8's eps placement (`eps` added to
    both heights, to the union and to the enclosing diagonal) so that CIoU equals the published one numerically.
"""

from __future__ import annotations

import torch


def _intersection_union(box1: tuple[torch.Tensor, ...], box2: tuple[torch.Tensor, ...], eps: float = 0.0,
                        ) -> dict[str, torch.Tensor]:
    """Widths w1, w2, heights h1, h2 (+ eps), intersection `inter` and union (+ eps) of matched boxes given as their
    unbound coordinates (x1, y1, x2, y2): unbound once by the caller, so that the gradients of a box accumulate as
    one sum. eps = 0 gives torchvision's `box_iou` arithmetic, operation for operation."""
    x1, y1, x2, y2 = box1
    u1, v1, u2, v2 = box2
    w1, h1 = x2 - x1, y2 - y1 + eps
    w2, h2 = u2 - u1, v2 - v1 + eps
    inter = (torch.minimum(x2, u2) - torch.maximum(x1, u1)).clamp(min=0) * (
        torch.minimum(y2, v2) - torch.maximum(y1, v1)
    ).clamp(min=0)
    return dict(w1=w1, h1=h1, w2=w2, h2=h2, inter=inter, union=w1 * h1 + w2 * h2 - inter + eps)


def paired_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """IoU of matched pairs of xyxy boxes (broadcastable (..., 4)) -> (...), with the arithmetic of torchvision's
    `box_iou` (the same values bit for bit); 0 where the union is not positive (two zero-area boxes) or not finite."""
    t = _intersection_union(boxes1.unbind(-1), boxes2.unbind(-1))
    return torch.where(t["union"] > 0, t["inter"] / t["union"], torch.zeros_like(t["inter"]))


def pair_terms(pred: torch.Tensor, target: torch.Tensor, eps: float) -> dict[str, torch.Tensor]:
    """Everything the IoU family needs about matched boxes, in float32:

    iou, union, pw/ph/tw/th (widths, heights + eps), enclose_w/enclose_h (smallest enclosing box),
    dx/dy (target centre minus predicted centre), centre_dist2 = dx^2 + dy^2 (rho^2),
    enclose_diag2 = enclose_w^2 + enclose_h^2 + eps (c^2).
    """
    pred, target = pred.float(), target.float()
    px1, py1, px2, py2 = p = pred.unbind(-1)
    tx1, ty1, tx2, ty2 = q = target.unbind(-1)
    t = _intersection_union(p, q, eps)
    enclose_w = torch.maximum(px2, tx2) - torch.minimum(px1, tx1)
    enclose_h = torch.maximum(py2, ty2) - torch.minimum(py1, ty1)
    centre_dist2 = ((tx1 + tx2 - px1 - px2) ** 2 + (ty1 + ty2 - py1 - py2) ** 2) / 4
    return dict(
        iou=t["inter"] / t["union"], union=t["union"], pw=t["w1"], ph=t["h1"], tw=t["w2"], th=t["h2"],
        enclose_w=enclose_w, enclose_h=enclose_h, centre_dist2=centre_dist2,
        enclose_diag2=enclose_w**2 + enclose_h**2 + eps,
        dx=(tx1 + tx2 - px1 - px2) / 2, dy=(ty1 + ty2 - py1 - py2) / 2,
    )
