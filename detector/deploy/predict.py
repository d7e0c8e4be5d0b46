"""Inference helpers shared by evaluate, predict and export: letterbox an image as the validation pipeline does,
run model + postprocessor, map boxes back to the original image (COCO results entries:
`detector.evaluation.coco.to_coco_results`); and prediction on image files (`python scripts/predict.py` /
`detector-predict`, configs/predict.yaml: `predict_images`), with the boxes drawn."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from detector.data.dataset import IMAGE_SUFFIXES, image_ids_from_stems, read_image, resize_to_letterbox
from detector.data.transforms import PAD_VALUE, letterbox_scale, unletterbox_boxes
from detector.deploy.load import load_detector
from detector.evaluation.coco import to_coco_results
from detector.postprocess.postprocessors import Postprocessor


def find_images(source: str | Path) -> list[Path]:
    """An image file, or the images in a folder (recursively, sorted)."""
    source = Path(source)
    if source.is_file():
        return [source]
    if source.is_dir():
        return sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    raise FileNotFoundError(f"source not found: {source}")


def letterbox_image(image: np.ndarray, size: int) -> tuple[torch.Tensor, tuple[float, float]]:
    """RGB uint8 (H, W, 3) -> uint8 tensor (3, size, size) (longest side resized to `size`, padded bottom/right
    with grey) and the per-axis scale (sx, sy) that `unletterbox_boxes` inverts; the same as the dataset's
    validation samples."""
    height, width = image.shape[:2]
    resized, _ = resize_to_letterbox(image, size)
    canvas = np.full((size, size, 3), PAD_VALUE, np.uint8)
    canvas[: resized.shape[0], : resized.shape[1]] = resized
    return torch.from_numpy(np.ascontiguousarray(canvas.transpose(2, 0, 1))), letterbox_scale(height, width, size)


@torch.inference_mode()
def detect(
    model: nn.Module, postprocessor: Postprocessor, images: torch.Tensor, scales: Sequence[tuple[float, float]],
    orig_sizes: Sequence[tuple[int, int]],
) -> list[dict[str, torch.Tensor]]:
    """Letterboxed uint8 images (B, 3, S, S) -> per image dict(boxes (N, 4) xyxy in original-image pixels,
    scores, labels), on the CPU."""
    device = next(model.parameters()).device
    output = model(images.to(device, non_blocking=True).float() / 255)
    results = []
    for detections, scale, (height, width) in zip(postprocessor(output), scales, orig_sizes):
        boxes = unletterbox_boxes(detections["boxes"].float(), scale, height, width)
        results.append({"boxes": boxes.cpu(), "scores": detections["scores"].float().cpu(),
                        "labels": detections["labels"].cpu()})
    return results


def predict_files(
    model: nn.Module, postprocessor: Postprocessor, paths: Sequence[Path], img_size: int, batch_size: int = 8,
):
    """Yields (path, RGB image, detections) for every image file, `batch_size` images per forward pass."""
    for start in range(0, len(paths), batch_size):
        chunk = paths[start: start + batch_size]
        images = [read_image(p) for p in chunk]
        letterboxed = [letterbox_image(image, img_size) for image in images]
        detections = detect(
            model, postprocessor, torch.stack([t for t, _ in letterboxed]), [s for _, s in letterboxed],
            [image.shape[:2] for image in images],
        )
        yield from zip(chunk, images, detections)


def class_color(label: int) -> tuple[int, int, int]:
    """A fixed, distinct BGR colour per class."""
    hue = (label * 47) % 180
    bgr = cv2.cvtColor(np.uint8([[[hue, 220, 230]]]), cv2.COLOR_HSV2BGR)[0, 0]
    return int(bgr[0]), int(bgr[1]), int(bgr[2])


def draw_detections(image_rgb: np.ndarray, detections: dict, class_names: list[str],
                    line_width: int | None = None) -> np.ndarray:
    """BGR image (for cv2.imwrite) with one box and a 'name score' label per detection ('name' alone for ground truth:
    a dict without "scores")."""
    image = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    line_width = line_width or max(1, round(max(image.shape[:2]) / 400))
    font_scale = max(0.35, line_width / 3)
    boxes, labels = detections["boxes"].tolist(), detections["labels"].tolist()
    scores = detections["scores"].tolist() if "scores" in detections else [None] * len(labels)
    for box, score, label in zip(boxes, scores, labels):
        x1, y1, x2, y2 = (round(v) for v in box)
        color = class_color(int(label))
        cv2.rectangle(image, (x1, y1), (x2, y2), color, line_width, cv2.LINE_AA)
        text = class_names[int(label)] + ("" if score is None else f" {score:.2f}")
        (tw, th), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, max(1, line_width // 2))
        top = y1 - th - baseline - 2 if y1 - th - baseline - 2 >= 0 else y1  # above the box, else inside it
        cv2.rectangle(image, (x1, top), (x1 + tw + 2, top + th + baseline + 2), color, -1)
        cv2.putText(image, text, (x1 + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255),
                    max(1, line_width // 2), cv2.LINE_AA)
    return image


def predict_images(cfg: DictConfig) -> None:
    """Detect objects in `cfg.source` (an image or a folder) with `cfg.ckpt_path` as configs/predict.yaml describes:
    <run dir>/images/<relative path> with the boxes drawn and <run dir>/predictions.json (COCO results format)."""
    output_dir = Path(cfg.paths.output_dir)
    model, postprocessor, meta = load_detector(cfg.ckpt_path, cfg.device, cfg.weights, **cfg.postprocess)
    img_size = int(cfg.img_size or meta["img_size"])
    source = Path(cfg.source)
    paths = find_images(source)
    if not paths:
        raise FileNotFoundError(f"no images in {source}")
    print(f"{len(paths)} images, {img_size} px, on {meta['device']}; postprocess {meta['postprocess']}")
    image_ids = dict(zip(paths, image_ids_from_stems(paths)))
    results, start = [], time.perf_counter()
    for path, image, detections in predict_files(model, postprocessor, paths, img_size, int(cfg.batch_size)):
        relative = path.relative_to(source) if source.is_dir() else Path(path.name)
        results += to_coco_results(image_ids[path], detections, meta["category_ids"], file_name=str(relative))
        if cfg.save_images:
            target = output_dir / "images" / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(target), draw_detections(image, detections, meta["class_names"], cfg.line_width)):
                raise OSError(f"could not write {target}")
        print(f"{relative}: {len(detections['scores'])} detections")
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "predictions.json").write_text(json.dumps(results))
    seconds = time.perf_counter() - start
    print(f"{len(results)} detections in {len(paths)} images ({seconds:.1f} s); results in {output_dir}")
