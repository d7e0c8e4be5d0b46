"""COCO evaluation with pycocotools, correct under DDP.

Each rank collects its detections (original-image coordinates); `compute` gathers them on every
rank, drops the duplicates that a DistributedSampler adds to even out the shards, and runs COCOeval
on exactly the images that were seen, so the number equals the single-process number.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence

import numpy as np
import torch
import torch.distributed as dist
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

STAT_NAMES = (
    "map", "map_50", "map_75", "map_small", "map_medium", "map_large",
    "mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large",
)


def evaluate_detections(coco_gt: COCO, detections: list[dict], image_ids: Sequence[int]) -> dict[str, float]:
    """The 12 COCO stats (pycocotools' summarize) for `detections` (COCO results format) on `image_ids`."""
    if not detections:
        return dict.fromkeys(STAT_NAMES, 0.0)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(detections)
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.params.imgIds = sorted(image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    # pycocotools reports -1 where a stat has no ground truth (e.g. no large objects); report 0 instead
    return {name: max(float(value), 0.0) for name, value in zip(STAT_NAMES, evaluator.stats)}


class COCOEvaluator:
    def __init__(self, coco_gt: COCO, category_ids: Sequence[int]) -> None:
        self.coco_gt, self.category_ids = coco_gt, list(category_ids)
        self.reset()

    def reset(self) -> None:
        self._per_image: dict[int, list[dict]] = {}

    def update(self, image_id: int, boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor) -> None:
        """Detections of one image: boxes (N, 4) xyxy in original-image pixels."""
        xywh = boxes.detach().cpu().double().numpy().copy()
        xywh[:, 2:] -= xywh[:, :2]
        self._per_image[int(image_id)] = [
            {"image_id": int(image_id), "category_id": self.category_ids[label], "bbox": box, "score": score}
            for box, score, label in zip(np.round(xywh, 3).tolist(), scores.tolist(), labels.tolist())
        ]

    def compute(self) -> dict[str, float]:
        """Gathers across ranks (if distributed) and evaluates; also returns 'images', the count evaluated."""
        per_image = self._per_image
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            gathered: list[dict] = [None] * dist.get_world_size()  # type: ignore[list-item]
            dist.all_gather_object(gathered, per_image)
            per_image = {}
            for shard in gathered:
                for image_id, detections in shard.items():
                    per_image.setdefault(image_id, detections)
        detections = [d for image_detections in per_image.values() for d in image_detections]
        stats = evaluate_detections(self.coco_gt, detections, list(per_image))
        stats["images"] = float(len(per_image))
        return stats
