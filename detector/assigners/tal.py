"""Task-aligned assigner (Feng et al., "TOOD: Task-aligned One-stage Object Detection", ICCV 2021),
with the settings YOLOv8 uses.

For each GT g and anchor point a strictly inside g:
    t(a, g) = s(a, class(g))^alpha * u(a, g)^beta
with s the predicted class probability and u the overlap (CIoU, clamped at 0) of the anchor's
decoded prediction with g. Each GT keeps its top-k anchors by t; an anchor kept by several GTs
goes to the GT it overlaps most. The soft class target of a positive anchor is
    t(a, g) * max_a' u(a', g) / (max_a' t(a', g) + eps)      (a' over the positives of g).

Sparse by construction: everything is computed on the list of (image, GT, anchor) candidates,
i.e. the anchors inside each GT, so memory grows with the number of candidates, not with
batch x GT x anchors; crowded images (1000 GT) fit easily. Top-k, conflict resolution and the
per-GT maxima are segment operations (sort, scatter_reduce) on that list.

Small objects (`small_objects=True`, ultralytics 8.4's TaskAlignedAssigner): for the candidate test only, a GT
side shorter than the second-finest stride s_2 of the head (16 px for strides 8/16/32; the only stride for a
one-level head) is widened to s_2 about the GT centre, each side independently. A 4 x 4 px GT that falls between
anchor points then has candidates; its overlaps, alignment and targets still use the real box. Off by default
(YOLOv8's behaviour).

The overlap u is any element-wise similarity `overlap(gt_boxes, pred_boxes)` in [0, 1] after the clamp: CIoU by
default (YOLOv8), or NWD (`detector.losses.gaussian.nwd`, Wang et al. 2021, whose main gain on tiny objects is in
assignment) through the option group `assigner/overlap`.

The one difference from ultralytics' dense TaskAlignedAssigner: a candidate with alignment exactly 0 is never
positive here. Alignment 0 comes from an overlap <= 0 (CIoU is clamped at 0: frequent while predictions are poor)
or a probability that underflows to 0. ultralytics takes the k largest alignments over all anchors, so a GT with
fewer than k candidates of positive alignment also gets anchors of alignment 0 (which ones: torch.topk's order
among ties); those inside the GT become its positives (soft target 0, box and DFL weight 0), and an anchor so
taken by two GTs goes to the GT it overlaps most among all GTs containing it, which may be a GT that did not
select it, with a non-zero target that enters that GT's max t and max u. Where every GT has at least k
candidates of positive alignment the two are identical; elsewhere ultralytics' positives are a superset of ours
and the soft targets can differ by up to 0.71 (docs/assigners.md, measured by
tests/assigners/test_tal.py::test_where_ultralytics_task_aligned_assigner_differs).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from detector.assigners.base import Assigner, AssignerInput, Assignment, background_assignment, segment_max
from detector.losses.iou import ciou
from detector.models.priors import Priors


class TaskAlignedAssigner(Assigner):
    def __init__(
        self, num_classes: int, topk: int = 10, alpha: float = 0.5, beta: float = 6.0, eps: float = 1e-9,
        overlap: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = ciou, chunk_elements: int = 1 << 24,
        small_objects: bool = False,
    ) -> None:
        """`chunk_elements` bounds the number of (GT, anchor) inside-tests evaluated at once; `small_objects`
        widens GT sides below the second-finest stride for the candidate test (see the module docstring)."""
        super().__init__(num_classes)
        self.topk, self.alpha, self.beta, self.eps = topk, alpha, beta, eps
        self.overlap, self.chunk_elements, self.small_objects = overlap, chunk_elements, small_objects

    @torch.no_grad()
    def forward(self, inputs: AssignerInput) -> Assignment:
        """Candidates are the anchor points strictly inside a GT (`inputs.priors.points`)."""
        pred_scores, pred_boxes, points = inputs.pred_scores, inputs.pred_boxes, inputs.priors.points
        gt_labels, gt_boxes, gt_mask = inputs.gt_labels, inputs.gt_boxes, inputs.gt_mask
        batch, anchors, _ = pred_scores.shape
        num_gt = gt_boxes.shape[1]
        b, g, a = self._candidates(points, self.candidate_boxes(gt_boxes, inputs.priors), gt_mask)
        if len(b) == 0:
            return background_assignment(batch, anchors, self.num_classes, pred_boxes)
        gt_labels = gt_labels.long()
        overlap = self.overlap(gt_boxes[b, g], pred_boxes[b, a]).clamp(min=0).to(pred_scores.dtype)
        align = pred_scores[b, a, gt_labels[b, g]].pow(self.alpha) * overlap.pow(self.beta)

        # top-k per GT: order candidates by GT, then by decreasing alignment, and rank them in their GT
        gt_key = b * num_gt + g
        order = torch.sort(align, descending=True, stable=True).indices
        order = order[torch.sort(gt_key[order], stable=True).indices]
        sorted_key = gt_key[order]
        first_of_gt = torch.ones_like(sorted_key, dtype=torch.bool)
        first_of_gt[1:] = sorted_key[1:] != sorted_key[:-1]
        position = torch.arange(len(order), device=order.device)
        start = torch.cummax(torch.where(first_of_gt, position, 0), 0).values
        rank = torch.empty_like(position)
        rank[order] = position - start
        positive = (rank < self.topk) & (align > 0)

        # an anchor that is positive for several GTs goes to the GT it overlaps most (ties: lowest GT index)
        anchor_key = b * anchors + a
        claims = torch.zeros(batch * anchors, dtype=torch.long, device=b.device).index_add_(0, anchor_key, positive.long())
        contested = claims[anchor_key] > 1
        best_overlap = segment_max(overlap, anchor_key, batch * anchors)[anchor_key]
        best_gt = torch.full((batch * anchors,), num_gt, dtype=torch.long, device=b.device)
        best_gt.scatter_reduce_(0, anchor_key, torch.where(overlap == best_overlap, g, num_gt), "amin")
        positive = torch.where(contested, g == best_gt[anchor_key], positive)

        keep = positive.nonzero().squeeze(1)  # one host-device synchronisation for the five selections
        b, g, a, align, overlap = b[keep], g[keep], a[keep], align[keep], overlap[keep]
        gt_key = b * num_gt + g
        max_align = segment_max(align, gt_key, batch * num_gt)[gt_key]
        max_overlap = segment_max(overlap, gt_key, batch * num_gt)[gt_key]
        quality = align * max_overlap / (max_align + self.eps)

        foreground = torch.zeros(batch, anchors, dtype=torch.bool, device=b.device)
        foreground[b, a] = True
        gt_index = torch.zeros(batch, anchors, dtype=torch.long, device=b.device)
        gt_index[b, a] = g
        labels = gt_labels.gather(1, gt_index).clamp(min=0)
        boxes = gt_boxes.gather(1, gt_index.unsqueeze(-1).expand(-1, -1, 4))
        scores = torch.zeros(batch, anchors, self.num_classes, dtype=pred_scores.dtype, device=b.device)
        scores[b, a, labels[b, a]] = quality
        return Assignment(labels, boxes, scores, foreground, gt_index)

    def candidate_boxes(self, gt_boxes: torch.Tensor, priors: Priors) -> torch.Tensor:
        """The boxes whose inside decides the candidates: the GT boxes, with `small_objects` their sides shorter
        than the second-finest stride widened to it about the centre."""
        return widen_small_boxes(gt_boxes, priors) if self.small_objects else gt_boxes

    def _candidates(self, points: torch.Tensor, gt_boxes: torch.Tensor, gt_mask: torch.Tensor, eps: float = 1e-9):
        """(image, GT, anchor) index triples with the anchor point strictly inside the (real) GT box.

        Points sorted by x give, per GT, the strip of anchors with x1 < x < x2 (two binary searches);
        only that strip is tested in y. Strips are processed in chunks of at most `chunk_elements`."""
        num_gt = gt_boxes.shape[1]
        order = torch.argsort(points[:, 0])
        sorted_x = points[order, 0].contiguous()
        rows = gt_mask.reshape(-1).nonzero().squeeze(1)
        boxes = gt_boxes.reshape(-1, 4)[rows]
        start = torch.searchsorted(sorted_x, boxes[:, 0].contiguous(), right=True)
        end = torch.searchsorted(sorted_x, boxes[:, 2].contiguous(), right=False)
        counts = (end - start).clamp(min=0)
        found = []
        chunk_end = torch.cumsum(counts, 0)
        first = 0
        while first < len(rows):
            limit = (chunk_end[first - 1] if first else 0) + self.chunk_elements
            last = max(int(torch.searchsorted(chunk_end, limit, right=True)), first + 1)
            sel = slice(first, last)
            row = torch.repeat_interleave(torch.arange(first, last, device=rows.device), counts[sel])
            within = torch.arange(len(row), device=rows.device) - torch.repeat_interleave(
                torch.cumsum(counts[sel], 0) - counts[sel], counts[sel])
            anchor = order[start[row] + within]
            x, y, box = points[anchor, 0], points[anchor, 1], boxes[row]
            inside = (x - box[:, 0] > eps) & (y - box[:, 1] > eps) & (box[:, 2] - x > eps) & (box[:, 3] - y > eps)
            inside = inside.nonzero().squeeze(1)
            found.append((rows[row[inside]], anchor[inside]))
            first = last
        row = torch.cat([r for r, _ in found]) if found else rows.new_zeros(0)
        anchor = torch.cat([a for _, a in found]) if found else rows.new_zeros(0)
        return row // num_gt, row % num_gt, anchor


def widen_small_boxes(boxes: torch.Tensor, priors: Priors) -> torch.Tensor:
    """(..., 4) xyxy boxes with their sides shorter than the second-finest stride of `priors` (the finest on a
    one-level head) widened to it about the centre: TAL's small-object rule (ultralytics 8.4), also the
    dataset doctor's (detector.data.doctor)."""
    strides = sorted(set(priors.level_strides()))
    min_side = strides[1] if len(strides) > 1 else strides[0]
    centre, size = (boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2]
    size = size.clamp(min=min_side)
    return torch.cat((centre - size / 2, centre + size / 2), -1)
