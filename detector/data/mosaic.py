"""The 2x2 mosaic of `DetectionDataset`, composed directly from images already at network scale.

It gives exactly the output of albumentations' `A.Mosaic(grid_yx=(2, 2), target_size=(S, S), cell_shape=(S, S),
fit_mode="contain")` (pixels identical, boxes to float rounding; `tests/data/test_mosaic.py`) for images whose
longest side is S (what the dataset loads and caches), drawing the same random numbers from the same
`random.Random`, so that the augmentations after it see the same stream. Its geometry (the centre, the four cell
placements, which image goes where) is albumentations' own; what it replaces is the per-cell pipeline that
`A.Mosaic` builds and runs on every call (a resize and a padded crop per image, with their bbox processing), which
was half of a mosaic sample's time (docs/benchmark.md, "Data pipeline profile"). Here each image is one array copy
into the canvas and its boxes one shift and clip.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
from albumentations.augmentations.mixing import functional as fmixing

Item = tuple[np.ndarray, np.ndarray, np.ndarray]  # image (h, w, 3) uint8, boxes (N, 4) xyxy pixels, labels (N,)


def compose_mosaic(
    items: Sequence[Item], size: int, center_range: tuple[float, float], rng: random.Random, fill: int,
    min_area: float = 0.0, min_box_size: float = 0.0,
) -> Item:
    """A `size` x `size` mosaic of `items[0]` (the sample, in the largest cell) and up to 3 others (the sample
    repeated when fewer). Each image sits centred in a `size` x `size` cell of a 2x2 grid and a window around a
    random centre is cut out; boxes are shifted, clipped to their cell's visible part and kept when their clipped
    area is at least `min_area` px^2 and both sides at least `min_box_size` px (albumentations' filter)."""
    for image, _, _ in items:
        if image.shape[0] > size or image.shape[1] > size:
            raise ValueError(f"mosaic images must fit a {size}x{size} cell, got {image.shape[1]}x{image.shape[0]}")
    items = [*items[:4], *[items[0]] * (4 - len(items[:4]))]
    grid, cell = (2, 2), (size, size)
    center = fmixing.calculate_mosaic_center_point(grid, cell, cell, tuple(center_range), rng)
    placements = fmixing.calculate_cell_placements(grid, cell, cell, center)
    order = fmixing.assign_items_to_grid_cells(len(items), placements, rng)
    canvas = np.full((size, size, 3), fill, np.uint8)
    all_boxes, all_labels = [], []
    for placement, item_index in order.items():
        image, boxes, labels = items[item_index]
        x0, y0, x1, y1 = placement
        # the part of the cell this placement shows (A.Mosaic: the crop from the corner opposite the centre)
        position = fmixing.get_cell_relative_position(placement, cell)
        cx0, cy0, cx1, cy1 = fmixing.get_opposite_crop_coords(cell, (y1 - y0, x1 - x0), position)
        height, width = image.shape[:2]
        # A.Mosaic's padded crop puts the image at (left, top) in its cell (half the missing padding, rounded down)
        left, top = max(0, cx1 - width) // 2, max(0, cy1 - height) // 2
        dx, dy = x0 + left - cx0, y0 + top - cy0  # image pixel (0, 0) lands on canvas pixel (dx, dy)
        ix0, iy0 = max(x0, dx), max(y0, dy)
        ix1, iy1 = min(x1, dx + width), min(y1, dy + height)
        if ix1 > ix0 and iy1 > iy0:
            canvas[iy0:iy1, ix0:ix1] = image[iy0 - dy:iy1 - dy, ix0 - dx:ix1 - dx]
        if len(boxes):
            shifted = boxes.reshape(-1, 4) + np.array([dx, dy, dx, dy], np.float32)
            all_boxes.append(np.clip(shifted, [x0, y0, x0, y0], [x1, y1, x1, y1]).astype(np.float32))
            all_labels.append(np.asarray(labels).reshape(-1))
    if not all_boxes:
        return canvas, np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    boxes, labels = np.concatenate(all_boxes), np.concatenate(all_labels).astype(np.int64)
    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    keep = (width > 0) & (height > 0) & (width * height >= min_area - 1e-7)
    keep &= (width >= min_box_size - 1e-7) & (height >= min_box_size - 1e-7)
    return canvas, boxes[keep], labels[keep]
