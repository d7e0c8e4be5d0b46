"""The internal sample every reader produces, and the torch Dataset that serves it.

A reader turns a dataset on disk into `Record`s (image path, xyxy pixel boxes, labels, image id,
original size); `DetectionDataset` loads, augments and letterboxes them, and builds the COCO-format
ground truth that the evaluator uses, whatever the format on disk was.

Loading resizes each image so that its longest side is the network size (the first step of the
letterbox, done once at load time, exactly as the letterbox would do it); augmentations therefore see
images at network scale, which keeps them cheap for large photos and lets `cache_images` keep the
decoded, resized images in RAM or on disk (`detector.data.image_cache`). Validation output is bit-identical to letterboxing the original image.
"""

from __future__ import annotations

import contextlib
import io
import random
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
from pycocotools.coco import COCO
from torch.utils.data import Dataset, default_collate

from detector.data.image_cache import DiskCache, RamCache, cache_mode, default_cache_dir
from detector.data.mosaic import compose_mosaic
from detector.data.transforms import PAD_VALUE, build_pipeline, letterbox_scale


@dataclass
class Record:
    """One image: boxes (N, 4) float32 xyxy pixels, labels (N,) int64 in 0..C-1; `crowd` boxes
    (K, 4) with `crowd_labels` are ignored in training and marked iscrowd for evaluation.
    width/height 0 mean "unknown" (the start-up check fills them in from the image file)."""

    image_path: Path
    image_id: int
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    crowd: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    crowd_labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))


# image files the readers take (lower case; compare with `path.suffix.lower()`): folders are listed with these by the
# YOLO reader and by prediction, and the VOC reader looks for <id>.<suffix> (either case) when <id>.jpg is absent
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".dng", ".mpo", ".pfm")


def read_image(path: Path) -> np.ndarray:
    """RGB uint8 image; a clear error when the file is missing or not an image."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"cannot read image {path} (missing or not a decodable image)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) of the image as `read_image` will decode it (EXIF rotations 5-8 swap the sides,
    as OpenCV applies them), read from the file header only; None when missing or not an image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(0x0112) if image.format in ("JPEG", "MPO", "TIFF", "WEBP") else None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
        return None
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return (width, height) if width > 0 and height > 0 else None


def image_ids_from_stems(paths: Sequence[Path]) -> list[int]:
    """COCO image ids: the integer file stems when every stem is all digits and they are unique (COCO,
    VOC2007, most YOLO exports), else 1..N in the given (deterministic) order, so ids never collide."""
    stems = [Path(p).stem for p in paths]
    if stems and all(s.isdigit() for s in stems):
        ids = [int(s) for s in stems]
        if len(set(ids)) == len(ids):
            return ids
    return list(range(1, len(stems) + 1))


def letterbox_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """(height, width) of an image of this size after the first step of the letterbox."""
    sx, sy = letterbox_scale(height, width, size)
    return max(1, round(height * sy)), max(1, round(width * sx))


def resize_to_letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, tuple[float, float]]:
    """First step of the letterbox (longest side -> `size`, aspect kept), exactly as albumentations'
    LongestMaxSize does it; returns the image and the per-axis factors (sx, sy)."""
    height, width = image.shape[:2]
    sx, sy = letterbox_scale(height, width, size)
    new_h, new_w = letterbox_shape(height, width, size)
    if (new_w, new_h) != (width, height):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return image, (sx, sy)


class DetectionDataset(Dataset):
    """Serves dict(image uint8 (3, S, S), boxes (N, 4) input pixels, labels (N,), image_id,
    orig_size (h, w), scale (sx, sy)) with the letterbox inverse given by `scale`.

    mosaic_prob: probability that a training sample is a 2x2 mosaic of itself and 3 random other images
        (`detector.data.mosaic.compose_mosaic`: albumentations' `A.Mosaic`, composed from the loaded images), before
        `augmentations`, with its centre drawn in `mosaic_center_range` (fractions of the valid range);
        `set_mosaic(False)` turns it off in every DataLoader worker (see `detector.training.callbacks.CloseMosaic`).
    cache_images: "ram" (or true), "disk" or false: decode and resize every image once, up front, and keep it in one
        block of RAM shared by the DataLoader workers, or as a .npy file per image under `cache_dir` (default
        `~/.cache/detector/images`); see `detector.data.image_cache`. cache_max_gb: the largest RAM cache allowed.
    min_box_size: boxes thinner than this (px, either side) after augmentation are dropped (slivers left at
        crop/mosaic edges; they carry no object and upset aspect-ratio losses).
    substitute_bad_images: an image that fails to decode in `__getitem__` is replaced by another random
        sample (training); when False, a grey image with the same image id and no boxes is served instead
        (validation, so that every image id is still evaluated once). Either way it is counted in
        `load_failures` and warned about, and training goes on.
    """

    MAX_LOAD_ATTEMPTS = 20

    def __init__(
        self, records: Sequence[Record], class_names: Sequence[str], image_size: int,
        augmentations: Sequence[A.BasicTransform] = (), category_ids: Sequence[int] | None = None,
        min_visibility: float = 0.0, min_area: float = 1.0, mosaic_prob: float = 0.0,
        cache_images: bool | str = False, substitute_bad_images: bool = True,
        mosaic_center_range: tuple[float, float] = (0.25, 0.75), min_box_size: float = 1.0, seed: int = 0,
        cache_max_gb: float = 16.0, cache_dir: str | Path | None = None, name: str = "dataset",
    ) -> None:
        self.records = list(records)
        unsized = [r.image_path for r in self.records if r.width <= 0 or r.height <= 0]
        if unsized:
            raise ValueError(
                f"{len(unsized)} records have no image size (e.g. {unsized[0]}); run detector.data.checks.check_records "
                "on the reader's output first (DetectionDataModule does)"
            )
        self.class_names = list(class_names)
        self.category_ids = list(category_ids) if category_ids is not None else list(range(1, len(class_names) + 1))
        self.image_size = image_size
        self.pipeline = build_pipeline(image_size, augmentations, min_visibility, min_area, min_box_size)
        self.mosaic_prob = float(mosaic_prob)
        self.mosaic_center_range = tuple(mosaic_center_range)
        self.min_area, self.min_box_size = min_area, min_box_size
        # the augmentations of mosaic samples (their own random stream, which the mosaic also draws from); the
        # mosaic is already square, so the letterbox runs only after a crop changed its size (`_mosaic_sample`)
        self.mosaic_pipeline = (
            build_pipeline(image_size, augmentations, min_visibility, min_area, min_box_size,
                           with_letterbox=not augmentations)  # (a Compose without transforms would warn)
            if self.mosaic_prob > 0 and len(self.records) > 1 else None
        )
        self.letterbox = build_pipeline(image_size, (), min_visibility, min_area, min_box_size)
        self.substitute_bad_images = substitute_bad_images
        # shared-memory flags/counters: seen and updated by every DataLoader worker, persistent or not
        self._mosaic_on = torch.ones((), dtype=torch.bool).share_memory_()
        self._mosaic_until = torch.full((), 2**62, dtype=torch.int64).share_memory_()  # first epoch without mosaic
        self._load_failures = torch.zeros((), dtype=torch.int64).share_memory_()
        self._rng = random.Random()
        self._bad: set[int] = set()  # indices that failed to load (in this process)
        self.base_seed = seed
        self._cache: RamCache | DiskCache | None = None
        mode = cache_mode(cache_images)
        if mode is not None:
            self.cache_images(mode, cache_max_gb, cache_dir, name)

    # ----------------------------------------------------------------- state shared with the workers
    @property
    def mosaic_enabled(self) -> bool:
        return self.mosaic_pipeline is not None and bool(self._mosaic_on)

    def set_mosaic(self, enabled: bool) -> None:
        """Turn mosaic on/off; takes effect in running (also persistent) DataLoader workers."""
        self._mosaic_on.fill_(bool(enabled))

    def close_mosaic_at(self, epoch: int) -> None:
        """No mosaic for the samples of epoch `epoch` and later (the epoch of an `EpochSampler` key): decided per
        sample, so it holds for batches that workers prefetched before the epoch started."""
        self._mosaic_until.fill_(int(epoch))

    def mosaic_wanted(self, epoch: int) -> bool:
        """Whether samples of `epoch` may be mosaics."""
        return self.mosaic_enabled and epoch < int(self._mosaic_until)

    @property
    def load_failures(self) -> int:
        """How many times an image failed to load in `__getitem__` (all workers together)."""
        return int(self._load_failures)

    # ----------------------------------------------------------------- loading
    def cache_images(self, mode: str = "ram", max_gb: float = 16.0, cache_dir: str | Path | None = None,
                     name: str = "dataset") -> None:
        """Decode and resize every image once and keep it in RAM ("ram") or as .npy files ("disk"); call before the
        DataLoader workers start. ValueError when it would not fit (the message names the alternatives)."""
        shapes = [letterbox_shape(r.height, r.width, self.image_size) for r in self.records]
        if mode == "ram":
            self._cache = RamCache(shapes, self._read, max_gb, name)
        else:
            folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
            self._cache = DiskCache([r.image_path for r in self.records], shapes, self._read,
                                    folder / f"{self.image_size}px", name)

    @property
    def cache_bytes(self) -> int:
        """Bytes the image cache holds (RAM, or the .npy files on disk); 0 without one."""
        return self._cache.nbytes if self._cache is not None else 0

    def _read(self, index: int) -> np.ndarray:
        """The image resized for the letterbox (longest side = image_size); raises OSError when unreadable."""
        record = self.records[index]
        image = read_image(record.image_path)
        if image.shape[:2] != (record.height, record.width) and record.width > 0 and record.height > 0:
            warnings.warn(
                f"{record.image_path}: decoded size {image.shape[1]}x{image.shape[0]} differs from the annotated "
                f"{record.width}x{record.height}; resizing the image to the annotated size", RuntimeWarning, stacklevel=2,
            )
            image = cv2.resize(image, (record.width, record.height), interpolation=cv2.INTER_LINEAR)
        return resize_to_letterbox(image, self.image_size)[0]

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(image at network scale, its boxes, labels); OSError when the image cannot be read. The image may be the
        RAM cache's own array, read-only."""
        record = self.records[index]
        image = self._cache.get(index) if self._cache is not None else None
        if image is None:  # no cache, or not in it (it failed to load when caching: this raises again)
            image = self._read(index)
        sx, sy = letterbox_scale(record.height, record.width, self.image_size)
        boxes = record.boxes.reshape(-1, 4).astype(np.float32) * np.array([sx, sy, sx, sy], np.float32)
        return image, boxes, record.labels.astype(np.int64)

    def _other_index(self) -> int:
        """A random index, avoiding the ones that already failed to load in this process."""
        for _ in range(100):
            index = self._rng.randrange(len(self))
            if index not in self._bad:
                return index
        return index

    def _note_failure(self, index: int, error: Exception, action: str) -> None:
        self._bad.add(index)
        self._load_failures += 1
        warnings.warn(f"{error}; {action} (counted in DetectionDataset.load_failures)", RuntimeWarning, stacklevel=3)

    def seed(self, seed: int) -> None:
        """Set the base seed. Sample `index` of epoch `epoch` draws its augmentations, mosaic partners and
        substitutes from a stream seeded by (seed, epoch, index): reproducible whatever the workers."""
        self.base_seed = seed

    def _seed_sample(self, index: int, epoch: int) -> None:
        seed = int(np.random.SeedSequence([self.base_seed, epoch, index]).generate_state(1)[0])
        self._rng.seed(seed)
        for offset, pipeline in enumerate((self.pipeline, self.mosaic_pipeline)):
            if pipeline is not None:
                pipeline.set_random_state(np.random.default_rng(seed + offset), random.Random(seed + offset))

    # ----------------------------------------------------------------- samples
    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        """`key` is an index, or (index, epoch) as `EpochSampler` yields it (epoch 0 otherwise)."""
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        self._seed_sample(index, epoch)
        for _attempt in range(self.MAX_LOAD_ATTEMPTS):
            try:
                image, boxes, labels = self._load(index)
            except OSError as error:
                if not self.substitute_bad_images:
                    self._note_failure(index, error, "serving a blank image without boxes")
                    return self._sample(index, np.full((1, 1, 3), PAD_VALUE, np.uint8), np.zeros((0, 4), np.float32),
                                        np.zeros(0, np.int64))
                self._note_failure(index, error, "substituting another sample")
                index = self._other_index()
                continue
            if self.mosaic_wanted(epoch) and self._rng.random() < self.mosaic_prob:
                return self._mosaic_sample(index, image, boxes, labels)
            return self._sample(index, image, boxes, labels)
        raise RuntimeError(f"{self.MAX_LOAD_ATTEMPTS} images in a row failed to load; is the dataset readable?")

    def _sample(self, index: int, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray) -> dict:
        if not image.flags.writeable:  # the RAM cache's array: the augmentations get their own
            image = image.copy()
        out = self.pipeline(image=image, bboxes=boxes, labels=labels)
        return self._output(index, out)

    def _mosaic_sample(self, index: int, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray) -> dict:
        items = [(image, boxes, labels)]
        for _attempt in range(2 * 3):
            if len(items) == 4:
                break
            other = self._other_index()
            try:
                items.append(self._load(other))
            except OSError as error:
                self._note_failure(other, error, "using another image in the mosaic")
        rng = self.mosaic_pipeline.py_random
        rng.random()  # the draw of an albumentations Compose call: the random stream stays that of Compose([A.Mosaic, ...])
        image, boxes, labels = compose_mosaic(items, self.image_size, self.mosaic_center_range, rng, PAD_VALUE,
                                              self.min_area, self.min_box_size)
        out = self.mosaic_pipeline(image=image, bboxes=boxes, labels=labels, force_apply=True)
        if out["image"].shape[:2] != (self.image_size, self.image_size):
            out = self.letterbox(image=out["image"], bboxes=out["bboxes"], labels=out["labels"])
        return self._output(index, out)

    def _output(self, index: int, out: dict) -> dict:
        record = self.records[index]
        boxes = np.asarray(out["bboxes"], np.float32).reshape(-1, 4)
        return {
            "image": channels_first(out["image"]),
            "boxes": torch.from_numpy(boxes),
            "labels": torch.as_tensor(np.asarray(out["labels"], np.int64).reshape(-1)),
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


def channels_first(image: np.ndarray) -> torch.Tensor:
    """(H, W, C) uint8 -> a contiguous (C, H, W) tensor, each channel copied by `cv2.split` into its plane (a
    quarter of the time of a transposed copy)."""
    out = torch.empty(image.shape[2], *image.shape[:2], dtype=torch.uint8)
    cv2.split(np.ascontiguousarray(image), list(out.numpy()))
    return out


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
        "images": default_collate([s["image"] for s in samples]),  # in a worker: stacked into shared memory
        "labels": labels, "boxes": boxes, "mask": mask,
        "image_ids": [s["image_id"] for s in samples],
        "orig_sizes": [s["orig_size"] for s in samples],
        "scales": [s["scale"] for s in samples],
    }
