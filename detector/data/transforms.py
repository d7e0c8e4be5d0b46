"""Image/box transforms: albumentations pipelines that end in a letterbox to the network size (the 4-image mosaic
that may come before them: `detector.data.mosaic`).

Letterbox = resize the longest side to `size` (aspect kept), pad bottom/right with grey (114).
Its exact inverse maps network-input boxes back to the original image: x / sx, y / sy with the
per-axis resize factors returned by `letterbox_scale`.
"""

from __future__ import annotations

from collections.abc import Sequence

import albumentations as A
import cv2
import torch

PAD_VALUE = 114


def letterbox(size: int) -> list[A.BasicTransform]:
    return [
        A.LongestMaxSize(max_size=size, interpolation=cv2.INTER_LINEAR),
        A.PadIfNeeded(size, size, position="top_left", border_mode=cv2.BORDER_CONSTANT, fill=PAD_VALUE),
    ]


def letterbox_scale(height: int, width: int, size: int) -> tuple[float, float]:
    """Per-axis factors (sx, sy) by which the letterbox resizes an image of this size (albumentations'
    LongestMaxSize rounding: new side = max(1, round(side * size / longest)))."""
    ratio = size / max(height, width)
    return max(1, round(width * ratio)) / width, max(1, round(height * ratio)) / height


def build_pipeline(
    size: int, augmentations: Sequence[A.BasicTransform] = (), min_visibility: float = 0.0, min_area: float = 1.0,
    min_box_size: float = 0.0, with_letterbox: bool = True,
) -> A.Compose:
    """`augmentations` followed by the letterbox (unless `with_letterbox` is False); boxes are pascal_voc (xyxy
    pixels). Boxes that the augmentations cut to less than `min_visibility` of their area, less than `min_area` px^2,
    or less than `min_box_size` px wide or high are dropped."""
    return A.Compose(
        [*augmentations, *(letterbox(size) if with_letterbox else ())],
        bbox_params=A.BboxParams(
            format="pascal_voc", label_fields=["labels"], min_visibility=min_visibility, min_area=min_area,
            min_width=min_box_size, min_height=min_box_size,
        ),
    )


def unletterbox_boxes(boxes: torch.Tensor, scale: tuple[float, float], height: int, width: int) -> torch.Tensor:
    """Boxes (N, 4) in network-input pixels -> original-image pixels, clipped to the image."""
    sx, sy = scale
    out = boxes / boxes.new_tensor([sx, sy, sx, sy])
    return torch.stack((out[:, 0].clamp(0, width), out[:, 1].clamp(0, height), out[:, 2].clamp(0, width), out[:, 3].clamp(0, height)), -1)

