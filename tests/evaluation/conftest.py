"""Helpers for the evaluation tests: a pycocotools COCO ground truth and COCO results from hand-written boxes."""

from __future__ import annotations

import contextlib
import io

import pytest
from pycocotools.coco import COCO

CATEGORY_IDS = [3, 7]  # label 0 -> COCO id 3, label 1 -> COCO id 7
CLASS_NAMES = ["cat", "dog"]


def make_coco(boxes_per_image: dict, category_ids=CATEGORY_IDS, size: int = 200) -> COCO:
    """{image_id: [(x1, y1, x2, y2, label[, iscrowd]), ...]} -> COCO ground truth (images size x size)."""
    images, annotations = [], []
    for image_id, boxes in boxes_per_image.items():
        images.append({"id": image_id, "width": size, "height": size, "file_name": f"{image_id}.jpg"})
        for x1, y1, x2, y2, label, *crowd in boxes:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category_ids[label],
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                                "iscrowd": int(crowd[0]) if crowd else 0})
    coco = COCO()
    coco.dataset = {"images": images, "annotations": annotations,
                    "categories": [{"id": c, "name": f"c{c}"} for c in category_ids]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def make_results(detections_per_image: dict, category_ids=CATEGORY_IDS) -> list[dict]:
    """{image_id: [(x1, y1, x2, y2, score, label), ...]} -> COCO results list."""
    return [{"image_id": image_id, "category_id": category_ids[label], "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score}
            for image_id, detections in detections_per_image.items() for x1, y1, x2, y2, score, label in detections]


@pytest.fixture
def coco_helpers():
    return make_coco, make_results
