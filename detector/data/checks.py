"""Start-up dataset check: what a reader returned -> the records that are safe to train on, plus a report.

Run by `DetectionDataModule.setup` on every split and by `scripts/check_dataset.py`. Per image:
- missing or unreadable image file (header read; `decode=True` decodes fully): the image is skipped and
  counted; more than `max_bad_fraction` of such images stops the run with `DatasetError`;
- width/height unknown (0) are filled in from the file; a size that differs from the annotation is
  replaced by the real one (counted, warned: the boxes may not fit that image);
- no boxes: a valid background image (counted);
- per box: non-finite coordinates -> dropped; zero or negative width/height -> dropped; partly outside
  the image -> clipped to it; entirely outside -> dropped (each counted); labels outside 0..C-1 ->
  `DatasetError` naming the image (the readers already name the file and line/object).
Crowd / ignore regions get the same geometric clean-up, silently.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np

from detector.data.dataset import Record, read_image_size

# boxes sticking out of the image by at most this many pixels are clipped silently (float noise)
CLIP_TOLERANCE = 0.5


class DatasetError(ValueError):
    """The dataset cannot be used as it is (too many bad images, bad labels, duplicate ids, ...)."""


@dataclass
class DatasetReport:
    name: str
    class_names: list[str]
    images: int = 0  # images the reader listed
    missing_images: list[str] = field(default_factory=list)
    unreadable_images: list[str] = field(default_factory=list)
    resized_images: list[str] = field(default_factory=list)  # annotated size != real size
    background_images: int = 0
    boxes: int = 0  # kept training boxes
    crowd_boxes: int = 0
    boxes_nonfinite: int = 0
    boxes_degenerate: int = 0
    boxes_clipped: int = 0
    boxes_outside: int = 0
    class_counts: list[int] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)  # the first problems, one line each

    MAX_EXAMPLES = 20

    @property
    def bad_images(self) -> int:
        return len(self.missing_images) + len(self.unreadable_images)

    @property
    def usable_images(self) -> int:
        return self.images - self.bad_images

    @property
    def problems(self) -> int:
        return (self.bad_images + len(self.resized_images) + self.boxes_nonfinite + self.boxes_degenerate
                + self.boxes_clipped + self.boxes_outside)

    def note(self, message: str) -> None:
        if len(self.examples) < self.MAX_EXAMPLES:
            self.examples.append(message)

    def summary(self, per_class: bool = False) -> str:
        present = sum(c > 0 for c in self.class_counts)
        lines = [(
            f"[{self.name}] {self.usable_images}/{self.images} images usable, {self.boxes} boxes"
            f" ({self.crowd_boxes} crowd/ignore), {present}/{len(self.class_names)} classes present,"
            f" {self.background_images} background images (no boxes)"
        )]
        problems = {
            "missing images (skipped)": len(self.missing_images),
            "unreadable images (skipped)": len(self.unreadable_images),
            "images whose size differs from the annotation (real size used)": len(self.resized_images),
            "boxes with non-finite coordinates (dropped)": self.boxes_nonfinite,
            "boxes with zero or negative area (dropped)": self.boxes_degenerate,
            "boxes partly outside the image (clipped)": self.boxes_clipped,
            "boxes entirely outside the image (dropped)": self.boxes_outside,
        }
        found = {k: v for k, v in problems.items() if v}
        lines.append(f"[{self.name}] problems: " + (", ".join(f"{v} {k}" for k, v in found.items()) if found else "none"))
        lines += [f"[{self.name}]   {example}" for example in self.examples]
        if per_class:
            width = max((len(n) for n in self.class_names), default=4)
            lines += [f"[{self.name}]   {i:3d} {n:<{width}} {c}" for i, (n, c) in enumerate(zip(self.class_names, self.class_counts))]
        return "\n".join(lines)


def check_records(
    records: Sequence[Record], class_names: Sequence[str], name: str = "dataset", max_bad_fraction: float = 0.05,
    verify_images: bool = True, decode: bool = False, num_threads: int = 8,
) -> tuple[list[Record], DatasetReport]:
    """Clean records (bad images skipped, boxes clipped/dropped) and the report; DatasetError when unusable."""
    report = DatasetReport(name, list(class_names), images=len(records), class_counts=[0] * len(class_names))
    if not records:
        raise DatasetError(f"[{name}] the reader found no images")
    ids = [r.image_id for r in records]
    if len(set(ids)) != len(ids):
        seen, duplicate = set(), None
        for record in records:
            if record.image_id in seen:
                duplicate = record
                break
            seen.add(record.image_id)
        raise DatasetError(f"[{name}] duplicate image id {duplicate.image_id} (e.g. {duplicate.image_path})")
    for record in records:
        for labels in (record.labels, record.crowd_labels):
            bad = (labels < 0) | (labels >= len(class_names))
            if bad.any():
                raise DatasetError(f"[{name}] {record.image_path}: class id {int(labels[bad][0])} out of range 0..{len(class_names) - 1}")

    with ThreadPoolExecutor(num_threads) as pool:
        sizes = list(pool.map(lambda r: _probe(r, verify_images, decode), records, chunksize=32))
    clean = []
    for record, size in zip(records, sizes):
        if size == "missing":
            report.missing_images.append(str(record.image_path))
            report.note(f"missing image: {record.image_path}")
            continue
        if size is None:
            report.unreadable_images.append(str(record.image_path))
            report.note(f"unreadable image: {record.image_path}")
            continue
        if size != (record.width, record.height):
            if record.width > 0 and record.height > 0:
                report.resized_images.append(str(record.image_path))
                report.note(f"{record.image_path}: annotated size {record.width}x{record.height}, real size {size[0]}x{size[1]}")
            record = dataclasses.replace(record, width=size[0], height=size[1])
        boxes, labels = _clean_boxes(record, record.boxes, record.labels, report)
        crowd, crowd_labels = _clean_boxes(record, record.crowd, record.crowd_labels, None)
        record = dataclasses.replace(record, boxes=boxes, labels=labels, crowd=crowd, crowd_labels=crowd_labels)
        report.boxes += len(boxes)
        report.crowd_boxes += len(crowd)
        report.background_images += len(boxes) == 0
        for label in labels.tolist():
            report.class_counts[label] += 1
        clean.append(record)

    if report.bad_images > max_bad_fraction * report.images or not clean:
        raise DatasetError(
            f"[{name}] {report.bad_images} of {report.images} images are missing or unreadable "
            f"({report.bad_images / report.images:.1%} > max_bad_fraction={max_bad_fraction:.1%}); first ones: "
            + "; ".join((report.missing_images + report.unreadable_images)[:5])
            + ". Fix the paths/files or raise data.max_bad_fraction."
        )
    return clean, report


def _probe(record: Record, verify_images: bool, decode: bool) -> tuple[int, int] | str | None:
    """(width, height) of the image; "missing"; or None when unreadable. Without `verify_images` only the
    existence is checked (sizes still read when the record does not know them)."""
    path = record.image_path
    if not path.is_file():
        return "missing"
    if decode:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        return None if image is None else (image.shape[1], image.shape[0])
    if verify_images or record.width <= 0 or record.height <= 0:
        return read_image_size(path)
    return record.width, record.height


def _clean_boxes(record: Record, boxes: np.ndarray, labels: np.ndarray, report: DatasetReport | None) -> tuple[np.ndarray, np.ndarray]:
    boxes, labels = boxes.reshape(-1, 4).astype(np.float32), labels.reshape(-1).astype(np.int64)
    if len(boxes) == 0:
        return boxes, labels
    finite = np.isfinite(boxes).all(1)
    degenerate = finite & ((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1]))
    limits = np.array([record.width, record.height, record.width, record.height], np.float32)
    clipped = np.clip(boxes, 0, limits)
    outside_by = np.maximum(np.maximum(-boxes, 0), np.maximum(boxes - limits, 0)).max(1)
    empty_after_clip = (clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1])
    outside = finite & ~degenerate & empty_after_clip
    was_clipped = finite & ~degenerate & ~outside & (outside_by > CLIP_TOLERANCE)
    keep = finite & ~degenerate & ~outside
    if report is not None:
        report.boxes_nonfinite += int((~finite).sum())
        report.boxes_degenerate += int(degenerate.sum())
        report.boxes_outside += int(outside.sum())
        report.boxes_clipped += int(was_clipped.sum())
        for mask, what in ((~finite, "non-finite"), (degenerate, "zero/negative area"), (outside, "outside the image"),
                           (was_clipped, "clipped to the image")):
            for i in np.flatnonzero(mask)[:2]:
                report.note(f"{record.image_path}: box {i} {np.round(boxes[i], 2).tolist()} ({record.width}x{record.height}) {what}")
    return clipped[keep], labels[keep]

