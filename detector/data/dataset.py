"""The internal sample every reader produces, and the torch Dataset that serves it.

A reader turns a dataset on disk into `Record`s (image path, xyxy pixel boxes, labels, image id,
original size); `DetectionDataset` loads, augments and letterboxes them, and builds the COCO-format
ground truth that the evaluator uses, whatever the format on disk was.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
from pycocotools.coco import COCO
from torch.utils.data import Dataset

from detector.data.transforms import build_pipeline, letterbox_scale


@dataclass
class Record:
    """One image: boxes (N, 4) float32 xyxy pixels, labels (N,) int64 in 0..C-1; `crowd` boxes
    (K, 4) with `crowd_labels` are ignored in training and marked iscrowd for evaluation."""

    image_path: Path
    image_id: int
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    crowd: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    crowd_labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))


def read_image(path: Path) -> np.ndarray:
    """RGB uint8 image; a clear error when the file is missing or not an image."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"cannot read image {path} (missing or not a decodable image)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class DetectionDataset(Dataset):
    """Serves dict(image uint8 (3, S, S), boxes (N, 4) input pixels, labels (N,), image_id,
    orig_size (h, w), scale (sx, sy)) with the letterbox inverse given by `scale`."""

    def __init__(
        self, records: Sequence[Record], class_names: Sequence[str], image_size: int,
        augmentations: Sequence[A.BasicTransform] = (), category_ids: Sequence[int] | None = None,
        min_visibility: float = 0.0, min_area: float = 1.0,
    ) -> None:
        self.records = list(records)
        self.class_names = list(class_names)
        self.category_ids = list(category_ids) if category_ids is not None else list(range(1, len(class_names) + 1))
        self.image_size = image_size
        self.pipeline = build_pipeline(image_size, augmentations, min_visibility, min_area)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        image = read_image(record.image_path)
        out = self.pipeline(image=image, bboxes=record.boxes.reshape(-1, 4), labels=record.labels)
        boxes = np.asarray(out["bboxes"], np.float32).reshape(-1, 4)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(out["image"].transpose(2, 0, 1))),
            "boxes": torch.from_numpy(boxes),
            "labels": torch.as_tensor(np.asarray(out["labels"], np.int64)),
            "image_id": record.image_id,
            "orig_size": (record.height, record.width),
            "scale": letterbox_scale(record.height, record.width, self.image_size),
        }

    def coco_ground_truth(self) -> COCO:
        """The ground truth as a pycocotools COCO object (category ids = `self.category_ids`)."""
        images, annotations = [], []
        for record in self.records:
            images.append({"id": record.image_id, "width": record.width, "height": record.height, "file_name": record.image_path.name})
            for boxes, labels, crowd in ((record.boxes, record.labels, 0), (record.crowd, record.crowd_labels, 1)):
                for (x1, y1, x2, y2), label in zip(boxes.tolist(), labels.tolist()):
                    annotations.append({
                        "id": len(annotations) + 1, "image_id": record.image_id, "category_id": self.category_ids[label],
                        "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": crowd,
                    })
        coco = COCO()
        coco.dataset = {
            "images": images, "annotations": annotations,
            "categories": [{"id": cid, "name": name} for cid, name in zip(self.category_ids, self.class_names)],
        }
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
        return coco


def collate(samples: list[dict]) -> dict:
    """Stack images; pad boxes/labels to the largest GT count: labels (B, M), boxes (B, M, 4), mask (B, M)."""
    batch = len(samples)
    max_gt = max((len(s["labels"]) for s in samples), default=0)
    labels = torch.zeros(batch, max_gt, dtype=torch.long)
    boxes = torch.zeros(batch, max_gt, 4)
    mask = torch.zeros(batch, max_gt, dtype=torch.bool)
    for i, sample in enumerate(samples):
        n = len(sample["labels"])
        labels[i, :n], boxes[i, :n], mask[i, :n] = sample["labels"], sample["boxes"], True
    return {
        "images": torch.stack([s["image"] for s in samples]),
        "labels": labels, "boxes": boxes, "mask": mask,
        "image_ids": [s["image_id"] for s in samples],
        "orig_sizes": [s["orig_size"] for s in samples],
        "scales": [s["scale"] for s in samples],
    }
