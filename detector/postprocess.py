"""Post-processing: decode the head output, threshold, class-aware NMS (torchvision), cap detections."""

from __future__ import annotations

import torch
from torchvision.ops import batched_nms

from detector.coders import decode_dfl
from detector.models.detector import HeadOutput


class Postprocessor:
    """Multi-label decoding: every (anchor, class) pair with score > `conf_threshold` is a candidate
    (at most `max_candidates` by score), then NMS per class with `iou_threshold`, then the
    `max_detections` best. Returns per image dict(boxes (N, 4) input pixels, scores (N,), labels (N,))."""

    def __init__(self, reg_max: int = 16, conf_threshold: float = 0.001, iou_threshold: float = 0.7,
                 max_detections: int = 300, max_candidates: int = 30000) -> None:
        self.reg_max, self.conf_threshold, self.iou_threshold = reg_max, conf_threshold, iou_threshold
        self.max_detections, self.max_candidates = max_detections, max_candidates

    @torch.no_grad()
    def __call__(self, output: HeadOutput) -> list[dict[str, torch.Tensor]]:
        boxes = decode_dfl(output.points, output.box_logits.float(), self.reg_max) * output.strides
        scores = output.cls_logits.float().sigmoid()
        results = []
        for image_boxes, image_scores in zip(boxes, scores):
            anchor, label = (image_scores > self.conf_threshold).nonzero(as_tuple=True)
            candidate_scores = image_scores[anchor, label]
            if len(candidate_scores) > self.max_candidates:
                top = candidate_scores.topk(self.max_candidates).indices
                anchor, label, candidate_scores = anchor[top], label[top], candidate_scores[top]
            keep = batched_nms(image_boxes[anchor], candidate_scores, label, self.iou_threshold)[: self.max_detections]
            results.append({"boxes": image_boxes[anchor[keep]], "scores": candidate_scores[keep], "labels": label[keep]})
        return results
