"""The MultiBox criterion of SSD heads: assigner -> targets -> (mined) classification + box losses.

Same design as `detector.criteria.dense.DetectionCriterion` (any assigner, any classification loss, any box loss
from the loss zoo), for heads that predict C + 1 class logits (background at index 0) and 4 offsets against
prior boxes (`detector.models.ssd.SSDHeadOutput`).

Classification, chosen by the type of `cls_loss`:
  softmax (cls_loss = `detector.losses.classification.CrossEntropy`, SSD): cross-entropy over the C + 1 logits
      with target class (matched class + 1) for positives and 0 (background) for negatives, label smoothing as
      configured in the loss. Positive anchors are weighted 1 (an assigner's soft scores are not used).
  sigmoid (any other classification loss: bce, focal, qfl, vfl; RetinaNet / YOLOv8 style): the loss on the C
      foreground logits (the background logit is unused) against the assigner's scores (one-hot for the SSD
      matcher, TAL's soft quality targets for TAL), summed over the classes.
Selection: `sampler` (e.g. `detector.criteria.hard_negative_mining.HardNegativeMiner`, 3:1) picks the anchors whose classification
loss counts; None counts every anchor (the choice for focal loss).
Box: a regression loss (`detector.losses.regression`: smooth L1, L1, ...) compares encoded offsets
(`detector.models.coders.encode_boxes`, variances (0.1, 0.2)); an IoU-family loss (`detector.losses.iou`) compares the
decoded boxes in pixels (`box_target` forces either).

With N = max(number of positives, 1) in the whole batch (softmax), or N = max(sum of the target scores, 1)
(sigmoid; equal to the number of positives for one-hot targets) and w the positive's weight (1, or its summed
target score in sigmoid mode):
    cls = sum_{selected anchors} cls_loss / N,   box = sum_{positives} w * box_loss / N
    total = cls_gain * cls + box_gain * box          (SSD: cls_gain 1, box_gain = alpha = 1)

Assigners: a prior-box matcher (`uses_priors`, e.g. `SSDMatcher`) gets the priors; any other assigner (TAL)
gets the predicted class probabilities of the C classes (softmax of the C + 1 logits without the background
in softmax mode, sigmoid of the C foreground logits in sigmoid mode), the decoded boxes, and the prior
centres as anchor points, all in pixels.
"""

from __future__ import annotations

import torch
from torch import nn

from detector.models.coders import decode_boxes, encode_boxes
from detector.models.priors import box_centres

BOX_TARGETS = ("auto", "offsets", "boxes")


def _is_softmax_loss(cls_loss: nn.Module) -> bool:
    try:
        from detector.losses.classification import CrossEntropy
    except ImportError:  # pragma: no cover - the loss zoo always has it
        return False
    return isinstance(cls_loss, CrossEntropy)


def _is_iou_loss(box_loss: nn.Module) -> bool:
    return type(box_loss).__module__ == "detector.losses.iou"


class MultiBoxCriterion(nn.Module):
    def __init__(
        self, assigner: nn.Module, cls_loss: nn.Module, box_loss: nn.Module, sampler: nn.Module | None = None,
        variances: tuple[float, float] | None = (0.1, 0.2), box_gain: float = 1.0, cls_gain: float = 1.0,
        box_target: str = "auto",
    ) -> None:
        super().__init__()
        if box_target not in BOX_TARGETS:
            raise ValueError(f"box_target must be one of {BOX_TARGETS}, got {box_target!r}")
        self.assigner, self.cls_loss, self.box_loss, self.sampler = assigner, cls_loss, box_loss, sampler
        self.variances = tuple(float(v) for v in (variances or (0.1, 0.2)))
        self.gains = {"box": box_gain, "cls": cls_gain}
        self.softmax = _is_softmax_loss(cls_loss)
        self.box_target = ("boxes" if _is_iou_loss(box_loss) else "offsets") if box_target == "auto" else box_target

    def class_probabilities(self, cls_logits: torch.Tensor) -> torch.Tensor:
        """(B, A, C + 1) logits -> (B, A, C) probabilities of the C classes under this criterion's activation."""
        if self.softmax:
            return cls_logits.softmax(-1)[..., 1:]
        return cls_logits[..., 1:].sigmoid()

    def forward(self, output, gt_labels: torch.Tensor, gt_boxes: torch.Tensor, gt_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """output: `SSDHeadOutput`; gt_* padded per image: labels (B, M), boxes (B, M, 4) xyxy input pixels,
        mask (B, M). Returns the weighted components 'box', 'cls' and their sum 'loss'."""
        if not hasattr(output, "priors"):
            raise TypeError(
                f"MultiBoxCriterion needs an SSD-style head output (SSDHeadOutput: box_deltas, cls_logits with a "
                f"background class, priors), got {type(output).__name__}; for the anchor-free YOLOv8 head use "
                "detector.criteria.dense.DetectionCriterion (criterion=yolo)"
            )
        priors = output.priors.float()
        deltas, logits = output.box_deltas.float(), output.cls_logits.float()
        pred_boxes = decode_boxes(deltas, priors, self.variances)  # (B, A, 4) pixels
        if getattr(self.assigner, "uses_priors", False):
            assignment = self.assigner(None, None, None, gt_labels, gt_boxes.float(), gt_mask, priors=priors)
        else:
            assignment = self.assigner(
                self.class_probabilities(logits.detach()), pred_boxes.detach(), box_centres(priors),
                gt_labels, gt_boxes.float(), gt_mask,
            )
        fg = assignment.foreground
        if self.softmax:
            targets = torch.where(fg, assignment.labels + 1, 0)
            per_anchor = self.cls_loss(logits.flatten(0, 1), targets.flatten()).view(fg.shape)
            normaliser = fg.sum().clamp(min=1).to(logits.dtype)
            weight = torch.ones_like(fg, dtype=logits.dtype)[fg]
        else:
            target_scores = assignment.scores.to(logits.dtype)
            per_anchor = self.cls_loss(logits[..., 1:], target_scores).sum(-1)
            normaliser = target_scores.sum().clamp(min=1)
            weight = target_scores.sum(-1)[fg]
        selected = self.sampler(per_anchor.detach(), fg) if self.sampler is not None else None
        cls = (per_anchor if selected is None else per_anchor * selected).sum() / normaliser

        if self.box_target == "offsets":
            target = encode_boxes(assignment.boxes[fg], priors.expand_as(pred_boxes)[fg], self.variances)
            box_losses = self.box_loss(deltas[fg], target)
        else:
            box_losses = self.box_loss(pred_boxes[fg], assignment.boxes[fg].float())
        box = (box_losses * weight).sum() / normaliser
        losses = {"box": box * self.gains["box"], "cls": cls * self.gains["cls"]}
        losses["loss"] = losses["box"] + losses["cls"]
        return losses
