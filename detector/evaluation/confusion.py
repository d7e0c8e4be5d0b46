"""Detection confusion matrix with a background row and column.

Per image, detections with score >= `conf_threshold` are matched one-to-one to the (non-crowd) ground-truth
boxes regardless of class: pairs with IoU >= `iou_threshold` are taken greedily in decreasing IoU. Then,
with C classes and index C meaning "background",
    matrix[true class, predicted class] += 1   for every matched pair (off-diagonal: right place, wrong class)
    matrix[true class, C] += 1                  for every unmatched GT box (missed)
    matrix[C, predicted class] += 1             for every unmatched detection (false positive), except those
                                                with IoU >= iou_threshold with a crowd/ignore region
Rows are the ground truth, columns the predictions; matrix[C, C] is always 0.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch
from torchvision.ops import box_iou


def _xyxy(xywh: Sequence[float]) -> list[float]:
    x, y, w, h = xywh
    return [x, y, x + w, y + h]


def confusion_matrix(
    coco_gt, detections: Sequence[dict], category_ids: Sequence[int], image_ids: Sequence[int] | None = None,
    iou_threshold: float = 0.5, conf_threshold: float = 0.25,
) -> np.ndarray:
    """(C + 1, C + 1) int64 counts for COCO-format `detections` on the pycocotools COCO `coco_gt`."""
    num_classes = len(category_ids)
    label_of = {int(c): k for k, c in enumerate(category_ids)}
    images = [int(i) for i in (image_ids if image_ids is not None else coco_gt.getImgIds())]
    wanted = set(images)
    gt, crowd, dets = defaultdict(list), defaultdict(list), defaultdict(list)
    for ann in coco_gt.dataset["annotations"]:
        image_id = int(ann["image_id"])
        if image_id in wanted and int(ann["category_id"]) in label_of:
            target = crowd if ann.get("iscrowd", 0) or ann.get("ignore", 0) else gt
            target[image_id].append((*_xyxy(ann["bbox"]), label_of[int(ann["category_id"])]))
    for d in detections:
        image_id = int(d["image_id"])
        if image_id in wanted and float(d["score"]) >= conf_threshold and int(d["category_id"]) in label_of:
            dets[image_id].append((*_xyxy(d["bbox"]), label_of[int(d["category_id"])]))

    matrix = np.zeros((num_classes + 1, num_classes + 1), np.int64)
    background = num_classes
    for image_id in images:
        g = torch.tensor(gt[image_id], dtype=torch.float64).reshape(-1, 5)
        p = torch.tensor(dets[image_id], dtype=torch.float64).reshape(-1, 5)
        gt_used, det_used = np.zeros(len(g), bool), np.zeros(len(p), bool)
        if len(g) and len(p):
            iou = box_iou(g[:, :4], p[:, :4]).numpy()
            gi, di = np.nonzero(iou >= iou_threshold)
            for k in np.argsort(-iou[gi, di], kind="stable"):
                if not gt_used[gi[k]] and not det_used[di[k]]:
                    gt_used[gi[k]] = det_used[di[k]] = True
                    matrix[int(g[gi[k], 4]), int(p[di[k], 4])] += 1
        for k in np.nonzero(~gt_used)[0]:
            matrix[int(g[k, 4]), background] += 1
        unmatched = np.nonzero(~det_used)[0]
        if len(unmatched) and crowd[image_id]:
            c = torch.tensor(crowd[image_id], dtype=torch.float64)
            on_crowd = (box_iou(p[unmatched, :4], c[:, :4]) >= iou_threshold).any(1).numpy()
            unmatched = unmatched[~on_crowd]
        for k in unmatched:
            matrix[background, int(p[k, 4])] += 1
    return matrix
