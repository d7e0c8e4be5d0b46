"""COCO box evaluation: the one place COCOeval runs, with a choice of backend.

- `run_coco_eval`: COCOeval with pycocotools (the reference) or faster-coco-eval (the same algorithm in C++;
  `pip install -e .[fast]`). Both return a finished COCOeval-like object whose `stats` holds the 12 standard
  numbers (`stats_dict` names them) and whose `eval["precision"]` (T, R, K, A, M) array feeds the per-class table
  and the precision-recall curves. Used by the evaluation report (scripts/evaluate.py) and the benchmark.
- `COCOEvaluator`: the evaluator of training's validation, correct under DDP. Each rank collects its detections
  (original-image coordinates); `compute` gathers them on every rank, drops the duplicates that a
  DistributedSampler adds to even out the shards, and evaluates exactly the images that were seen, so the number
  equals the single-process number.
- `to_coco_results`: one image's detections -> COCO results entries (what both of the above evaluate, and what
  scripts/predict.py writes).
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
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
BACKENDS = ("pycocotools", "faster_coco_eval")


def to_coco_results(image_id: int, detections: dict[str, torch.Tensor], category_ids: Sequence[int],
                    **extra) -> list[dict]:
    """COCO results entries for one image: detections boxes (N, 4) xyxy in original-image pixels, scores,
    labels (0..C-1, mapped to `category_ids`) -> bbox xywh rounded to 1/1000 px; `extra` keys are added to
    every entry."""
    xywh = detections["boxes"].detach().cpu().double().numpy().copy().reshape(-1, 4)
    xywh[:, 2:] -= xywh[:, :2]
    scores, labels = detections["scores"].tolist(), detections["labels"].tolist()
    return [
        {"image_id": int(image_id), "category_id": int(category_ids[label]), "bbox": box, "score": score, **extra}
        for box, score, label in zip(np.round(xywh, 3).tolist(), scores, labels)
    ]


def faster_coco_eval_available() -> bool:
    try:
        import faster_coco_eval  # noqa: F401
    except ImportError:
        return False
    return True


def _empty_results(coco_gt, coco_cls):
    """A results object with no detections (loadRes refuses an empty list)."""
    coco_dt = coco_cls()
    coco_dt.dataset = {"images": list(coco_gt.dataset["images"]), "annotations": [],
                       "categories": copy.deepcopy(coco_gt.dataset["categories"])}
    coco_dt.createIndex()
    return coco_dt


def run_coco_eval(coco_gt: COCO, detections: list[dict], image_ids: Sequence[int], backend: str = "pycocotools",
                  copy_detections: bool = True):
    """Evaluate `detections` (COCO results format) on `image_ids`; returns the evaluated, accumulated and
    summarized COCOeval (pycocotools) or COCOeval_faster (faster-coco-eval) object. loadRes adds keys to the
    result dicts: they are copied first unless `copy_detections=False`."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown evaluator {backend!r}; choose one of {', '.join(BACKENDS)}")
    results = copy.deepcopy(detections) if copy_detections else detections
    with contextlib.redirect_stdout(io.StringIO()):
        if backend == "pycocotools":
            gt, evaluator_cls, kwargs = coco_gt, COCOeval, {}
            dt = coco_gt.loadRes(results) if results else _empty_results(coco_gt, COCO)
        else:
            try:
                from faster_coco_eval import COCO as FastCOCO
                from faster_coco_eval import COCOeval_faster
            except ImportError as error:
                raise ImportError("evaluator=faster_coco_eval needs the package: pip install -e .[fast]") from error
            quiet = logging.getLogger("detector.evaluation.faster_coco_eval").debug
            gt = FastCOCO(copy.deepcopy(coco_gt.dataset), print_function=quiet)
            dt = gt.loadRes(results) if results else _empty_results(gt, FastCOCO)
            evaluator_cls, kwargs = COCOeval_faster, {"print_function": quiet}
        evaluator = evaluator_cls(gt, dt, "bbox", **kwargs)
        evaluator.params.imgIds = sorted(int(i) for i in image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def stats_dict(evaluator) -> dict[str, float]:
    """The 12 COCO stats by name; pycocotools reports -1 where a stat has no ground truth (e.g. no large
    objects): 0 instead."""
    stats = np.asarray(evaluator.stats)[: len(STAT_NAMES)]
    return {name: max(float(value), 0.0) for name, value in zip(STAT_NAMES, stats)}


def evaluate_detections(coco_gt: COCO, detections: list[dict], image_ids: Sequence[int]) -> dict[str, float]:
    """The 12 COCO stats (pycocotools) for `detections` (COCO results format, extended in place by loadRes) on
    `image_ids`; all 0 without detections."""
    if not detections:
        return dict.fromkeys(STAT_NAMES, 0.0)
    return stats_dict(run_coco_eval(coco_gt, detections, image_ids, "pycocotools", copy_detections=False))


class COCOEvaluator:
    def __init__(self, coco_gt: COCO, category_ids: Sequence[int]) -> None:
        self.coco_gt, self.category_ids = coco_gt, list(category_ids)
        self.reset()

    def reset(self) -> None:
        self._per_image: dict[int, list[dict]] = {}

    def update(self, image_id: int, boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor) -> None:
        """Detections of one image: boxes (N, 4) xyxy in original-image pixels."""
        detections = {"boxes": boxes, "scores": scores, "labels": labels}
        self._per_image[int(image_id)] = to_coco_results(image_id, detections, self.category_ids)

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
