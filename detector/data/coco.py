"""COCO json reader: images + instances json -> Records (categories mapped to 0..C-1 in id order)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from detector.data.dataset import Record


def read_coco(image_dir: str | Path, annotation_file: str | Path) -> tuple[list[Record], list[str], list[int]]:
    """Returns records, class names and the COCO category id of each contiguous label."""
    image_dir, annotation_file = Path(image_dir), Path(annotation_file)
    try:
        data = json.loads(annotation_file.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{annotation_file}: malformed json at line {error.lineno}: {error.msg}") from None
    categories = sorted(data["categories"], key=lambda c: c["id"])
    category_ids = [c["id"] for c in categories]
    label_of = {cid: label for label, cid in enumerate(category_ids)}
    per_image: dict[int, list[dict]] = {}
    for ann in data.get("annotations", []):
        per_image.setdefault(ann["image_id"], []).append(ann)
    records = []
    for image in data["images"]:
        boxes, labels, crowd, crowd_labels = [], [], [], []
        for ann in per_image.get(image["id"], []):
            if ann["category_id"] not in label_of:
                raise ValueError(f"{annotation_file}: annotation {ann.get('id')} has unknown category_id {ann['category_id']}")
            x, y, w, h = ann["bbox"]
            target = (crowd, crowd_labels) if ann.get("iscrowd", 0) else (boxes, labels)
            target[0].append([x, y, x + w, y + h])
            target[1].append(label_of[ann["category_id"]])
        records.append(Record(
            image_path=image_dir / image["file_name"], image_id=int(image["id"]),
            width=int(image["width"]), height=int(image["height"]),
            boxes=np.asarray(boxes, np.float32).reshape(-1, 4), labels=np.asarray(labels, np.int64),
            crowd=np.asarray(crowd, np.float32).reshape(-1, 4), crowd_labels=np.asarray(crowd_labels, np.int64),
        ))
    return records, [c["name"] for c in categories], category_ids
