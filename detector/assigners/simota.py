"""SimOTA assigner (Ge et al., "YOLOX: Exceeding YOLO Series in 2021", arXiv 2107.08430), in the formulation of
YOLOX 0.1-0.2 and mmdetection's SimOTAAssigner: a cheap approximation of OTA's optimal-transport assignment.

Per image, with p_a the predicted class probabilities of anchor a, x_a its point, s_a its stride, b_a its decoded
predicted box, and for each real GT g its box B_g, class y_g and centre c_g:

1. Geometry. a is *in box* of g when x_a lies strictly inside B_g; *in centre* of g when
   |x_a - c_g| < radius * s_a in x and in y (strict). The image's candidates are the anchors in box or in centre of
   at least one of its GTs; no other anchor is ever positive.
2. Cost of every (GT g, candidate a) pair, with IoU the pairwise IoU of B_g and b_a:
       C(g, a) = cls_weight * sum_c BCE(p_{a,c}, [c = y_g]) + iou_weight * -log(IoU(g, a) + 1e-8)
                 + 1e5 * [a is not (in box of g and in centre of g)].
   The class term is computed without a (pairs x C) tensor:
       sum_c BCE(p_c, [c = y]) = sum_c -log(1 - p_c) - log p_y + log(1 - p_y),
   every log clamped at -100 as torch's binary_cross_entropy does.
3. Dynamic k: k_g = max(1, floor(sum of the top-min(candidate_topk, #candidates) IoUs of g over the candidates)).
4. Each GT selects its k_g lowest-cost candidates (ties: lowest anchor index).
5. An anchor selected by several GTs goes to the GT of lowest cost for that anchor over ALL GTs of the image, as
   YOLOX and mmdetection do (argmin over every GT row, so the winner may be a GT that did not select the anchor);
   ties: lowest GT index.
6. Targets of a positive anchor: the assigned GT's box and label, gt_index its padded row, and the soft class target
   IoU(b_a, B_g) x one-hot(y_g), as YOLOX's.

Conventions: the assigner receives class probabilities p. YOLOX feeds sqrt(cls_prob * objectness) to the BCE
(mmdetection's SimOTAAssigner takes pred_scores = cls * obj and takes the square root inside); the heads here have
no objectness branch, so the cost uses p directly. IoU is torchvision's box_iou (inter / union), taken as 0 when
the union is 0 (zero-area GT and prediction). Costs are computed in at least float32 (float64 inputs stay float64).

Memory: real GT rows of the whole batch are flattened (gt_mask.nonzero()) and processed in chunks of at most
`chunk_elements` (rows x anchors) elements, so no (M, A, C) or (M, A, 4) tensor is ever built; a running per-anchor
minimum cost and its GT (for step 5) is kept across chunks, and the selections are collected as sparse
(row, anchor) lists. Two passes over the chunks: one for the candidate sets, one for costs and selections.
"""

from __future__ import annotations

import torch

from detector.assigners.base import Assigner, AssignerInput, Assignment, background_assignment
from detector.boxes import paired_box_iou

_PENALTY = 1e5  # cost added to pairs whose anchor is not both in box and in centre of the GT
_IOU_EPS = 1e-8  # inside -log(IoU + eps)
_LOG_MIN = -100.0  # torch's binary_cross_entropy clamps its logs here


def negative_log_sum(probs: torch.Tensor) -> torch.Tensor:
    """sum_c -log(1 - p_c) over the last dimension (log clamped at -100): the BCE of p against all-zero targets."""
    return -torch.log1p(-probs).clamp(min=_LOG_MIN).sum(-1)


def class_cost(neg_sum: torch.Tensor, p_y: torch.Tensor) -> torch.Tensor:
    """sum_c BCE(p_c, [c = y]) from `negative_log_sum(p)` and the probability p_y of the target class:
    the target class swaps its -log(1 - p_y) term for -log p_y (logs clamped at -100, as binary_cross_entropy)."""
    return neg_sum - torch.log(p_y).clamp(min=_LOG_MIN) + torch.log1p(-p_y).clamp(min=_LOG_MIN)


class SimOTAAssigner(Assigner):
    def __init__(
        self, num_classes: int, center_radius: float = 2.5, candidate_topk: int = 10, iou_weight: float = 3.0,
        cls_weight: float = 1.0, chunk_elements: int = 1 << 22,
    ) -> None:
        """`chunk_elements` bounds the number of (GT, anchor) pairs evaluated at once."""
        super().__init__(num_classes)
        self.center_radius, self.candidate_topk = center_radius, candidate_topk
        self.iou_weight, self.cls_weight, self.chunk_elements = iou_weight, cls_weight, chunk_elements

    def _geometry(self, boxes: torch.Tensor, points: torch.Tensor, strides: torch.Tensor):
        """in_box, in_centre (R, A) bool for GT boxes (R, 4) against anchor points (A, 2) and strides (A,)."""
        x, y = points[:, 0], points[:, 1]
        x1, y1, x2, y2 = (boxes[:, i, None] for i in range(4))
        in_box = (x - x1 > 0) & (y - y1 > 0) & (x2 - x > 0) & (y2 - y > 0)
        radius = self.center_radius * strides
        in_centre = ((x - (x1 + x2) / 2).abs() < radius) & ((y - (y1 + y2) / 2).abs() < radius)
        return in_box, in_centre

    @torch.no_grad()
    def forward(self, inputs: AssignerInput) -> Assignment:
        """Candidates come from `inputs.priors.points` and `.strides` (prior boxes, if any, are not used)."""
        pred_scores, pred_boxes = inputs.pred_scores, inputs.pred_boxes
        gt_labels, gt_boxes, gt_mask = inputs.gt_labels.long(), inputs.gt_boxes, inputs.gt_mask
        batch, anchors, _ = pred_scores.shape
        num_gt = gt_boxes.shape[1]
        device = pred_boxes.device
        rows = gt_mask.reshape(-1).nonzero().squeeze(1)  # real GT rows b * M + g, ascending
        if len(rows) == 0 or anchors == 0:
            return background_assignment(batch, anchors, self.num_classes, pred_boxes)

        dtype = torch.promote_types(pred_boxes.dtype, torch.float32)
        points = inputs.priors.points.to(dtype)
        strides = inputs.priors.strides.reshape(-1).to(dtype)
        probs = pred_scores.to(dtype)
        pred = pred_boxes.to(dtype)
        boxes = gt_boxes.reshape(-1, 4)[rows].to(dtype)  # (R, 4)
        image = rows // num_gt
        labels = gt_labels.reshape(-1)[rows]
        neg_sum = negative_log_sum(probs)  # (B, A)

        step = max(1, self.chunk_elements // anchors)
        chunks = [slice(first, min(first + step, len(rows))) for first in range(0, len(rows), step)]

        # pass 1: candidate anchors of every image (in box or in centre of any of its GTs)
        hits = torch.zeros(batch, anchors, dtype=torch.int32, device=device)
        for sel in chunks:
            in_box, in_centre = self._geometry(boxes[sel], points, strides)
            hits.index_add_(0, image[sel], (in_box | in_centre).to(torch.int32))
        candidate = hits > 0

        # pass 2: costs, dynamic k, selections; running per-anchor minimum cost over all GTs of the image
        inf = torch.tensor(float("inf"), dtype=dtype, device=device)
        best_cost = torch.full((batch, anchors), float("inf"), dtype=dtype, device=device)
        best_gt = torch.full((batch, anchors), num_gt, dtype=torch.long, device=device)
        kmax = max(1, min(self.candidate_topk, anchors))
        anchor_index = torch.arange(anchors, device=device)
        picked_rows, picked_anchors = [], []
        for sel in chunks:
            img, box, label, g = image[sel], boxes[sel], labels[sel], rows[sel] % num_gt
            in_box, in_centre = self._geometry(box, points, strides)
            cand = candidate[img]  # (r, A)
            iou = paired_box_iou(box[:, None], pred[img])  # (r, A)
            p_y = probs[img[:, None], anchor_index, label[:, None]]
            cost = (self.cls_weight * class_cost(neg_sum[img], p_y) + self.iou_weight * -torch.log(iou + _IOU_EPS)
                    + _PENALTY * (~(in_box & in_centre)).to(dtype))
            cost = torch.where(cand, cost, inf)
            del in_box, in_centre, p_y

            # dynamic k from the top IoUs over the candidates (non-candidates count as IoU 0)
            top_iou = torch.where(cand, iou, 0).topk(kmax, dim=1).values
            k = top_iou.sum(1).floor().long().clamp(1, kmax)
            # the k lowest-cost candidates, ties at the k-th cost broken by lowest anchor index
            kth = cost.topk(kmax, dim=1, largest=False).values.gather(1, (k - 1)[:, None])
            below = cost < kth
            tied = cost == kth
            room = k[:, None] - below.sum(1, keepdim=True)
            chosen = (below | (tied & (tied.cumsum(1) <= room))) & cand
            r, a = chosen.nonzero(as_tuple=True)
            picked_rows.append(rows[sel][r])
            picked_anchors.append(a)

            # lowest cost of each anchor over this chunk's GTs of its image, then over all chunks so far;
            # rows ascend within an image, so keeping the earlier minimum on ties keeps the lowest GT index
            index = img[:, None].expand(-1, anchors)
            chunk_min = torch.full_like(best_cost, float("inf")).scatter_reduce_(0, index, cost, "amin")
            chunk_gt = torch.full_like(best_gt, num_gt).scatter_reduce_(
                0, index, torch.where(cost == chunk_min[img], g[:, None], num_gt), "amin")
            better = chunk_min < best_cost
            best_cost = torch.where(better, chunk_min, best_cost)
            best_gt = torch.where(better, chunk_gt, best_gt)

        row, a = torch.cat(picked_rows), torch.cat(picked_anchors)
        b, g = row // num_gt, row % num_gt
        key = b * anchors + a
        claims = torch.zeros(batch * anchors, dtype=torch.int32, device=device).index_add_(
            0, key, torch.ones_like(key, dtype=torch.int32))
        gt_index = torch.zeros(batch * anchors, dtype=torch.long, device=device)
        gt_index[key] = g  # unique for anchors claimed once; contested anchors are overwritten next
        gt_index = torch.where(claims > 1, best_gt.reshape(-1), gt_index).view(batch, anchors)
        foreground = (claims > 0).view(batch, anchors)

        labels = gt_labels.gather(1, gt_index).clamp(min=0)
        target_boxes = gt_boxes.gather(1, gt_index.unsqueeze(-1).expand(-1, -1, 4))
        fb, fa = foreground.nonzero(as_tuple=True)
        quality = paired_box_iou(target_boxes[fb, fa].to(dtype), pred[fb, fa])
        scores = torch.zeros(batch, anchors, self.num_classes, dtype=pred_scores.dtype, device=device)
        scores[fb, fa, labels[fb, fa]] = quality.to(scores.dtype)
        return Assignment(labels, target_boxes, scores, foreground, gt_index)
