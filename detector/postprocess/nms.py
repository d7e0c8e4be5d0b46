"""Non-maximum suppression variants: class-aware and class-agnostic (torchvision), and DIoU-NMS.

DIoU-NMS (Zheng et al., "Distance-IoU Loss", AAAI 2020): walking the boxes in decreasing score, box j is
suppressed by a kept box i when

    IoU(i, j) - rho^2(i, j) / c^2(i, j) > iou_threshold

with rho the distance between the two box centres and c the diagonal of the smallest box enclosing both.
Overlapping boxes whose centres are far apart (two adjacent objects) survive more often than with plain NMS.
"""

from __future__ import annotations

import torch
from torchvision.ops import batched_nms, box_iou
from torchvision.ops import nms as torchvision_nms

NMS_METHODS = ("class_aware", "class_agnostic", "diou", "diou_agnostic")


def diou_matrix(boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """Pairwise DIoU (N, M) = IoU - rho^2 / c^2 of xyxy boxes (N, 4) and (M, 4)."""
    iou = box_iou(boxes1, boxes2)
    centre1 = (boxes1[:, None, :2] + boxes1[:, None, 2:]) / 2
    centre2 = (boxes2[None, :, :2] + boxes2[None, :, 2:]) / 2
    rho2 = (centre1 - centre2).pow(2).sum(-1)
    enclose_wh = (torch.max(boxes1[:, None, 2:], boxes2[None, :, 2:])
                  - torch.min(boxes1[:, None, :2], boxes2[None, :, :2]))
    c2 = enclose_wh.pow(2).sum(-1) + eps
    return iou - rho2 / c2


def diou_nms(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor | None, iou_threshold: float,
             max_keep: int | None = None) -> torch.Tensor:
    """Greedy DIoU-NMS; class-aware when `labels` is given (only boxes of the same label suppress each other).

    Returns the indices of the kept boxes in decreasing score, like torchvision's `nms`. `max_keep` stops after
    that many boxes are kept (the result is the prefix of the full result, since greedy NMS keeps in score order).
    Each step compares the next kept box with all remaining ones at once (vectorised); the loop runs once per
    kept box, at most `max_keep` times.
    """
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = scores.argsort(descending=True, stable=True)
    boxes = boxes if boxes.is_floating_point() else boxes.float()
    remaining = order
    keep: list[torch.Tensor] = []
    limit = len(order) if max_keep is None else max_keep
    while remaining.numel() > 0 and len(keep) < limit:
        best, rest = remaining[0], remaining[1:]
        keep.append(best)
        if rest.numel() == 0:
            break
        suppress = diou_matrix(boxes[best].unsqueeze(0), boxes[rest])[0] > iou_threshold
        if labels is not None:
            suppress &= labels[rest] == labels[best]
        remaining = rest[~suppress]
    return torch.stack(keep)


def nms(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou_threshold: float,
        method: str = "class_aware", max_keep: int | None = None) -> torch.Tensor:
    """Indices of the boxes kept by `method`, in decreasing score:
    class_aware (torchvision batched_nms: boxes of different labels never suppress each other),
    class_agnostic (torchvision nms over all labels), diou (class-aware DIoU-NMS), diou_agnostic."""
    if method == "class_aware":
        keep = batched_nms(boxes, scores, labels, iou_threshold)
    elif method == "class_agnostic":
        keep = torchvision_nms(boxes, scores, iou_threshold)
    elif method == "diou":
        keep = diou_nms(boxes, scores, labels, iou_threshold, max_keep)
    elif method == "diou_agnostic":
        keep = diou_nms(boxes, scores, None, iou_threshold, max_keep)
    else:
        raise ValueError(f"unknown nms method {method!r}; choose one of {', '.join(NMS_METHODS)}")
    return keep if max_keep is None else keep[:max_keep]
