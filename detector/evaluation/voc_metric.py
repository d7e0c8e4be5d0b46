"""Pascal VOC detection metric (own implementation, following the VOC devkit's `voc_eval`):

per class, detections of all images are sorted by decreasing score; each is matched to the ground-truth
box of the same class in its image with the largest IoU; if that IoU is > `iou_threshold` (0.5):
    - the GT is "difficult" / crowd (iscrowd=1 or ignore=1 in the COCO ground truth): the detection is
      ignored, neither true nor false positive;
    - the GT is not matched yet: true positive, the GT becomes matched;
    - else (a duplicate): false positive;
otherwise a false positive. Difficult/crowd GT do not count as positives (npos).
recall = cum TP / npos, precision = cum TP / (cum TP + cum FP), and AP is
    VOC2007 11-point:  mean over t in {0, 0.1, ..., 1} of max(precision[recall >= t]) (0 when empty)
    area (VOC2010+):   the area under the monotone (right-to-left running max) precision envelope.
mAP = mean AP over the classes that have at least one positive.

Boxes are continuous pixel coordinates (no VOC "+1" in widths: the VOC reader converts the 1-based
integer coordinates to continuous ones already).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

RECALL_POINTS_07 = np.arange(11) / 10  # 0.0, 0.1, ..., 1.0 exactly (np.arange(0, 1.1, 0.1) gives 0.30000000000000004)


def voc_ap(recall: Sequence[float], precision: Sequence[float], use_07_metric: bool = True) -> float:
    """AP of a precision-recall curve (points in detection order)."""
    recall, precision = np.asarray(recall, np.float64), np.asarray(precision, np.float64)
    if use_07_metric:
        return float(sum(precision[recall >= t].max() if np.any(recall >= t) else 0.0 for t in RECALL_POINTS_07) / 11)
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # precision envelope
    change = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[change + 1] - mrec[change]) * mpre[change + 1]))


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box with (G, 4) boxes."""
    iw = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    ih = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = iw * ih
    union = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) - inter
    return inter / np.maximum(union, np.finfo(np.float64).eps)


def match_class(
    detections: Sequence[tuple[int, float, Sequence[float]]], ground_truth: dict[int, tuple[np.ndarray, np.ndarray]],
    iou_threshold: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, int]:
    """One class: detections (image_id, score, xyxy) and ground truth {image_id: (boxes (G, 4) xyxy, ignore (G,))}
    -> (recall, precision) in decreasing-score order (ignored detections left out) and npos."""
    npos = int(sum((~ignore).sum() for _, ignore in ground_truth.values()))
    matched = {image_id: np.zeros(len(boxes), bool) for image_id, (boxes, _) in ground_truth.items()}
    order = sorted(range(len(detections)), key=lambda i: -detections[i][1])  # stable: ties keep input order
    tp, fp = [], []
    for i in order:
        image_id, _, box = detections[i]
        boxes, ignore = ground_truth.get(image_id, (np.zeros((0, 4)), np.zeros(0, bool)))
        if len(boxes):
            ious = _iou(np.asarray(box, np.float64), boxes)
            j = int(ious.argmax())
            if ious[j] > iou_threshold:
                if ignore[j]:
                    continue
                if not matched[image_id][j]:
                    matched[image_id][j] = True
                    tp.append(1.0), fp.append(0.0)
                    continue
        tp.append(0.0), fp.append(1.0)
    ctp, cfp = np.cumsum(tp), np.cumsum(fp)
    recall = ctp / npos if npos else np.full(len(ctp), math.nan)
    precision = ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps)
    return recall, precision, npos


def voc_evaluate(coco_gt, detections: Sequence[dict], image_ids: Sequence[int] | None = None,
                 iou_threshold: float = 0.5) -> dict:
    """VOC AP at `iou_threshold` of COCO-format results on a pycocotools COCO ground truth (restricted to
    `image_ids` when given). Returns dict(map_07, map_area, per_class={category_id: dict(ap_07, ap_area, npos)})."""
    images = {int(i) for i in (image_ids if image_ids is not None else coco_gt.getImgIds())}
    category_ids = sorted(int(c) for c in coco_gt.getCatIds())
    gt: dict[int, dict[int, list]] = defaultdict(lambda: defaultdict(list))
    for ann in coco_gt.dataset["annotations"]:
        if int(ann["image_id"]) not in images:
            continue
        x, y, w, h = ann["bbox"]
        ignore = bool(ann.get("iscrowd", 0) or ann.get("ignore", 0) or ann.get("difficult", 0))
        gt[int(ann["category_id"])][int(ann["image_id"])].append((x, y, x + w, y + h, ignore))
    dets: dict[int, list] = defaultdict(list)
    for d in detections:
        if int(d["image_id"]) in images:
            x, y, w, h = d["bbox"]
            dets[int(d["category_id"])].append((int(d["image_id"]), float(d["score"]), (x, y, x + w, y + h)))
    per_class = {}
    for category_id in category_ids:
        ground_truth = {
            image_id: (np.asarray([r[:4] for r in rows], np.float64).reshape(-1, 4),
                       np.asarray([r[4] for r in rows], bool))
            for image_id, rows in gt[category_id].items()
        }
        recall, precision, npos = match_class(dets[category_id], ground_truth, iou_threshold)
        if npos == 0:
            per_class[category_id] = {"ap_07": math.nan, "ap_area": math.nan, "npos": 0}
            continue
        per_class[category_id] = {"ap_07": voc_ap(recall, precision, True), "ap_area": voc_ap(recall, precision, False),
                                  "npos": npos}
    valid = [v for v in per_class.values() if v["npos"] > 0]
    return {
        "map_07": float(np.mean([v["ap_07"] for v in valid])) if valid else 0.0,
        "map_area": float(np.mean([v["ap_area"] for v in valid])) if valid else 0.0,
        "iou_threshold": iou_threshold,
        "per_class": per_class,
    }
