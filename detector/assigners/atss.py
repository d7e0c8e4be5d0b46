"""Adaptive Training Sample Selection (Zhang et al., "Bridging the Gap Between Anchor-based and Anchor-free
Detection via Adaptive Training Sample Selection", CVPR 2020, Algorithm 1).

Matching is geometric, on anchor boxes: the prior boxes of an anchor-based head (`priors.boxes`, e.g. SSD
default boxes), or for an anchor-free head a square of side `anchor_scale * stride` centred on each anchor point
(`square_priors`; 5 * stride as in the static ATSS warm-up assigner of PP-YOLOE and YOLOv6). For each real GT g
with centre c_g:
  1. candidates C_g: on each level l, the k_l = min(topk, |level l|) anchors whose centres p_a are nearest to c_g
     (L2 distance |p_a - c_g|), united over the levels (sum_l k_l anchors);
  2. u(a, g) = IoU(anchor box a, g) (torchvision `box_iou` semantics) for a in C_g, and the per-GT threshold
        t_g = mean_{a in C_g} u(a, g) + std_{a in C_g} u(a, g);
  3. positives of g: a in C_g with u(a, g) >= t_g and p_a strictly inside g
        (x_a - x1 > eps, y_a - y1 > eps, x2 - x_a > eps, y2 - y_a > eps);
  4. an anchor positive for several GTs goes to the GT with the largest u(a, g).
The anchor centres are the points of an anchor-free head and the box centres of prior boxes. The predictions
only enter the soft class targets (below), never the selection.

Conventions chosen:
  - std is the unbiased (n - 1) standard deviation, the torch default, as in mmdetection's and YOLOv6's
    implementations; with a single candidate (topk = 1 on one level) it is taken as 0. The mean and std are
    computed in float64 from the float32 IoUs, so the threshold does not depend on summation order and equal IoUs
    give std exactly 0 and a threshold exactly equal to them (all of them pass the IoU test).
  - inside margin `eps` = 1e-9 px (YOLOv6, and the same test as the task-aligned assigner's candidates);
    mmdetection uses 0.01 px. A zero-area GT contains no centre, so it never gets a positive.
  - ties in distance (frequent: several boxes per location, or a GT centre midway between anchor points): the
    lower anchor index is taken first; squared distances are compared (the same order as distances).
  - ties in IoU between GTs claiming one anchor: the lowest GT row wins.
  - k is per level, not multiplied by the number of prior boxes per location of SSD-style heads (mmdetection
    does the same): with 6 boxes per location, 9 candidates per level cover about 1.5 locations.
  - soft class targets of a positive: `soft_target="prediction_iou"` (default) gives IoU(decoded prediction, GT)
    at the GT's class (0 elsewhere), as PP-YOLOE and YOLOv6 do during their ATSS warm-up, so that the same
    quality-aware BCE / varifocal losses as with TAL apply; `soft_target="one_hot"` gives 1 at the GT's class.

What the returned `Assignment` holds: labels (B, A) class of the matched GT (0 for background), boxes (B, A, 4) the
matched GT box (GT row 0 for background, unused), scores (B, A, C) the soft class targets (0 for background),
foreground (B, A), gt_index (B, A) the matched row of the padded GT (0 for background).

Memory: everything is computed on the flattened real GT rows of the whole batch (the priors are shared by the
images). The only dense tensors are the (GT rows x level anchors) distances, processed in chunks of GT rows of at
most `chunk_elements` (rows x anchors) elements; IoUs and statistics are (GT rows x candidates), so 1000 GT on
8400 anchors need a few tens of MB and no (M, A, 4) tensor.
"""

from __future__ import annotations

import torch

from detector.assigners.base import Assigner, AssignerInput, Assignment, background_assignment, segment_max
from detector.boxes import paired_box_iou
from detector.models.priors import box_centres, square_priors

SOFT_TARGETS = ("prediction_iou", "one_hot")


class ATSSAssigner(Assigner):
    def __init__(
        self, num_classes: int, topk: int = 9, anchor_scale: float = 5.0, eps: float = 1e-9,
        soft_target: str = "prediction_iou", chunk_elements: int = 1 << 22,
    ) -> None:
        """topk: candidates per level and GT; anchor_scale: side of the square anchor of an anchor point, in
        strides (anchor-free heads only); eps: margin (pixels) of the centre-inside-GT test; soft_target:
        "prediction_iou" or "one_hot" (see the module docstring); chunk_elements: bounds the GT rows x anchors
        distance entries evaluated at once."""
        super().__init__(num_classes)
        if topk < 1:
            raise ValueError(f"topk must be >= 1, got {topk}")
        if anchor_scale <= 0:
            raise ValueError(f"anchor_scale must be > 0, got {anchor_scale}")
        if soft_target not in SOFT_TARGETS:
            raise ValueError(f"soft_target must be one of {SOFT_TARGETS}, got {soft_target!r}")
        if chunk_elements < 1:
            raise ValueError(f"chunk_elements must be >= 1, got {chunk_elements}")
        self.topk, self.anchor_scale, self.eps = int(topk), float(anchor_scale), eps
        self.soft_target, self.chunk_elements = soft_target, int(chunk_elements)

    def anchor_boxes(self, priors) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, 4) anchor boxes and (A, 2) anchor centres of the priors (square boxes for anchor points)."""
        if priors.boxes is not None:
            return priors.boxes, box_centres(priors.boxes)
        return square_priors(priors.points, priors.strides, self.anchor_scale), priors.points

    @torch.no_grad()
    def forward(self, inputs: AssignerInput) -> Assignment:
        pred_scores, pred_boxes, priors = inputs.pred_scores, inputs.pred_boxes, inputs.priors
        gt_labels, gt_boxes, gt_mask = inputs.gt_labels, inputs.gt_boxes, inputs.gt_mask
        batch, anchors = pred_boxes.shape[:2]
        num_gt = gt_boxes.shape[1]
        boxes, centres = self.anchor_boxes(priors)
        if len(boxes) != anchors or sum(priors.level_sizes) != anchors:
            raise ValueError(f"{anchors} predictions per image, {len(boxes)} priors, level sizes {priors.level_sizes}")
        rows = gt_mask.reshape(-1).nonzero().squeeze(1)  # flattened (image * M + GT) rows of the real GT
        if len(rows) == 0:
            return background_assignment(batch, anchors, self.num_classes, pred_boxes)
        real_boxes = gt_boxes.reshape(-1, 4)[rows].to(boxes.dtype)

        # positives of each GT row, in chunks of rows
        per_chunk = max(1, self.chunk_elements // anchors)
        found = [self._positives(real_boxes[first:first + per_chunk], boxes, centres, priors.level_sizes)
                 for first in range(0, len(rows), per_chunk)]
        row = torch.cat([r + first for (r, _, _), first in zip(found, range(0, len(rows), per_chunk))])
        a = torch.cat([anchor for _, anchor, _ in found])
        overlap = torch.cat([u for _, _, u in found])
        b, g = rows[row] // num_gt, rows[row] % num_gt

        # an anchor positive for several GTs goes to the GT it overlaps most (ties: lowest GT row)
        anchor_key = b * anchors + a
        best_overlap = segment_max(overlap, anchor_key, batch * anchors)[anchor_key]
        best_gt = torch.full((batch * anchors,), num_gt, dtype=torch.long, device=b.device)
        best_gt.scatter_reduce_(0, anchor_key, torch.where(overlap == best_overlap, g, num_gt), "amin")
        keep = (g == best_gt[anchor_key]).nonzero().squeeze(1)
        b, g, a = b[keep], g[keep], a[keep]

        foreground = torch.zeros(batch, anchors, dtype=torch.bool, device=b.device)
        foreground[b, a] = True
        gt_index = torch.zeros(batch, anchors, dtype=torch.long, device=b.device)
        gt_index[b, a] = g
        labels = gt_labels.long().gather(1, gt_index).clamp(min=0) * foreground
        target_boxes = gt_boxes.gather(1, gt_index.unsqueeze(-1).expand(-1, -1, 4))
        scores = torch.zeros(batch, anchors, self.num_classes, dtype=pred_scores.dtype, device=b.device)
        if self.soft_target == "one_hot":
            quality = torch.ones(len(b), dtype=scores.dtype, device=b.device)
        else:
            matched = gt_boxes[b, g].to(pred_boxes.dtype)
            quality = paired_box_iou(pred_boxes.detach()[b, a], matched).clamp(0, 1).to(scores.dtype)
        scores[b, a, labels[b, a]] = quality
        return Assignment(labels, target_boxes, scores, foreground, gt_index)

    def _positives(self, gt: torch.Tensor, boxes: torch.Tensor, centres: torch.Tensor, level_sizes: tuple[int, ...]):
        """For GT boxes (R, 4) and the anchors: (GT row in 0..R-1, anchor index, IoU) of every positive pair."""
        gt_centre = box_centres(gt)
        candidates, start = [], 0
        for size in level_sizes:
            k = min(self.topk, size)
            if k > 0:
                level = centres[start:start + size]
                distance = (gt_centre[:, None, 0] - level[None, :, 0]).square() + (
                    gt_centre[:, None, 1] - level[None, :, 1]).square()  # (R, size), squared
                # the k nearest, ties to the lower index: all anchors closer than the k-th distance, then the
                # first of those at exactly that distance until there are k
                kth = distance.kthvalue(k, dim=1, keepdim=True).values
                closer = distance < kth
                tied = distance == kth
                room = k - closer.sum(1, keepdim=True, dtype=torch.int32)
                chosen = closer | (tied & (tied.cumsum(1, dtype=torch.int32) <= room))
                # exactly k entries per row are True: top-k of the mask returns them (no host synchronisation)
                candidates.append(chosen.to(torch.uint8).topk(k, dim=1, sorted=False).indices + start)
            start += size
        candidate = torch.cat(candidates, 1)  # (R, K), K = sum_l min(topk, size_l)
        overlap = paired_box_iou(gt[:, None, :], boxes[candidate])  # (R, K)

        values = overlap.double()
        count = values.shape[1]
        mean = values.mean(1, keepdim=True)
        std = ((values - mean).square().sum(1, keepdim=True) / max(count - 1, 1)).sqrt()
        point = centres[candidate]  # (R, K, 2)
        x, y = point[..., 0], point[..., 1]
        inside = ((x - gt[:, None, 0] > self.eps) & (y - gt[:, None, 1] > self.eps)
                  & (gt[:, None, 2] - x > self.eps) & (gt[:, None, 3] - y > self.eps))
        row, column = ((values >= mean + std) & inside).nonzero(as_tuple=True)
        return row, candidate[row, column], overlap[row, column]
