"""COCO json reader: images + instances json -> Records (categories mapped to 0..C-1 in id order).

`iscrowd` annotations become the records' crowd boxes (not trained on, iscrowd in the evaluation ground
truth). Malformed json or annotations raise ValueError naming the file and the line / annotation; boxes
outside the image or of zero area are left to the start-up check (`detector.data.checks`), which
clips/drops and counts them. An image entry without width/height gets them from the image file there.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np

from detector.data.dataset import Record

log = logging.getLogger(__name__)


def read_coco(image_dir: str | Path, annotation_file: str | Path) -> tuple[list[Record], list[str], list[int]]:
    """Returns records, class names and the COCO category id of each contiguous label."""
    image_dir, annotation_file = Path(image_dir), Path(annotation_file)
    try:
        data = json.loads(annotation_file.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{annotation_file}: malformed json at line {error.lineno}: {error.msg}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(data.get("categories"), list):
        raise ValueError(f"{annotation_file}: not a COCO detection file (needs 'images' and 'categories' lists)")
    try:
        categories = sorted(data["categories"], key=lambda c: c["id"])
        category_ids = [int(c["id"]) for c in categories]
        names = [str(c["name"]) for c in categories]
    except (KeyError, TypeError) as error:
        raise ValueError(f"{annotation_file}: every category needs an 'id' and a 'name' ({error!r})") from None
    if len(set(category_ids)) != len(category_ids):
        raise ValueError(f"{annotation_file}: duplicate category ids {category_ids}")
    label_of = {cid: label for label, cid in enumerate(category_ids)}
    image_ids = set()
    for k, image in enumerate(data["images"]):
        if not isinstance(image, dict) or "id" not in image or "file_name" not in image:
            raise ValueError(f"{annotation_file}: images[{k}] needs an 'id' and a 'file_name'")
        if image["id"] in image_ids:
            raise ValueError(f"{annotation_file}: images[{k}]: duplicate image id {image['id']}")
        image_ids.add(image["id"])
    records = _records_vectorized(data, image_dir, label_of, annotation_file)
    if records is None:  # something is malformed: the annotation-by-annotation reader names it
        records = _records_checked(data, image_dir, label_of, image_ids, category_ids, annotation_file)
    return records, names, category_ids


def _records_vectorized(data: dict, image_dir: Path, label_of: dict, annotation_file: Path) -> list[Record] | None:
    """The records, built with whole-array operations (COCO train2017's 860k boxes in about a second); None when
    any annotation is malformed (then `_records_checked` reports it)."""
    images, annotations = data["images"], data.get("annotations", [])
    index_of = {image["id"]: i for i, image in enumerate(images)}
    try:
        owner = np.array([index_of.get(ann.get("image_id"), -1) for ann in annotations], np.int64)
        labels = np.array([label_of.get(ann.get("category_id"), -1) for ann in annotations], np.int64)
        crowd = np.array([bool(ann.get("iscrowd", 0)) for ann in annotations], bool)
        bbox = np.array([ann.get("bbox") for ann in annotations], np.float64).reshape(-1, 4)
    except (AttributeError, TypeError, ValueError):
        return None
    if bbox.shape != (len(annotations), 4):  # e.g. [[x, y], [w, h]]
        return None
    known = owner >= 0
    if (labels[known] < 0).any() or not np.isfinite(bbox[known]).all():
        return None
    if not known.all():
        log.warning("%s: %d annotations refer to image ids that are not in 'images' (ignored)", annotation_file,
                    int((~known).sum()))
    xyxy = np.concatenate([bbox[:, :2], bbox[:, :2] + bbox[:, 2:]], 1).astype(np.float32)
    groups = []
    for selected in (known & ~crowd, known & crowd):  # per image, in file order (stable sort)
        index = np.flatnonzero(selected)
        index = index[np.argsort(owner[index], kind="stable")]
        counts = np.bincount(owner[index], minlength=len(images))
        groups.append((xyxy[index], labels[index], np.cumsum(counts) - counts, np.cumsum(counts)))
    (boxes, box_labels, starts, ends), (crowd_boxes, crowd_labels, crowd_starts, crowd_ends) = groups
    return [
        Record(
            image_path=image_dir / image["file_name"], image_id=int(image["id"]),
            width=int(image.get("width") or 0), height=int(image.get("height") or 0),
            boxes=boxes[a:b], labels=box_labels[a:b], crowd=crowd_boxes[c:d], crowd_labels=crowd_labels[c:d],
        )
        for image, a, b, c, d in zip(images, starts.tolist(), ends.tolist(), crowd_starts.tolist(), crowd_ends.tolist())
    ]


def _records_checked(data: dict, image_dir: Path, label_of: dict, image_ids: set, category_ids: list[int],
                     annotation_file: Path) -> list[Record]:
    """The records, annotation by annotation: a ValueError names the first malformed one."""
    per_image: dict[int, list[dict]] = {}
    orphans = 0
    for k, ann in enumerate(data.get("annotations", [])):
        if ann.get("image_id") not in image_ids:
            orphans += 1
            continue
        per_image.setdefault(ann["image_id"], []).append((k, ann))
    if orphans:
        log.warning("%s: %d annotations refer to image ids that are not in 'images' (ignored)", annotation_file, orphans)
    records = []
    for image in data["images"]:
        boxes, labels, crowd, crowd_labels = [], [], [], []
        for k, ann in per_image.get(image["id"], []):
            where = f"{annotation_file}: annotation {ann.get('id', f'#{k}')} (image {image['id']})"
            if ann.get("category_id") not in label_of:
                raise ValueError(f"{where} has unknown category_id {ann.get('category_id')} (known: {category_ids})")
            bbox = ann.get("bbox")
            if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
                raise ValueError(f"{where}: bbox must be [x, y, w, h], got {bbox!r}")
            try:
                x, y, w, h = (float(v) for v in bbox)
            except (TypeError, ValueError):
                raise ValueError(f"{where}: non-numeric bbox {bbox!r}") from None
            if not all(math.isfinite(v) for v in (x, y, w, h)):
                raise ValueError(f"{where}: non-finite bbox {bbox!r}")
            target = (crowd, crowd_labels) if ann.get("iscrowd", 0) else (boxes, labels)
            target[0].append([x, y, x + w, y + h])
            target[1].append(label_of[ann["category_id"]])
        records.append(Record(
            image_path=image_dir / image["file_name"], image_id=int(image["id"]),
            width=int(image.get("width") or 0), height=int(image.get("height") or 0),
            boxes=np.asarray(boxes, np.float32).reshape(-1, 4), labels=np.asarray(labels, np.int64),
            crowd=np.asarray(crowd, np.float32).reshape(-1, 4), crowd_labels=np.asarray(crowd_labels, np.int64),
        ))
    return records
