"""Inference helpers shared by scripts/evaluate.py, predict.py and export.py: letterbox an image as the
validation pipeline does, run model + postprocessor, map boxes back to the original image
(COCO results entries: `detector.evaluation.coco.to_coco_results`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from detector.data.dataset import IMAGE_SUFFIXES, read_image, resize_to_letterbox
from detector.data.transforms import PAD_VALUE, letterbox_scale, unletterbox_boxes
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

