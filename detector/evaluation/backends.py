"""COCO box evaluation with a choice of backend: pycocotools (the reference) or faster-coco-eval (the same
algorithm in C++; `pip install -e .[fast]`). Both return a finished COCOeval-like object whose `stats`
holds the 12 standard numbers and whose `eval["precision"]` (T, R, K, A, M) array feeds the per-class
table and the precision-recall curves."""

from __future__ import annotations

import contextlib
import copy
import io
import logging
from collections.abc import Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detector.evaluation.coco_eval import STAT_NAMES

BACKENDS = ("pycocotools", "faster_coco_eval")


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


def run_coco_eval(coco_gt: COCO, detections: list[dict], image_ids: Sequence[int], backend: str = "pycocotools"):
    """Evaluate `detections` (COCO results format) on `image_ids`; returns the evaluated, accumulated and
    summarized COCOeval (pycocotools) or COCOeval_faster (faster-coco-eval) object."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown evaluator {backend!r}; choose one of {', '.join(BACKENDS)}")
    with contextlib.redirect_stdout(io.StringIO()):
        if backend == "pycocotools":
            gt, evaluator_cls, kwargs = coco_gt, COCOeval, {}
            dt = coco_gt.loadRes(copy.deepcopy(detections)) if detections else _empty_results(coco_gt, COCO)
        else:
            try:
                from faster_coco_eval import COCO as FastCOCO
                from faster_coco_eval import COCOeval_faster
            except ImportError as error:
                raise ImportError("evaluator=faster_coco_eval needs the package: pip install -e .[fast]") from error
            quiet = logging.getLogger("detector.evaluation.faster_coco_eval").debug
            gt = FastCOCO(copy.deepcopy(coco_gt.dataset), print_function=quiet)
            dt = gt.loadRes(copy.deepcopy(detections)) if detections else _empty_results(gt, FastCOCO)
            evaluator_cls, kwargs = COCOeval_faster, {"print_function": quiet}
        evaluator = evaluator_cls(gt, dt, "bbox", **kwargs)
        evaluator.params.imgIds = sorted(int(i) for i in image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def stats_dict(evaluator) -> dict[str, float]:
    """The 12 COCO stats by name; -1 (no ground truth for that stat, e.g. no large objects) becomes 0, as in
    detector.evaluation.coco_eval.evaluate_detections."""
    stats = np.asarray(evaluator.stats)[: len(STAT_NAMES)]
    return {name: max(float(value), 0.0) for name, value in zip(STAT_NAMES, stats)}
