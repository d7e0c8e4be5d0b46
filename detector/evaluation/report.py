"""The full evaluation report of a set of detections: the 12 COCO stats (pycocotools or faster-coco-eval),
per-class AP table (markdown + CSV), the VOC AP50 (11-point VOC07 and area), precision-recall curves and a
confusion matrix (PNG), all written to one folder with an `evaluation.json` summary."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from detector.evaluation.coco import run_coco_eval, stats_dict
from detector.evaluation.confusion import confusion_matrix
from detector.evaluation.per_class import per_class_ap, to_markdown, write_csv
from detector.evaluation.voc_metric import voc_evaluate
from detector.jsonsafe import json_safe


def evaluate_report(
    coco_gt, detections: list[dict], image_ids: Sequence[int], class_names: Sequence[str], category_ids: Sequence[int],
    out_dir: str | Path | None = None, backend: str = "pycocotools", plots: bool = True,
    confusion_iou: float = 0.5, confusion_conf: float = 0.25, extra: dict | None = None,
) -> dict:
    """Evaluate and (when `out_dir` is given) write evaluation.json, per_class.md, per_class.csv,
    pr_curve_iou50.png, pr_curve_iou50-95.png, confusion_matrix.png. Returns the evaluation.json content plus
    'per_class_markdown'."""
    evaluator = run_coco_eval(coco_gt, detections, image_ids, backend)
    stats = stats_dict(evaluator)
    rows = per_class_ap(evaluator, class_names, category_ids, detections)
    voc = voc_evaluate(coco_gt, detections, image_ids, iou_threshold=0.5)
    for row in rows:
        per_class = voc["per_class"].get(row["category_id"], {"ap_07": math.nan, "ap_area": math.nan})
        row["voc07_ap50"], row["voc_ap50"] = per_class["ap_07"], per_class["ap_area"]
    matrix = confusion_matrix(coco_gt, detections, category_ids, image_ids, confusion_iou, confusion_conf)
    result = {
        **(extra or {}),
        "evaluator": backend, "images": len(image_ids), "detections": len(detections),
        "coco": stats,
        "voc": {"map50_voc07_11point": voc["map_07"], "map50_area": voc["map_area"], "iou_threshold": 0.5},
        "per_class": rows,
        "confusion_matrix": {"iou_threshold": confusion_iou, "conf_threshold": confusion_conf,
                             "labels": [*class_names, "background"], "rows": "true", "columns": "predicted",
                             "matrix": matrix.tolist()},
    }
    markdown = to_markdown(rows)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "per_class.md").write_text(markdown)
        write_csv(rows, out_dir / "per_class.csv")
        files = ["evaluation.json", "per_class.md", "per_class.csv"]
        if plots:
            from detector.evaluation.plots import plot_confusion_matrix, plot_pr_curves

            files += [p.name for p in plot_pr_curves(evaluator, class_names, category_ids, out_dir)]
            files.append(plot_confusion_matrix(matrix, class_names, out_dir / "confusion_matrix.png").name)
        result["files"] = files
        (out_dir / "evaluation.json").write_text(json.dumps(json_safe(result), indent=2))
    return {**json_safe(result), "per_class_markdown": markdown}


def summary_lines(result: dict) -> list[str]:
    coco, voc = result["coco"], result["voc"]
    return [
        (f"COCO ({result['evaluator']}, {result['images']} images, {result['detections']} detections): "
         f"mAP50-95 {coco['map']:.4f}  mAP50 {coco['map_50']:.4f}  mAP75 {coco['map_75']:.4f}  "
         f"mAP S/M/L {coco['map_small']:.4f}/{coco['map_medium']:.4f}/{coco['map_large']:.4f}  "
         f"AR100 {coco['mar_100']:.4f}"),
        f"VOC AP50: 11-point (VOC07) {voc['map50_voc07_11point']:.4f}  area (VOC2010+) {voc['map50_area']:.4f}",
    ]
