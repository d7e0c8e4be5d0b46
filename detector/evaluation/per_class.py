"""Per-class AP from a finished COCOeval's `eval["precision"]` array, and its markdown / CSV tables.

`eval["precision"]` has shape (T, R, K, A, M): IoU thresholds 0.50:0.05:0.95, 101 recall points, categories
(in `params.catIds` order), area ranges (0 = all) and max-detection settings (-1 = 100); entries are -1 where
a category has no ground truth. pycocotools' AP is the mean over the entries that are not -1, so the mean of
the per-class APs (over classes with ground truth) is exactly the overall mAP.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

COLUMNS = ("class", "category_id", "gt", "detections", "ap", "ap50", "ap75", "voc07_ap50", "voc_ap50")
HEADERS = {"class": "class", "category_id": "id", "gt": "GT", "detections": "dets", "ap": "AP50-95", "ap50": "AP50",
           "ap75": "AP75", "voc07_ap50": "VOC07 AP50 (11-pt)", "voc_ap50": "VOC AP50 (area)"}


def _mean_valid(values: np.ndarray) -> float:
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else math.nan


def per_class_ap(evaluator, class_names: Sequence[str], category_ids: Sequence[int],
                 detections: Sequence[dict] = ()) -> list[dict]:
    """One row per class: AP (0.50:0.95), AP50, AP75 (area all, 100 detections), the number of non-crowd GT
    boxes in the evaluated images and of detections; AP is NaN for a class without ground truth."""
    precision = np.asarray(evaluator.eval["precision"])
    params = evaluator.params
    iou_thresholds = np.asarray(params.iouThrs)
    t50, t75 = int(np.argmin(np.abs(iou_thresholds - 0.5))), int(np.argmin(np.abs(iou_thresholds - 0.75)))
    area_all = list(params.areaRngLbl).index("all")
    cat_index = {int(c): k for k, c in enumerate(params.catIds)}
    image_ids = {int(i) for i in params.imgIds}
    gt_counts = Counter(
        int(a["category_id"]) for a in evaluator.cocoGt.dataset["annotations"]
        if int(a["image_id"]) in image_ids and not a.get("iscrowd", 0)
    )
    det_counts = Counter(int(d["category_id"]) for d in detections if int(d["image_id"]) in image_ids)
    rows = []
    for name, category_id in zip(class_names, category_ids):
        k = cat_index.get(int(category_id))
        p = precision[:, :, k, area_all, -1] if k is not None else np.full((1, 1), -1.0)
        rows.append({
            "class": name, "category_id": int(category_id), "gt": gt_counts[int(category_id)],
            "detections": det_counts[int(category_id)], "ap": _mean_valid(p),
            "ap50": _mean_valid(p[t50]) if k is not None else math.nan,
            "ap75": _mean_valid(p[t75]) if k is not None else math.nan,
        })
    return rows


def mean_row(rows: Sequence[dict]) -> dict:
    """The 'all' row: counts summed, metrics averaged over the classes that have a value."""
    out = {"class": "all", "category_id": "", "gt": sum(r["gt"] for r in rows),
           "detections": sum(r["detections"] for r in rows)}
    for key in COLUMNS[4:]:
        values = [r[key] for r in rows if key in r and not math.isnan(r[key])]
        out[key] = float(np.mean(values)) if values else math.nan
    return out


def _columns(rows: Sequence[dict]) -> list[str]:
    return [c for c in COLUMNS if any(c in r for r in rows)]


def _fmt(value) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def to_markdown(rows: Sequence[dict], with_mean: bool = True) -> str:
    columns = _columns(rows)
    table = [*rows, mean_row(rows)] if with_mean else list(rows)
    lines = ["| " + " | ".join(HEADERS[c] for c in columns) + " |",
             "|" + "|".join("---" if c == "class" else "---:" for c in columns) + "|"]
    lines += ["| " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |" for r in table]
    return "\n".join(lines) + "\n"


def write_csv(rows: Sequence[dict], path: str | Path, with_mean: bool = True) -> None:
    columns = _columns(rows)
    table = [*rows, mean_row(rows)] if with_mean else list(rows)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in table:
            writer.writerow({c: "" if isinstance(row.get(c), float) and math.isnan(row[c]) else row.get(c, "")
                             for c in columns})
