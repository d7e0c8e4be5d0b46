"""Start-up dataset check: what a reader returned -> the records that are safe to train on, plus a report.

Run by `DetectionDataModule.setup` on every split, and by `check_dataset` on the readers of a dataset (the
command `detector-check-dataset`, detector/cli.py, prints its summary). Per image:
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
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from detector.data.dataset import Record, read_image_size
from detector.data.formats.coco import read_coco
from detector.data.formats.voc import read_voc
from detector.data.formats.yolo import read_yolo

# a dataset split: () -> (records, class names, category id of each label)
Reader = Callable[[], tuple[list[Record], list[str], list[int]]]

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
    all_labels = np.concatenate([np.concatenate([r.labels.reshape(-1), r.crowd_labels.reshape(-1)]) for r in records])
    if ((all_labels < 0) | (all_labels >= len(class_names))).any():
        for record in records:
            for labels in (record.labels, record.crowd_labels):
                bad = (labels < 0) | (labels >= len(class_names))
                if bad.any():
                    raise DatasetError(f"[{name}] {record.image_path}: class id {int(labels[bad][0])} out of range 0..{len(class_names) - 1}")

    chunks = [records[i:i + 256] for i in range(0, len(records), 256)]  # a task per chunk: thread overhead per image is large
    with ThreadPoolExecutor(num_threads) as pool:
        sizes = [size for chunk in pool.map(lambda rs: [_probe(r, verify_images, decode) for r in rs], chunks) for size in chunk]
    shapes = [size if isinstance(size, tuple) else (r.width, r.height) for r, size in zip(records, sizes)]
    boxes, crowd = _BoxCheck(records, shapes, "boxes", "labels"), _BoxCheck(records, shapes, "crowd", "crowd_labels")
    clean, kept_labels = [], []
    for i, (record, size) in enumerate(zip(records, sizes)):
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
        record_boxes, labels = boxes.clean(i, record, size, report)
        record_crowd, crowd_labels = crowd.clean(i, record, size, None)
        record = dataclasses.replace(record, width=size[0], height=size[1], boxes=record_boxes, labels=labels,
                                     crowd=record_crowd, crowd_labels=crowd_labels)
        report.boxes += len(record_boxes)
        report.crowd_boxes += len(record_crowd)
        report.background_images += len(record_boxes) == 0
        kept_labels.append(labels)
        clean.append(record)
    if kept_labels:
        report.class_counts = np.bincount(np.concatenate(kept_labels), minlength=len(class_names)).tolist()

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


class _BoxCheck:
    """The geometric clean-up of every record's boxes (`boxes_attr`, `labels_attr`) at once, in whole arrays: boxes
    with non-finite coordinates, zero or negative area, or entirely outside the image are dropped, boxes partly outside
    are clipped; `clean` gives one record's result and counts and notes its problems in the report."""

    def __init__(self, records: Sequence[Record], shapes: Sequence[tuple[int, int]], boxes_attr: str, labels_attr: str) -> None:
        per_record = [getattr(r, boxes_attr).reshape(-1, 4) for r in records]
        counts = np.array([len(b) for b in per_record], np.int64)
        for record, boxes in zip(records, per_record):
            if len(boxes) != getattr(record, labels_attr).size:
                raise DatasetError(f"{record.image_path}: {len(boxes)} {boxes_attr} but {getattr(record, labels_attr).size} labels")
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).tolist()
        self.boxes = np.concatenate(per_record).astype(np.float32) if records else np.zeros((0, 4), np.float32)
        self.labels = np.concatenate([getattr(r, labels_attr).reshape(-1) for r in records]).astype(np.int64)
        sides = np.asarray(shapes, np.float32).reshape(-1, 2)
        limits = np.repeat(np.concatenate([sides, sides], 1), counts, 0)
        boxes = self.boxes
        self.finite = np.isfinite(boxes).all(1)
        self.degenerate = self.finite & ((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1]))
        self.clipped = np.clip(boxes, 0, limits)
        outside_by = np.maximum(np.maximum(-boxes, 0), np.maximum(boxes - limits, 0)).max(1, initial=0)
        empty_after_clip = (self.clipped[:, 2] <= self.clipped[:, 0]) | (self.clipped[:, 3] <= self.clipped[:, 1])
        self.outside = self.finite & ~self.degenerate & empty_after_clip
        self.was_clipped = self.finite & ~self.degenerate & ~self.outside & (outside_by > CLIP_TOLERANCE)
        self.keep = self.finite & ~self.degenerate & ~self.outside
        self.problem = ~self.keep | self.was_clipped

    def clean(self, index: int, record: Record, size: tuple[int, int], report: DatasetReport | None) -> tuple[np.ndarray, np.ndarray]:
        """Record `index`'s kept boxes and labels; `size` is its image's (width, height) (it must be the one given
        for it to the constructor)."""
        a, b = self.offsets[index], self.offsets[index + 1]
        keep = self.keep[a:b]
        if report is not None and self.problem[a:b].any():
            boxes, finite, degenerate = self.boxes[a:b], ~self.finite[a:b], self.degenerate[a:b]
            outside, was_clipped = self.outside[a:b], self.was_clipped[a:b]
            report.boxes_nonfinite += int(finite.sum())
            report.boxes_degenerate += int(degenerate.sum())
            report.boxes_outside += int(outside.sum())
            report.boxes_clipped += int(was_clipped.sum())
            for mask, what in ((finite, "non-finite"), (degenerate, "zero/negative area"), (outside, "outside the image"),
                               (was_clipped, "clipped to the image")):
                for i in np.flatnonzero(mask)[:2]:
                    report.note(f"{record.image_path}: box {i} {np.round(boxes[i], 2).tolist()} ({size[0]}x{size[1]}) {what}")
        return self.clipped[a:b][keep], self.labels[a:b][keep]


@dataclass
class SplitCheck:
    """One split of `check_dataset`: its clean records and report, or the error that made it unusable."""

    name: str
    records: list[Record] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    report: DatasetReport | None = None
    error: str | None = None
    seconds: float = 0.0


@dataclass
class DatasetCheck:
    splits: list[SplitCheck]

    @property
    def class_names(self) -> list[str]:
        return next((s.class_names for s in self.splits if s.error is None), [])

    @property
    def usable(self) -> bool:
        names = {tuple(s.class_names) for s in self.splits if s.error is None}
        return all(s.error is None for s in self.splits) and len(names) == 1

    def summary(self, per_class: bool = False) -> str:
        """Each split's report (or error), then whether the splits agree on the class names, and the names."""
        lines = []
        for split in self.splits:
            if split.error is not None:
                lines.append(f"[{split.name}] ERROR: {split.error}")
            else:
                lines.append(split.report.summary(per_class=per_class) + f"\n[{split.name}] checked in {split.seconds:.1f} s")
        seen = {s.name: s.class_names for s in self.splits if s.error is None}
        if len({tuple(n) for n in seen.values()}) > 1:
            lines.append(f"ERROR: the splits have different class names: {seen}")
        if seen:
            names = self.class_names
            lines.append(f"{len(names)} classes: {', '.join(names[:20])}{' ...' if len(names) > 20 else ''}")
        return "\n".join(lines)


def check_dataset(readers: Mapping[str, Reader], num_classes: int | None = None, max_bad_fraction: float = 0.05,
                  decode: bool = False) -> DatasetCheck:
    """Read and check every split ({name: reader}); a split that cannot be read or used (`num_classes` given and
    different, too many bad images, bad labels) carries its error instead of raising."""
    splits = []
    for name, reader in readers.items():
        start = time.perf_counter()
        try:
            records, names, _ = reader()
            if num_classes is not None and len(names) != num_classes:
                raise ValueError(f"data.num_classes={num_classes} but the dataset has {len(names)} classes")
            clean, report = check_records(records, names, name=name, max_bad_fraction=max_bad_fraction, decode=decode)
        except (ValueError, OSError) as error:
            splits.append(SplitCheck(name, error=str(error)))
            continue
        splits.append(SplitCheck(name, clean, list(names), report, seconds=time.perf_counter() - start))
    return DatasetCheck(splits)


def file_readers(format: str, path: str | Path, images: str | Path | None = None, splits: Sequence[str] | None = None,
                 classes: Sequence[str] | str | None = None) -> dict[str, Reader]:
    """{split: reader} of annotation files read directly. yolo: `path` is data.yaml, `splits` its keys (default
    train, val); coco: `path` is the json, `images` the image folder (one split, named after the json); voc: `path`
    the VOCdevkit or dataset folder, `splits` [YEAR/]SPLIT names (default train, val), `classes` the class names, a
    names file or "collect" (default: the 20 VOC classes). ValueError for a missing argument or unknown format."""
    if format == "yolo":
        return {split: partial(read_yolo, path, split) for split in splits or ["train", "val"]}
    if format == "coco":
        if images is None:
            raise ValueError("the image folder is required with the coco format (--images)")
        return {Path(path).stem: partial(read_coco, images, path)}
    if format == "voc":
        readers = {}
        for split in splits or ["train", "val"]:
            year, _, name = split.rpartition("/")
            readers[split] = partial(read_voc, path, [[year or ".", name]], class_names=classes)
        return readers
    raise ValueError(f"unknown annotation format {format!r}: choose yolo, coco or voc")
