"""Load tests at a tiny scale: an image with 600 GT boxes, images of extreme aspect ratio (1000x40, 40x1000), and
datasets where no image has any GT, from the readers through the data pipeline to training steps and a full
(two-step) Lightning run from the Hydra configs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch

from detector.assigners.tal import TaskAlignedAssigner
from detector.criteria.yolov8 import YOLOv8Criterion
from detector.data.checks import check_records
from detector.data.dataset import DetectionDataset, collate
from detector.data.formats.coco import read_coco
from detector.data.formats.yolo import read_yolo
from detector.data.transforms import unletterbox_boxes
from detector.losses.classification import BCEWithLogits
from detector.losses.dfl import DFLoss
from detector.losses.iou import CIoULoss
from detector.models import YOLODetector
from detector.training.runner import train

NAMES = ["a", "b", "c"]


def crowd_boxes(count: int, width: int, height: int, seed: int = 0) -> np.ndarray:
    """`count` small boxes (4..12 px a side), xyxy pixels, inside a width x height image; they may overlap."""
    rng = np.random.default_rng(seed)
    wh = rng.uniform(4, 12, (count, 2))
    xy = rng.uniform(0, 1, (count, 2)) * (np.array([width, height]) - wh)
    return np.concatenate([xy, xy + wh], 1).astype(np.float32)


def yolo_lines(boxes: np.ndarray, labels: np.ndarray, width: int, height: int) -> str:
    """YOLO label-file text ("class cx cy w h", normalised) for xyxy pixel boxes."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2 / [width, height]
    size = (boxes[:, 2:] - boxes[:, :2]) / [width, height]
    return "".join(f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, (x, y), (w, h) in zip(labels, centre, size))


def write_yolo(root: Path, write_image, splits: dict[str, list[tuple[str, int, int, str | None]]]) -> Path:
    """A YOLO dataset: splits = {split: [(stem, width, height, label text or None for no label file)]};
    returns data.yaml."""
    rng = np.random.default_rng(0)
    for split, images in splits.items():
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for stem, width, height, labels in images:
            colour = tuple(int(v) for v in rng.integers(0, 255, 3))
            write_image(root / "images" / split / f"{stem}.png", width, height, colour)
            if labels is not None:
                (root / "labels" / split / f"{stem}.txt").write_text(labels)
    data_yaml = root / "data.yaml"
    data_yaml.write_text("train: images/train\nval: images/val\nnames: [a, b, c]\n")
    return data_yaml


def criterion() -> YOLOv8Criterion:
    return YOLOv8Criterion(TaskAlignedAssigner(len(NAMES)), BCEWithLogits(), CIoULoss(), DFLoss())


def training_step(model: YOLODetector, batch: dict) -> dict[str, torch.Tensor]:
    """Forward + criterion + backward on a collated batch; asserts finite losses and gradients."""
    model.zero_grad()
    images = batch["images"].float() / 255 if batch["images"].dtype == torch.uint8 else batch["images"]
    losses = criterion()(model(images), batch["labels"], batch["boxes"], batch["mask"]).losses
    assert all(torch.isfinite(v) for v in losses.values()), losses
    losses["loss"].backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    return losses


def fit_from_config(compose_config, data_yaml: Path, out: Path, img_size: int) -> dict:
    """`python train.py data=custom_yolo ...` in process: one epoch of 2 training steps (batches of 2; at least 4
    training images), 1 validation batch."""
    cfg = compose_config([
        "data=custom_yolo", f"data.root={data_yaml.parent}", f"data.num_classes={len(NAMES)}",
        f"data.img_size={img_size}", "data.batch_size=2", "data.num_workers=0", f"paths.output_dir={out}",
        "trainer.accelerator=cpu", "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
    ])
    metrics = train(cfg)
    assert metrics["status"] == "ok"
    assert (out / "metrics.json").is_file() and (out / "checkpoints" / "last.ckpt").is_file()
    (epoch,) = metrics["history"]
    assert epoch["train_steps"] == 2 and epoch["train_nonfinite_steps"] == 0 and math.isfinite(epoch["train_loss"])
    assert math.isfinite(epoch["val_loss"])
    return metrics


# ---------------------------------------------------------------------------------------------- 600 GT boxes
def test_600_gt_boxes_in_one_image_train_with_finite_loss_and_gradients():
    torch.manual_seed(0)
    size = 256  # 1344 anchor points for 600 + 1 GT
    crowded = torch.from_numpy(crowd_boxes(600, size, size))
    boxes = torch.zeros(2, 600, 4)
    boxes[0], boxes[1, 0] = crowded, torch.tensor([40.0, 50, 160, 200])
    mask = torch.zeros(2, 600, dtype=torch.bool)
    mask[0], mask[1, 0] = True, True
    labels = torch.randint(0, len(NAMES), (2, 600))
    model = YOLODetector(len(NAMES), "n", image_size=size)
    batch = {"images": torch.rand(2, 3, size, size), "labels": labels, "boxes": boxes, "mask": mask}
    losses = training_step(model, batch)
    assert losses["box"] > 0 and losses["dfl"] > 0
    assert next(model.backbone.parameters()).grad.abs().sum() > 0  # the gradient reaches the first layer


@pytest.mark.slow
def test_600_gt_boxes_through_the_dataset_and_a_lightning_run(compose_config, write_image, tmp_path):
    size = 256
    crowded = crowd_boxes(600, size, size, seed=1)
    labels = np.arange(600) % len(NAMES)
    text = yolo_lines(crowded, labels, size, size)
    data_yaml = write_yolo(tmp_path / "ds", write_image, {
        "train": [("crowd", size, size, text), ("one", 300, 200, "1 0.5 0.5 0.4 0.4\n"), ("crowd2", size, size, text),
                  ("two", 200, 300, "2 0.5 0.5 0.4 0.4\n")],  # 2 batches of 2
        "val": [("crowd", size, size, text)],
    })
    records, _, _ = read_yolo(data_yaml, "train")
    records, report = check_records(records, NAMES)
    assert report.boxes == 1202 and report.problems == 0
    dataset = DetectionDataset(records, NAMES, size, min_area=1.0)
    index = {record.image_path.stem: i for i, record in enumerate(records)}
    batch = collate([dataset[index["crowd"]], dataset[index["one"]]])
    assert batch["boxes"].shape == (2, 600, 4) and batch["mask"].sum(1).tolist() == [600, 1]
    training_step(YOLODetector(len(NAMES), "n", image_size=size), batch)

    # the whole run (mosaic + augmentation of the data config, EMA, validation with 600 GT, checkpoints)
    metrics = fit_from_config(compose_config, data_yaml, tmp_path / "run", size)
    assert metrics["images"] == 1


# -------------------------------------------------------------------------------------- extreme aspect ratios
@pytest.fixture
def extreme_yolo(tmp_path, write_image) -> Path:
    """A 1000x40 and a 40x1000 image, 3 boxes each (thin, medium and edge-touching), in train and val."""
    wide = "0 0.05 0.5 0.06 0.8\n1 0.5 0.5 0.3 0.5\n2 0.96 0.5 0.08 1.0\n"
    tall = "0 0.5 0.05 0.8 0.06\n1 0.5 0.5 0.5 0.3\n2 0.5 0.96 1.0 0.08\n"
    images = [("wide", 1000, 40, wide), ("tall", 40, 1000, tall)]
    return write_yolo(tmp_path / "ds", write_image, {"train": images, "val": images})


@pytest.mark.parametrize("mosaic_prob", [0.0, pytest.param(1.0, marks=pytest.mark.slow)])
def test_extreme_aspect_ratios_keep_valid_boxes_through_augmentation_and_train(
    compose_config, extreme_yolo, mosaic_prob, tmp_path,
):
    size = 128  # the 1000x40 image becomes 128x5 px: its boxes are a few pixels high
    cfg = compose_config(["data=custom_yolo", f"data.root={extreme_yolo.parent}", f"data.num_classes={len(NAMES)}",
                          f"data.img_size={size}", f"data.mosaic_prob={mosaic_prob}", "data.num_workers=0"])
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("fit")
    assert datamodule.reports["train"].boxes == 6 and datamodule.reports["train"].problems == 0
    model = YOLODetector(len(NAMES), "n", image_size=size)
    kept = 0
    for epoch in range(6):  # the config's augmentation (colour, flip, affine scale, crop) with fresh draws
        samples = [datamodule.train_dataset[(index, epoch)] for index in range(2)]
        for sample in samples:
            boxes = sample["boxes"]
            assert sample["image"].shape == (3, size, size) and torch.isfinite(boxes).all()
            assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= size).all(), boxes
            assert (boxes[:, 2:] > boxes[:, :2]).all(), boxes
            assert sample["labels"].shape == (len(boxes),) and set(sample["labels"].tolist()) <= {0, 1, 2}
            kept += len(boxes)
        if epoch < 2:
            training_step(model, collate(samples))
    assert kept > 0
    # validation: letterbox only; every box kept, and mapped back onto its original
    for index, record in enumerate(datamodule.val_dataset.records):
        sample = datamodule.val_dataset[index]
        back = unletterbox_boxes(sample["boxes"], sample["scale"], record.height, record.width)
        np.testing.assert_allclose(back.numpy(), record.boxes, atol=1e-3)


# ------------------------------------------------------------------------------------------------- no GT at all
def test_datasets_without_any_gt_read_check_and_collate(tmp_path, write_image):
    # YOLO: empty label files and missing label files
    data_yaml = write_yolo(tmp_path / "yolo", write_image, {
        "train": [("empty", 64, 48, ""), ("blank_lines", 80, 64, "\n\n"), ("missing", 50, 70, None)], "val": [],
    })
    yolo_records, _, _ = read_yolo(data_yaml, "train")
    # COCO: images with an empty annotation list, and a file with no "annotations" key at all
    for i in range(2):
        write_image(tmp_path / "coco" / f"{i + 1}.png", 64, 32 + 16 * i)
    images = [{"id": i + 1, "file_name": f"{i + 1}.png", "width": 64, "height": 32 + 16 * i} for i in range(2)]
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(NAMES)]
    (tmp_path / "empty.json").write_text(json.dumps({"images": images, "annotations": [], "categories": categories}))
    (tmp_path / "none.json").write_text(json.dumps({"images": images, "categories": categories}))
    coco_records = [read_coco(tmp_path / "coco", tmp_path / f"{name}.json")[0] for name in ("empty", "none")]

    model = YOLODetector(len(NAMES), "n", image_size=64)
    for records in (yolo_records, *coco_records):
        records, report = check_records(records, NAMES)
        assert report.boxes == 0 and report.background_images == len(records) and report.problems == 0
        for mosaic_prob in (0.0, 1.0):
            dataset = DetectionDataset(records, NAMES, 64, mosaic_prob=mosaic_prob)
            samples = [dataset[i] for i in range(len(dataset))]
            assert all(s["boxes"].shape == (0, 4) and s["labels"].shape == (0,) for s in samples)
            batch = collate(samples)
            assert batch["labels"].shape == (len(samples), 0) and batch["boxes"].shape == (len(samples), 0, 4)
            assert batch["mask"].shape == (len(samples), 0) and batch["images"].shape == (len(samples), 3, 64, 64)
        losses = training_step(model, batch)
        assert losses["box"] == 0 and losses["dfl"] == 0 and losses["cls"] > 0


def test_a_run_on_background_images_only_ends_normally(compose_config, write_image, tmp_path):
    data_yaml = write_yolo(tmp_path / "ds", write_image, {
        "train": [(f"t{i}", 80, 60, "" if i % 2 else None) for i in range(4)],
        "val": [("v0", 64, 64, ""), ("v1", 90, 40, None)],
    })
    metrics = fit_from_config(compose_config, data_yaml, tmp_path / "run", 64)
    assert metrics["images"] == 2 and metrics["map"] == 0.0
    assert metrics["history"][0]["train_loss"] > 0  # the classification loss of the background
