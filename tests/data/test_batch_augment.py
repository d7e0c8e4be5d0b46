"""Augmentation on the device (`data.augment_on=device`, detector.data.batch_augment): boxes follow the pixels, the
scale/translate distributions are the worker path's, seeded batches repeat, CloseMosaic closes it, the datamodule
wires it in."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import albumentations as A
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from detector.data.batch_augment import BatchAugment
from detector.data.dataset import DetectionDataset, Record, collate
from detector.data.transforms import build_pipeline
from detector.training.callbacks import CloseMosaic

from .test_augment import coco128_augmentations, hue_colour, hue_mask, rectangles_image, tight_box

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "data"
HUES = list(range(0, 180, 15))  # 12 object colours, 15 OpenCV hue units apart


def coloured_batch(tmp_path: Path, size: int = 128) -> dict:
    """6 images of different shapes, 2 rectangles each, every rectangle its own colour and class (= its hue index),
    letterboxed to `size` as the loader serves them with data.augment_on=device."""
    rng = np.random.default_rng(0)
    records = []
    for i, (w, h) in enumerate([(128, 96), (96, 128), (128, 128), (128, 64), (200, 150), (90, 180)]):
        boxes, labels = rectangles_image(tmp_path / f"{i}.png", w, h, rng, [hue_colour(HUES[2 * i + k]) for k in range(2)])
        records.append(Record(tmp_path / f"{i}.png", i + 1, w, h, boxes, np.asarray(labels, np.int64) + 2 * i))
    dataset = DetectionDataset(records, [str(k) for k in range(12)], size)
    return collate([dataset[i] for i in range(len(records))])


def test_boxes_follow_the_pixels(tmp_path):
    """Each output box is the tight box of its rectangle's visible pixels, through mosaic, flip and scale/translate
    (coco128's worker settings), and every visible rectangle has its box. (Without the colour jitter, whose
    oversaturation moves the hues of this 12-colour palette by more than their spacing.)"""
    batch = coloured_batch(tmp_path)
    augment, left_out = BatchAugment.from_albumentations(coco128_augmentations(), mosaic_prob=0.5, min_area=1.0)
    assert left_out == ["RandomCropFromBorders"]
    assert augment.scale == (0.5, 1.5) and augment.translate == (-0.1, 0.1) and augment.flip_p == 0.5
    assert augment.colour_p == 1.0 and augment.brightness == pytest.approx((0.6, 1.4)) and augment.hue == (-0.015, 0.015)
    augment.colour_p = 0.0
    mosaics = 0
    for epoch in range(8):
        out = augment(batch, epoch=epoch)
        assert out["images"].dtype == torch.uint8 and out["images"].shape == batch["images"].shape
        for image, boxes, labels, mask in zip(out["images"], out["boxes"], out["labels"], out["mask"]):
            image = image.permute(1, 2, 0).numpy()
            kept = dict(zip(labels[mask].tolist(), boxes[mask].numpy()))
            assert len(kept) == int(mask.sum())  # a rectangle appears at most once per image
            present = [label for label, hue in enumerate(HUES) if hue_mask(image, hue).sum() > 0]
            mosaics += len({label // 2 for label in present}) > 1
            for label, hue in enumerate(HUES):
                pixels = hue_mask(image, hue)
                if label in kept:  # (bilinear resampling at scale <= 1.5 blends about 1.5 px of edge)
                    assert tight_box(pixels) is not None, (epoch, label)
                    assert np.abs(tight_box(pixels) - kept[label]).max() <= 2.0, (epoch, label, tight_box(pixels), kept[label])
                elif pixels.any():  # a dropped box (under min_area) leaves at most a sliver of blended edge pixels
                    x1, y1, x2, y2 = tight_box(pixels)
                    assert min(x2 - x1, y2 - y1) <= 2, (epoch, label, tight_box(pixels))
    assert mosaics > 8


def test_colour_jitter_is_torchvisions_per_image():
    """The batched colour ops, each image with its own factors and order, give what torchvision's functional ops
    (the formulas of albumentations' ColorJitter) give image by image."""
    import torchvision.transforms.v2.functional as TF

    generator = torch.Generator().manual_seed(0)
    images = torch.rand(6, 3, 24, 20, generator=generator)
    images[0] = 0.5  # grey: no hue
    images[1, :, :4] = 0.0  # black
    factors = torch.tensor([[0.6, 1.0, 1.7, 0.015], [1.4, 0.7, 0.3, -0.015], [1.0, 1.3, 1.0, 0.4], [0.8, 1.0, 1.2, -0.3],
                            [1.2, 1.0, 0.5, 0.0], [1.0, 1.0, 1.0, 0.1]])
    orders = torch.rand(6, 4, generator=generator).argsort(1)
    colour = torch.tensor([True, True, True, True, True, False])
    out = BatchAugment._colour(images.clone(), colour, factors, orders)
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    for i in range(6):
        expected = images[i]
        for op in orders[i].tolist() if colour[i] else []:
            expected = ops[op](expected, float(factors[i, op]))
        assert torch.allclose(out[i], expected, atol=1e-5), (i, (out[i] - expected).abs().max())


def box_statistics(boxes: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(N, 4): width ratio, height ratio and centre shift in x and y of one box against its unaugmented `reference`."""
    size = boxes[:, 2:] - boxes[:, :2]
    ref_size = reference[2:] - reference[:2]
    centre_shift = (boxes[:, :2] + boxes[:, 2:]) / 2 - (reference[:2] + reference[2:]) / 2
    return np.concatenate([size / ref_size, centre_shift], 1)


def ks_distance(a: np.ndarray, b: np.ndarray) -> float:
    grid = np.sort(np.concatenate([a, b]))
    cdf_a, cdf_b = (np.searchsorted(np.sort(x), grid, side="right") / len(x) for x in (a, b))
    return float(np.abs(cdf_a - cdf_b).max())


@pytest.mark.parametrize("config, height", [("coco128", 64), ("shapes", 64), ("coco128", 40)])
def test_scale_and_translation_match_the_worker_path(config, height):
    """One small box in the middle of a 64-px wide image, 1500 times through the data config's Affine on the workers
    (albumentations, before the letterbox pads a landscape image) and on the device (on the letterboxed batch): the
    same distributions of width and height ratio and of the centre's shift."""
    affine = [t for t in instantiate(OmegaConf.load(CONFIGS / f"{config}.yaml").train_augmentations) if isinstance(t, A.Affine)]
    size, count = 64, 1500
    reference = np.array([28.0, height / 2 - 6, 36.0, height / 2 + 6], np.float32)
    image = np.full((height, size, 3), 100, np.uint8)
    worker = build_pipeline(size, affine)
    worker.set_random_state(np.random.default_rng(0), random.Random(0))
    worker_boxes = np.stack([worker(image=image, bboxes=reference[None], labels=[0])["bboxes"][0] for _ in range(count)])
    augment, left_out = BatchAugment.from_albumentations(affine)
    assert left_out == []
    batch = {
        "images": torch.full((count, 3, size, size), 100, dtype=torch.uint8),
        "boxes": torch.from_numpy(reference).expand(count, 1, 4).clone(), "labels": torch.zeros(count, 1, dtype=torch.long),
        "mask": torch.ones(count, 1, dtype=torch.bool), "image_ids": list(range(count)),
        "orig_sizes": [(height, size)] * count, "scales": [(1.0, 1.0)] * count,
    }
    out = augment(batch)
    assert bool(out["mask"].all())  # the box stays inside at these ranges
    device = box_statistics(out["boxes"][:, 0].numpy(), reference)
    workers = box_statistics(worker_boxes.astype(np.float32), reference)
    for column in range(4):
        a, b = device[:, column], workers[:, column]
        assert abs(a.mean() - b.mean()) < 4 * np.hypot(a.std(), b.std()) / np.sqrt(count), (column, a.mean(), b.mean())
        assert a.std() == pytest.approx(b.std(), rel=0.1), (column, a.std(), b.std())
        assert ks_distance(a, b) < 0.08, column  # the 99.9% critical value at n = 1500 is 0.071
        ends = [0.005, 0.995]  # the same range: a few percent too wide or narrow fails here
        assert np.quantile(a, ends) == pytest.approx(np.quantile(b, ends), abs=0.02 * np.ptp(b)), column
    unchanged = np.isclose(device, [1.0, 1.0, 0.0, 0.0]).all(1).mean()
    assert unchanged == pytest.approx(1 - affine[0].p, abs=0.05)


def test_mosaic_window_matches_the_worker_path(tmp_path):
    """Square images whose one box is the whole image: in a mosaic, each box is the part of its cell that the window
    shows, and the mosaic's own image takes the largest part (as A.Mosaic places it). Over 300 mosaics on the workers
    (A.Mosaic) and on the device, the same distribution of that part's corners and sides, and the same range."""
    import cv2

    size, count = 64, 300
    records = []
    for i in range(4):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((size, size, 3), 40 * i, np.uint8))
        records.append(Record(tmp_path / f"{i}.png", i + 1, size, size, np.array([[0, 0, size, size]], np.float32),
                              np.array([i])))
    worker = DetectionDataset(records, list("abcd"), size, mosaic_prob=1.0, min_visibility=0.0, min_area=0.0,
                              cache_images="ram")
    # on the workers, the largest part of label 0 is the mosaic's own image (a partner may be a copy of it)
    largest = lambda boxes: boxes[(boxes[:, 2:] - boxes[:, :2]).prod(1).argmax()]  # noqa: E731
    worker_boxes = []
    for epoch in range(count):
        sample = worker[(0, epoch)]
        worker_boxes.append(largest(sample["boxes"][sample["labels"] == 0]).numpy())
    batch = collate([DetectionDataset(records[:1], list("abcd"), size)[0]] * count)
    batch["image_ids"], batch["labels"][:, 0] = list(range(count)), torch.arange(count)  # labels tell the copies apart
    out = BatchAugment(mosaic_prob=1.0, min_area=0.0)(batch)
    own = torch.stack([boxes[mask & (labels == i)][0] for i, (boxes, labels, mask)
                       in enumerate(zip(out["boxes"], out["labels"], out["mask"]))]).numpy()
    worker_boxes = np.stack(worker_boxes)
    with_sides = lambda boxes: np.concatenate([boxes, boxes[:, 2:] - boxes[:, :2]], 1)  # noqa: E731
    for column, (a, b) in enumerate(zip(with_sides(own).T, with_sides(worker_boxes).T)):
        assert ks_distance(a, b) < 0.16, (column, a.mean(), b.mean())  # the 99.9% critical value at n = 300 is 0.159
        assert (a.min(), a.max()) == pytest.approx((b.min(), b.max()), abs=1.0), column  # window corner: whole pixels
    assert (own[:, 2:] - own[:, :2]).min() >= size / 2


def test_seeded_batches_repeat_and_epochs_differ(tmp_path):
    batch = coloured_batch(tmp_path, size=64)
    augment, _ = BatchAugment.from_albumentations(coco128_augmentations(), mosaic_prob=0.5, seed=3)
    first, again = augment(batch, epoch=1), BatchAugment.from_albumentations(coco128_augmentations(), mosaic_prob=0.5, seed=3)[0](batch, epoch=1)
    for key in ("images", "boxes", "labels", "mask"):
        assert torch.equal(first[key], again[key]), key
    assert not torch.equal(first["images"], augment(batch, epoch=2)["images"])
    augment.seed = 4
    assert not torch.equal(first["images"], augment(batch, epoch=1)["images"])


def solid_batch(count: int = 8, size: int = 32) -> dict:
    """Single-colour images: an output with several colours is a mosaic."""
    images = torch.stack([torch.full((3, size, size), 10 + 25 * i, dtype=torch.uint8) for i in range(count)])
    return {"images": images, "boxes": torch.tensor([[[4.0, 4.0, 20.0, 20.0]]]).repeat(count, 1, 1),
            "labels": torch.zeros(count, 1, dtype=torch.long), "mask": torch.ones(count, 1, dtype=torch.bool),
            "image_ids": list(range(count)), "orig_sizes": [(size, size)] * count, "scales": [(1.0, 1.0)] * count}


def test_close_mosaic_closes_the_device_mosaic_by_epoch():
    augment = BatchAugment(mosaic_prob=1.0)
    trainer = SimpleNamespace(datamodule=SimpleNamespace(train_dataset=None, batch_augment=augment), max_epochs=10)

    def mosaics(epoch: int) -> int:
        return sum(len(image.reshape(3, -1).unique(dim=1).T) > 1 for image in augment(solid_batch(), epoch)["images"])

    CloseMosaic(epochs=2).on_fit_start(trainer, None)
    assert mosaics(7) == 8 and mosaics(8) == 0 and mosaics(9) == 0
    assert [augment.mosaic_wanted(epoch) for epoch in (0, 7, 8)] == [True, True, False]
    augment.set_mosaic(False)  # DetectionDataModule.set_mosaic's switch
    assert mosaics(0) == 0


def test_datamodule_augments_training_batches_only(tmp_path):
    from detector.data.datamodule import DetectionDataModule

    batch = coloured_batch(tmp_path)
    with pytest.raises(ValueError, match="choose worker or device"):
        DetectionDataModule(None, None, 12, augment_on="gpu")
    datamodule = DetectionDataModule(None, None, 12, img_size=128, augment_on="device", mosaic_prob=1.0,
                                     train_augmentations=coco128_augmentations())
    with pytest.warns(UserWarning, match="leaves out what has no batch version: RandomCropFromBorders"):
        datamodule.batch_augment = datamodule._batch_augment()
    datamodule.trainer = SimpleNamespace(training=False, current_epoch=0)
    assert datamodule.on_after_batch_transfer(batch, 0) is batch
    datamodule.trainer.training = True
    out = datamodule.on_after_batch_transfer(batch, 0)
    assert not torch.equal(out["images"], batch["images"]) and out["mask"].sum(1).max() > 2  # mosaics of 2-box images


@pytest.mark.parametrize("count", [1, 2, 3])
def test_small_batches_and_images_without_boxes(count):
    """Fewer than 4 images still make mosaics (of repeated images); a batch without any box stays without."""
    augment = BatchAugment(mosaic_prob=1.0, affine_p=1.0, scale=(0.5, 1.5), flip_p=0.5)
    out = augment(solid_batch(count))
    assert out["images"].shape == (count, 3, 32, 32) and out["mask"].sum(1).min() >= 1
    empty = solid_batch(count)
    empty.update(boxes=torch.zeros(count, 0, 4), labels=torch.zeros(count, 0, dtype=torch.long),
                 mask=torch.zeros(count, 0, dtype=torch.bool))
    out = augment(empty)
    assert out["boxes"].shape == (count, 0, 4) and out["mask"].shape == (count, 0)
