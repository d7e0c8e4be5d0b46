"""Post-processing: decode the head output, threshold, class-aware NMS (torchvision), cap detections."""

from __future__ import annotations

import torch
from torchvision.ops import batched_nms

from detector.models.coders import decode_boxes, decode_dfl
from detector.models.yolo import HeadOutput
from detector.postprocess.nms import NMS_METHODS, nms


class Postprocessor:
    """Multi-label decoding: every (anchor, class) pair with score > `conf_threshold` is a candidate
    (at most `max_candidates` by score), then NMS per class with `iou_threshold`, then the
    `max_detections` best. Returns per image dict(boxes (N, 4) input pixels, scores (N,), labels (N,)).
    `nms`: class_aware (default), class_agnostic, diou (class-aware DIoU-NMS) or diou_agnostic (see detector.postprocess.nms)."""

    def __init__(self, reg_max: int = 16, conf_threshold: float = 0.001, iou_threshold: float = 0.7,
                 max_detections: int = 300, max_candidates: int = 30000, nms: str = "class_aware") -> None:
        if nms not in NMS_METHODS:
            raise ValueError(f"unknown nms {nms!r}; choose one of {', '.join(NMS_METHODS)}")
        self.reg_max, self.conf_threshold, self.iou_threshold = reg_max, conf_threshold, iou_threshold
        self.max_detections, self.max_candidates, self.nms = max_detections, max_candidates, nms

    @torch.no_grad()
    def __call__(self, output: HeadOutput) -> list[dict[str, torch.Tensor]]:
        if not isinstance(output, HeadOutput):
            raise TypeError(f"Postprocessor decodes the anchor-free (DFL) head output, got {type(output).__name__}; "
                            "SSD models need postprocess=ssd (experiment=ssd sets it)")
        boxes = decode_dfl(output.points, output.box_logits.float(), self.reg_max) * output.strides
        scores = output.cls_logits.float().sigmoid()
        results = []
        for image_boxes, image_scores in zip(boxes, scores):
            anchor, label = (image_scores > self.conf_threshold).nonzero(as_tuple=True)
            candidate_scores = image_scores[anchor, label]
            if len(candidate_scores) > self.max_candidates:
                top = candidate_scores.topk(self.max_candidates).indices
                anchor, label, candidate_scores = anchor[top], label[top], candidate_scores[top]
            keep = nms(image_boxes[anchor], candidate_scores, label, self.iou_threshold, self.nms, self.max_detections)
            results.append({"boxes": image_boxes[anchor[keep]], "scores": candidate_scores[keep], "labels": label[keep]})
        return results


# ----------------------------------------------------------------------------------------------------
# SSD heads (anchor-based, C + 1 logits with the background at index 0)
# ----------------------------------------------------------------------------------------------------


class SSDPostprocessor:
    """Decoding of an `SSDHeadOutput` (as SSD / torchvision's SSD): boxes decoded against the priors
    (`variances`), class scores, then for each class the `top_k` best anchors with score > `conf_threshold`,
    per-class NMS (torchvision `batched_nms`, `iou_threshold`), and the `max_detections` best of the image.
    Defaults are SSD's (0.01, NMS 0.45, top-k 400 per class, 200 detections).

    activation: "softmax" (scores = softmax over the C + 1 logits, background dropped; heads trained with the
    cross-entropy), "sigmoid" (sigmoid of the C foreground logits; heads trained with a sigmoid loss: bce,
    focal, ...) or "auto": softmax if `cls_loss` (the `_target_` of the training classification loss, as the
    config passes it) is a cross-entropy, else sigmoid.
    Returns per image dict(boxes (N, 4) input pixels, scores (N,), labels (N,) in 0..C-1)."""

    ACTIVATIONS = ("softmax", "sigmoid", "auto")

    def __init__(
        self, variances: tuple[float, float] | None = (0.1, 0.2), activation: str = "softmax", cls_loss: str | None = None,
        conf_threshold: float = 0.01, iou_threshold: float = 0.45, top_k: int = 400, max_detections: int = 200,
    ) -> None:
        if activation not in self.ACTIVATIONS:
            raise ValueError(f"activation must be one of {self.ACTIVATIONS}, got {activation!r}")
        if activation == "auto":
            activation = "softmax" if (cls_loss or "").rsplit(".", 1)[-1] == "CrossEntropy" else "sigmoid"
        self.variances = tuple(float(v) for v in (variances or (0.1, 0.2)))
        self.activation, self.conf_threshold, self.iou_threshold = activation, conf_threshold, iou_threshold
        self.top_k, self.max_detections = top_k, max_detections

    @torch.no_grad()
    def __call__(self, output) -> list[dict[str, torch.Tensor]]:
        if not hasattr(output, "priors"):
            raise TypeError(
                f"SSDPostprocessor decodes an SSD head output (SSDHeadOutput), got {type(output).__name__}; "
                "the YOLOv8 head uses detector.postprocess.postprocessors.Postprocessor (postprocess=nms)"
            )
        boxes = decode_boxes(output.box_deltas, output.priors, self.variances)
        logits = output.cls_logits.float()
        scores = logits.softmax(-1)[..., 1:] if self.activation == "softmax" else logits[..., 1:].sigmoid()
        num_classes = scores.shape[-1]
        results = []
        for image_boxes, image_scores in zip(boxes, scores):
            top_scores, anchor = image_scores.topk(min(self.top_k, len(image_scores)), dim=0)  # (k, C) each
            label = torch.arange(num_classes, device=scores.device).expand_as(anchor)
            candidate = top_scores > self.conf_threshold
            anchor, label, candidate_scores = anchor[candidate], label[candidate], top_scores[candidate]
            keep = batched_nms(image_boxes[anchor], candidate_scores, label, self.iou_threshold)[: self.max_detections]
            results.append({"boxes": image_boxes[anchor[keep]], "scores": candidate_scores[keep], "labels": label[keep]})
        return results
