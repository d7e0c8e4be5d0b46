"""The mosaic composed from loaded images equals albumentations' A.Mosaic (pixels and boxes) on fixed seeds, alone
and inside the dataset with the coco128 augmentations after it; the RAM cache is never written by it."""

from __future__ import annotations

import random

import albumentations as A
import cv2
import numpy as np
import pytest

from detector.data.dataset import DetectionDataset, Record
from detector.data.mosaic import compose_mosaic
from detector.data.transforms import PAD_VALUE, build_pipeline

from .test_augment import coco128_augmentations

CENTER_RANGE = (0.25, 0.75)


def a_mosaic(size: int) -> A.Mosaic:
    """The reference: albumentations' own 2x2 mosaic, as DetectionDataset used it before compose_mosaic."""
    return A.Mosaic(grid_yx=(2, 2), target_size=(size, size), cell_shape=(size, size), center_range=CENTER_RANGE,
                    fit_mode="contain", interpolation=cv2.INTER_LINEAR, fill=PAD_VALUE, metadata_key="mosaic_metadata", p=1.0)


def random_item(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An image with its longest side `size` (as the dataset loads them) and 0-5 random boxes inside it (corners
    half a pixel off the image edge: a box side that lands exactly on the 1-px size limit would be decided by
    albumentations' float rounding)."""
    short = int(rng.integers(size // 3, size + 1))
    height, width = (size, short) if rng.random() < 0.5 else (short, size)
    n = int(rng.integers(0, 6))
    xy = rng.uniform(0, [width - 2, height - 2], (n, 2))
    boxes = np.concatenate([xy, np.minimum(xy + rng.uniform(1, [width, height], (n, 2)), [width - 0.5, height - 0.5])], 1)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8), boxes.astype(np.float32), rng.integers(0, 5, n)


@pytest.mark.parametrize("size", [64, 96])
@pytest.mark.parametrize(("min_area", "min_box_size"), [(0.0, 1.0), (4.0, 2.0)])
def test_compose_mosaic_equals_albumentations_mosaic(size, min_area, min_box_size):
    reference = build_pipeline(size, [a_mosaic(size)], 0.1, min_area, min_box_size)
    kept = 0
    for seed in range(60):
        rng = np.random.default_rng(seed)
        items = [random_item(rng, size) for _ in range(4)]
        reference.set_random_state(np.random.default_rng(seed), random.Random(seed))
        expected = reference(image=items[0][0], bboxes=items[0][1], labels=items[0][2],
                             mosaic_metadata=[{"image": i, "bboxes": b, "labels": c} for i, b, c in items[1:]])
        ours = random.Random(seed)
        ours.random()  # the Compose call's own draw, before A.Mosaic's
        image, boxes, labels = compose_mosaic(items, size, CENTER_RANGE, ours, PAD_VALUE, min_area, min_box_size)
        np.testing.assert_array_equal(image, expected["image"])
        np.testing.assert_allclose(boxes, np.asarray(expected["bboxes"], np.float32).reshape(-1, 4), atol=1e-3)
        np.testing.assert_array_equal(labels, np.asarray(expected["labels"]).reshape(-1))
        assert ours.random() == reference.py_random.random()  # the augmentations after it see the same stream
        kept += len(boxes)
    assert kept > 100  # the comparison covered boxes, not only empty mosaics


def test_compose_mosaic_refuses_images_larger_than_a_cell():
    items = [(np.zeros((70, 40, 3), np.uint8), np.zeros((0, 4), np.float32), np.zeros(0, np.int64))]
    with pytest.raises(ValueError, match="fit a 64x64 cell"):
        compose_mosaic(items, 64, CENTER_RANGE, random.Random(0), PAD_VALUE)


class AMosaicDataset(DetectionDataset):
    """DetectionDataset with its mosaic done by A.Mosaic in one Compose, as before compose_mosaic."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.mosaic_pipeline = build_pipeline(self.image_size, [a_mosaic(self.image_size), *coco128_augmentations()],
                                              0.1, self.min_area, self.min_box_size)

    def _mosaic_sample(self, index, image, boxes, labels):
        metadata = [dict(zip(("image", "bboxes", "labels"), self._load(self._other_index()))) for _ in range(3)]
        out = self.mosaic_pipeline(image=image, bboxes=boxes, labels=labels, mosaic_metadata=metadata)
        return self._output(index, out)


@pytest.mark.parametrize("cache", [False, "ram"])
def test_dataset_mosaic_samples_equal_the_a_mosaic_pipeline(tmp_path, cache):
    """Whole training samples (mosaic, then HSV, flip, affine, crop, letterbox) equal those of the A.Mosaic
    pipeline, image by image, with and without the RAM cache."""
    rng = np.random.default_rng(0)
    records = []
    for i in range(6):
        height, width = int(rng.integers(40, 120)), int(rng.integers(40, 120))
        cv2.imwrite(str(tmp_path / f"{i}.png"), rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        xy = rng.uniform(0, [width - 10, height - 10], (3, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(5.3, 9.7, (3, 2))], 1).astype(np.float32)
        records.append(Record(tmp_path / f"{i}.png", i + 1, width, height, boxes, np.array([0, 1, 2])))
    kwargs = dict(min_visibility=0.1, min_area=4.0, mosaic_prob=1.0, cache_images=cache)
    ours = DetectionDataset(records, ["a", "b", "c"], 96, coco128_augmentations(), **kwargs)
    reference = AMosaicDataset(records, ["a", "b", "c"], 96, coco128_augmentations(), **kwargs)
    boxes = 0
    for key in [(i, epoch) for epoch in range(3) for i in range(len(records))]:
        sample, expected = ours[key], reference[key]
        assert sample["image"].equal(expected["image"]) and sample["labels"].equal(expected["labels"]), key
        np.testing.assert_allclose(sample["boxes"].numpy(), expected["boxes"].numpy(), atol=1e-3)
        boxes += len(sample["boxes"])
    assert boxes > 30


def test_mosaic_and_augmentations_never_write_into_the_ram_cache(tmp_path):
    rng = np.random.default_rng(1)
    records = []
    for i in range(4):
        cv2.imwrite(str(tmp_path / f"{i}.png"), rng.integers(0, 256, (60, 80, 3), dtype=np.uint8))
        records.append(Record(tmp_path / f"{i}.png", i + 1, 80, 60, np.array([[5, 5, 40, 30]], np.float32), np.array([0])))
    dataset = DetectionDataset(records, ["a"], 64, coco128_augmentations(), mosaic_prob=0.5, cache_images="ram")
    before = dataset._cache.buffer.copy()
    for key in range(16):
        dataset[(key % 4, key // 4)]
    np.testing.assert_array_equal(dataset._cache.buffer, before)
    with pytest.raises(ValueError, match="read-only"):
        dataset._load(0)[0][0, 0] = 0
