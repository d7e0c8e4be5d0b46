"""Post-processing: decode the head output (its own `decode_boxes` and `class_scores`), threshold, NMS
(torchvision), cap detections. Both post-processors take the output of any head; `activation` is the one the
classification loss was trained with (the config reads it from the loss's declaration).

End-to-end heads (an output with a `one2one` branch, `model.end2end=true`): `Postprocessor` takes the one-to-one
branch's top scores without NMS (`top_detections`), unless `one2one=false` asks for the one-to-many branch + NMS."""

from __future__ import annotations

from typing import Any

import torch
from torchvision.ops import batched_nms

from detector.postprocess.nms import NMS_METHODS, nms


def detecting_output(output, one2one: bool | None = None) -> tuple[Any, bool]:
    """(the head output that detects, whether it is NMS-free): the one-to-one branch of an end-to-end head output
    unless `one2one` is False, else the output itself (the post-processors and the ONNX export decide alike)."""
    branch = getattr(output, "one2one", None)
    if branch is None or one2one is False:
        return output, False
    return branch, True


def top_detections(boxes: torch.Tensor, scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """NMS-free selection of the k best (anchor, class) pairs per image (YOLOv10's): the k anchors with the highest
    best-class score, then the k best (anchor, class) pairs among them. boxes (B, A, 4), scores (B, A, C) ->
    boxes (B, k, 4), scores (B, k), labels (B, k), in decreasing score (k = min(k, A))."""
    num_classes = scores.shape[-1]
    k = min(k, scores.shape[1])
    anchors = scores.amax(-1).topk(k, dim=1).indices  # (B, k)
    candidate_scores = scores.gather(1, anchors.unsqueeze(-1).expand(-1, -1, num_classes))
    top_scores, pair = candidate_scores.flatten(1).topk(k, dim=1)
    anchor = anchors.gather(1, pair // num_classes)
    return boxes.gather(1, anchor.unsqueeze(-1).expand(-1, -1, 4)), top_scores, pair % num_classes


class Postprocessor:
    """Multi-label decoding: every (anchor, class) pair with score > `conf_threshold` is a candidate
    (at most `max_candidates` by score), then NMS per class with `iou_threshold`, then the
    `max_detections` best. Returns per image dict(boxes (N, 4) input pixels, scores (N,), labels (N,)).
    `nms`: class_aware (default), class_agnostic, diou (class-aware DIoU-NMS) or diou_agnostic (see detector.postprocess.nms).
    `one2one` (end-to-end heads): None/True = the one-to-one branch's `max_detections` best pairs with score >
    `conf_threshold`, no NMS (True refuses a head without that branch); False = the one-to-many branch with NMS."""

    def __init__(self, conf_threshold: float = 0.001, iou_threshold: float = 0.7, max_detections: int = 300,
                 max_candidates: int = 30000, nms: str = "class_aware", activation: str = "sigmoid",
                 one2one: bool | None = None) -> None:
        if nms not in NMS_METHODS:
            raise ValueError(f"unknown nms {nms!r}; choose one of {', '.join(NMS_METHODS)}")
        self.conf_threshold, self.iou_threshold = conf_threshold, iou_threshold
        self.max_detections, self.max_candidates, self.nms, self.activation = max_detections, max_candidates, nms, activation
        self.one2one = one2one

    @torch.no_grad()
    def __call__(self, output) -> list[dict[str, torch.Tensor]]:
        if self.one2one and getattr(output, "one2one", None) is None:
            raise ValueError(f"postprocess.one2one=true, but this {type(output).__name__} has no one-to-one branch "
                             "(train with model.end2end=true)")
        output, nms_free = detecting_output(output, self.one2one)
        if nms_free:
            return self.nms_free(output)
        boxes, scores = output.decode_boxes(), output.class_scores(self.activation)
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

    def nms_free(self, output) -> list[dict[str, torch.Tensor]]:
        """The one-to-one branch's best `max_detections` (anchor, class) pairs above `conf_threshold`."""
        boxes, scores, labels = top_detections(output.decode_boxes(), output.class_scores(self.activation), self.max_detections)
        keep = scores > self.conf_threshold
        return [{"boxes": b[k], "scores": s[k], "labels": c[k]} for b, s, c, k in zip(boxes, scores, labels, keep)]


class SSDPostprocessor:
    """SSD's selection (as SSD / torchvision's SSD): decoded boxes and class scores, then for each class the
    `top_k` best anchors with score > `conf_threshold`, per-class NMS (torchvision `batched_nms`,
    `iou_threshold`), and the `max_detections` best of the image. Defaults are SSD's (0.01, NMS 0.45, top-k 400
    per class, 200 detections). `activation`: "softmax" (over the C + 1 logits of an SSD head, background
    dropped) or "sigmoid", as the classification loss was trained.
    Returns per image dict(boxes (N, 4) input pixels, scores (N,), labels (N,) in 0..C-1)."""

    def __init__(
        self, activation: str = "softmax", conf_threshold: float = 0.01, iou_threshold: float = 0.45,
        top_k: int = 400, max_detections: int = 200,
    ) -> None:
        self.activation, self.conf_threshold, self.iou_threshold = activation, conf_threshold, iou_threshold
        self.top_k, self.max_detections = top_k, max_detections

    @torch.no_grad()
    def __call__(self, output) -> list[dict[str, torch.Tensor]]:
        boxes, scores = output.decode_boxes(), output.class_scores(self.activation)
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
