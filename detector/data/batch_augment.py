"""Training augmentation of whole batches as tensor operations, in the training process and on its device
(`data.augment_on=device`): the DataLoader workers only decode and letterbox, and `BatchAugment` makes the 4-image
mosaics, the colour jitter, the horizontal flips and the random scale/translate of a batch after it reached the GPU.

It follows the worker path (`detector.data.transforms`, albumentations) and takes its parameters from the same
`train_augmentations` (`BatchAugment.from_albumentations`): the same distributions of mosaic window, scale, translation,
flip and colour factors; each image keeps its own canvas (the letterboxed content, or the whole square for a mosaic),
as albumentations transforms the image before the letterbox pads it. The colour jitter has torchvision's formulas
(which albumentations' ColorJitter reproduces) with a factor per image, where torchvision's functional ops take one per
call; flip and scale/translate are one matrix per image, applied to the batch by one `grid_sample`.
Differences, why, and the measured speed: docs/data.md, "Augmentation on the device".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import albumentations as A
import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from detector.data.transforms import PAD_VALUE

Range = tuple[float, float]


def _brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (x * factor).clamp_(0, 1)


def _contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    mean = TF.rgb_to_grayscale(x).mean((-3, -2, -1), keepdim=True)
    return (factor * x + (1 - factor) * mean).clamp_(0, 1)


def _saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (factor * x + (1 - factor) * TF.rgb_to_grayscale(x)).clamp_(0, 1)


def _hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Hue turned by `shift` (turns) in HSV, value and saturation kept: torchvision's adjust_hue, one shift per image."""
    red, green, blue = x.unbind(-3)
    low, value = x.aminmax(dim=-3)
    delta = value - low
    divisor = torch.where(delta > 0, delta, torch.ones_like(delta))
    hue6 = torch.where(value == red, (green - blue) / divisor,
                       torch.where(value == green, 2 + (blue - red) / divisor, 4 + (red - green) / divisor))
    hue6 = (hue6 + 6 * shift[:, 0]).remainder_(6)
    # back to RGB: channel n in (5, 3, 1) = value - delta * clamp(min(k, 4 - k), 0, 1), k = (n + hue6) mod 6
    channels = [(hue6 + n).remainder_(6) for n in (5, 3, 1)]
    return torch.stack([value - delta * torch.minimum(k, 4 - k).clamp_(0, 1) for k in channels], -3)


_COLOUR_OPS = (_brightness, _contrast, _saturation, _hue)  # A.ColorJitter's (and torchvision's) order of factors
_IDENTITY = (1.0, 1.0, 1.0, 0.0)  # the factor of each colour op that leaves the image unchanged


def canvas_sizes(batch: dict, size: int) -> torch.Tensor:
    """(B, 2) long: height and width of each image's letterboxed content (the rest of the square is padding)."""
    sizes = []
    for (height, width), (sx, sy) in zip(batch["orig_sizes"], batch["scales"]):
        sizes.append((min(size, max(1, round(height * sy))), min(size, max(1, round(width * sx)))))
    return torch.tensor(sizes, dtype=torch.long).reshape(-1, 2)


@dataclass
class BatchAugment:
    """Mosaic (probability `mosaic_prob`; the window's top-left corner uniform in `mosaic_center_range` of the
    square's side, like `A.Mosaic`; the 3 partners are other images of the same batch), then colour jitter (`colour_p`;
    factors uniform in `brightness`, `contrast`, `saturation`, hue shift in `hue` turns, in a random order per image,
    like `A.ColorJitter`), horizontal flip (`flip_p`) and scale/translate (`affine_p`; scale uniform in `scale`, the
    same on both axes when `keep_ratio`, about the canvas centre; shift uniform in `translate` of each side, like
    `A.Affine`). Boxes follow the pixels; a box left with less than `min_visibility` of its area, less than `min_area`
    px^2, or thinner than `min_box_size` px is dropped. Every random draw comes from a CPU generator seeded by
    (seed, epoch, image ids of the batch): reproducible on any device and with any number of workers."""

    mosaic_prob: float = 0.0
    mosaic_center_range: Range = (0.25, 0.75)
    colour_p: float = 0.0
    brightness: Range = (1.0, 1.0)
    contrast: Range = (1.0, 1.0)
    saturation: Range = (1.0, 1.0)
    hue: Range = (0.0, 0.0)
    flip_p: float = 0.0
    affine_p: float = 0.0
    scale: Range = (1.0, 1.0)
    keep_ratio: bool = True
    translate: Range = (0.0, 0.0)
    fill: float = PAD_VALUE
    min_visibility: float = 0.0
    min_area: float = 1.0
    min_box_size: float = 0.0
    seed: int = 0
    mosaic_on: bool = True
    mosaic_until: int | None = None  # the first epoch without mosaic (CloseMosaic); None: none

    @classmethod
    def from_albumentations(cls, transforms: Sequence[A.BasicTransform], **kwargs) -> tuple[BatchAugment, list[str]]:
        """The batch version of a worker pipeline's `transforms` (HorizontalFlip, ColorJitter, Affine's scale and
        translate_percent); returns it and the names of what it leaves out (other transforms, Affine's rotation, shear
        or pixel translation), for the caller to report."""
        left_out = []
        for transform in transforms:
            if isinstance(transform, A.HorizontalFlip):
                kwargs["flip_p"] = transform.p
            elif isinstance(transform, A.ColorJitter):
                kwargs.update(colour_p=transform.p, brightness=tuple(transform.brightness), hue=tuple(transform.hue),
                              contrast=tuple(transform.contrast), saturation=tuple(transform.saturation))
            elif type(transform) is A.Affine:  # (not its subclasses, e.g. ShiftScaleRotate)
                scale, translate = transform.scale, transform.translate_percent or {"x": (0.0, 0.0)}
                if scale["x"] != scale["y"] or translate["x"] != translate.get("y", translate["x"]):
                    left_out.append("Affine with different x and y ranges")
                    continue
                kwargs.update(affine_p=transform.p, scale=tuple(scale["x"]), keep_ratio=transform.keep_ratio,
                              translate=tuple(translate["x"]))
                extras = [name for name, value in (("rotate", transform.rotate), ("shear", transform.shear),
                                                   ("translate_px", transform.translate_px))
                          if value is not None and np.any(np.asarray(list(value.values()) if isinstance(value, dict) else value))]
                left_out += [f"Affine's {name}" for name in extras]
            else:
                left_out.append(type(transform).__name__)
        return cls(**kwargs), left_out

    # ----------------------------------------------------------------- the mosaic switch (CloseMosaic)
    @property
    def mosaic_enabled(self) -> bool:
        return self.mosaic_prob > 0 and self.mosaic_on

    def set_mosaic(self, enabled: bool) -> None:
        self.mosaic_on = bool(enabled)

    def close_mosaic_at(self, epoch: int) -> None:
        """No mosaic in the batches of epoch `epoch` and later."""
        self.mosaic_until = int(epoch)

    def mosaic_wanted(self, epoch: int) -> bool:
        return self.mosaic_enabled and (self.mosaic_until is None or epoch < self.mosaic_until)

    def generator(self, epoch: int, image_ids: Sequence[int]) -> torch.Generator:
        seed = np.random.SeedSequence([self.seed, epoch, *(int(i) % 2**32 for i in image_ids)]).generate_state(2)
        return torch.Generator().manual_seed(int(seed[0]) << 32 | int(seed[1]))

    # ----------------------------------------------------------------- the batch
    def __call__(self, batch: dict, epoch: int = 0) -> dict:
        """The augmented batch (same keys; images uint8 (B, 3, S, S); boxes, labels, mask padded to the most boxes
        left in an image). `epoch` and the batch's image ids seed the draws."""
        images = batch["images"]
        count, size = images.shape[0], images.shape[-1]
        if count == 0:
            return batch
        g = self.generator(epoch, batch["image_ids"])

        def uniform(bounds: Range, *shape: int) -> torch.Tensor:
            return torch.empty(shape).uniform_(*bounds, generator=g)

        # every draw, always in this order and shape: the batch's randomness does not depend on the probabilities
        mosaic = (torch.rand(count, generator=g) < self.mosaic_prob) & self.mosaic_wanted(epoch)
        corners = (uniform(self.mosaic_center_range, count, 2) * (size + 1)).long()  # window's top-left (x, y)
        partners = torch.rand(count, count, generator=g).add_(torch.eye(count)).argsort(1)[:, : min(3, count - 1)]
        colour = torch.rand(count, generator=g) < self.colour_p
        factors = torch.stack([uniform(r, count) for r in (self.brightness, self.contrast, self.saturation, self.hue)], 1)
        orders = torch.rand(count, 4, generator=g).argsort(1)
        flip = torch.rand(count, generator=g) < self.flip_p
        affine = torch.rand(count, generator=g) < self.affine_p
        shift = uniform(self.translate, count, 2)
        scale = uniform(self.scale, count, 2)
        if self.keep_ratio:
            scale[:, 1] = scale[:, 0]

        canvas = canvas_sizes(batch, size)
        canvas[mosaic] = size
        fill = self.fill / 255
        x = images.float().div_(255)
        boxes, labels, keep, full_area = self._mosaic(x, batch, mosaic, corners, partners, fill)
        x = self._colour(x, colour, factors, orders)
        _fill_outside(x, canvas, fill)
        x, boxes, full_area = self._geometry(x, boxes, full_area, canvas, flip, affine, shift, scale, fill)
        wh = boxes[..., 2:] - boxes[..., :2]
        area = wh.prod(-1)
        keep &= (area >= self.min_area) & (wh >= self.min_box_size).all(-1) & (area > 0)
        keep &= area >= self.min_visibility * full_area
        order = (~keep).to(torch.uint8).argsort(dim=1, stable=True)[:, : int(keep.sum(1).max())]
        out = dict(batch)
        out["images"] = x.mul_(255).round_().clamp_(0, 255).to(torch.uint8)
        out["boxes"] = boxes.gather(1, order[..., None].expand(-1, -1, 4)) * keep.gather(1, order)[..., None]
        out["labels"] = labels.gather(1, order) * keep.gather(1, order)
        out["mask"] = keep.gather(1, order)
        return out

    def _mosaic(self, x: torch.Tensor, batch: dict, mosaic: torch.Tensor, corners: torch.Tensor,
                partners: torch.Tensor, fill: float) -> tuple[torch.Tensor, ...]:
        """Replaces the mosaic images of `x` in place; returns the boxes (B, 4M, 4) clipped to each image, their
        labels, validity and unclipped areas (the 4 quadrants' boxes side by side; an image without mosaic uses the
        first M)."""
        count, size = x.shape[0], x.shape[-1]
        boxes, labels, mask = batch["boxes"].float(), batch["labels"], batch["mask"].bool()
        sizes = canvas_sizes(batch, size)
        sources = torch.arange(count)[:, None].repeat(1, 4)
        offsets = torch.zeros(count, 4, 2, dtype=torch.long)  # where each source's (0, 0) lands, in output pixels
        used = torch.zeros(count, 4, dtype=torch.bool)
        used[:, 0] = True
        cells = torch.tensor([[0, 0], [1, 0], [0, 1], [1, 1]])  # quadrant (column, row) in the 2S x 2S canvas
        snapshot = x.clone() if mosaic.any() else x  # the sources, before any of them becomes a mosaic
        for i in mosaic.nonzero().flatten().tolist():
            x0, y0 = corners[i].tolist()
            visible = torch.stack([torch.where(cells[:, 0] == 0, size - x0, x0), torch.where(cells[:, 1] == 0, size - y0, y0)], 1)
            largest = int(visible.prod(1).argmax())
            others = [q for q in range(4) if q != largest]
            members = [i, *partners[i].tolist()]
            members += members[-1:] * (4 - len(members))  # batches of fewer than 4 images repeat one
            x[i] = fill
            for quadrant, source in zip([largest, *others], members):
                height, width = sizes[source].tolist()
                column, row = cells[quadrant].tolist()
                left = column * size + (size - width) // 2 - x0  # the content's top-left in the output window
                top = row * size + (size - height) // 2 - y0
                u0, u1, v0, v1 = max(left, 0), min(left + width, size), max(top, 0), min(top + height, size)
                if u0 < u1 and v0 < v1:
                    x[i, :, v0:v1, u0:u1] = snapshot[source, :, v0 - top:v1 - top, u0 - left:u1 - left]
                sources[i, quadrant] = source
                offsets[i, quadrant] = torch.tensor([left, top])
                used[i, quadrant] = True
        device = boxes.device
        sources, offsets, used = sources.to(device), offsets.to(device, torch.float32), used.to(device)
        shifted = boxes[sources] + offsets.repeat(1, 1, 2)[:, :, None, :]  # (B, 4, M, 4)
        flat = shifted.flatten(1, 2)
        full_area = (flat[..., 2:] - flat[..., :2]).clamp(min=0).prod(-1)
        clipped = flat.clamp(0, size)
        keep = (mask[sources] & used[..., None]).flatten(1, 2)
        return clipped, labels[sources].flatten(1, 2), keep, full_area

    @staticmethod
    def _colour(x: torch.Tensor, colour: torch.Tensor, factors: torch.Tensor, orders: torch.Tensor) -> torch.Tensor:
        """Each image's 4 colour ops in its own order: in step k, every image that does op j there, batched."""
        for step in range(4):
            for op, function in enumerate(_COLOUR_OPS):
                rows = (colour & (orders[:, step] == op) & (factors[:, op] != _IDENTITY[op])).nonzero().flatten()
                if len(rows):
                    factor = factors[rows, op].to(x.device)[:, None, None, None]
                    rows = rows.to(x.device)
                    x.index_copy_(0, rows, function(x.index_select(0, rows), factor))
        return x

    @staticmethod
    def _geometry(x: torch.Tensor, boxes: torch.Tensor, full_area: torch.Tensor, canvas: torch.Tensor,
                  flip: torch.Tensor, affine: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor,
                  fill: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Flip and scale/translate about each canvas' centre, as one matrix per image: x' = a x + c."""
        size = x.shape[-1]
        extent = canvas.flip(1).float()  # (B, 2) width, height
        sign = torch.stack([torch.where(flip, -1.0, 1.0), torch.ones(len(flip))], 1)  # x' = w - x when flipped
        factor = torch.where(affine[:, None], scale, torch.ones_like(scale))
        offset = torch.where(affine[:, None], (shift * extent).trunc(), torch.zeros_like(shift))  # whole pixels, as A.Affine
        a = factor * sign
        centre = extent / 2
        c = factor * (torch.where(sign < 0, extent, torch.zeros_like(extent)) - centre) + centre + offset
        moved = (flip | affine).nonzero().flatten()
        if len(moved):
            inverse_a, inverse_c = 1 / a[moved], -c[moved] / a[moved]
            # no rotation or shear: the sampling grid's x depends on the column only, its y on the row only
            centres = (torch.arange(size) + 0.5) * 2 / size - 1  # output pixel centres, normalised (align_corners=False)
            source = centres[None, :, None] * inverse_a[:, None] + (inverse_a + 2 * inverse_c / size - 1)[:, None]
            source = source.to(x.device)  # (n, S, 2), small; the grid itself is built on the device
            grid = torch.stack(torch.broadcast_tensors(source[:, None, :, 0], source[:, :, None, 1]), -1)
            whole = len(moved) == len(x)
            part = (x if whole else x[moved.to(x.device)]) - fill  # zeros outside the image = the fill value
            sampled = F.grid_sample(part, grid, mode="bilinear", padding_mode="zeros", align_corners=False).add_(fill)
            x = sampled if whole else x.index_copy(0, moved.to(x.device), sampled)
            _fill_outside(x, canvas, fill)
        a, c = a.to(boxes.device), c.to(boxes.device)
        corners = boxes.view(*boxes.shape[:2], 2, 2) * a[:, None, None, :] + c[:, None, None, :]
        moved_boxes = torch.cat([corners.amin(2), corners.amax(2)], -1)
        limit = canvas.flip(1).to(boxes.device, torch.float32).repeat(1, 2)[:, None, :]
        moved_boxes = torch.minimum(moved_boxes.clamp(min=0), limit)
        return x, moved_boxes, full_area * a.prod(-1).abs()[:, None]


def _fill_outside(x: torch.Tensor, canvas: torch.Tensor, fill: float) -> None:
    """Pixels beyond each image's canvas (height, width) set to `fill` (the letterbox padding), in place."""
    size = x.shape[-1]
    for i, (height, width) in enumerate(canvas.tolist()):
        if height < size:
            x[i, :, height:] = fill
        if width < size:
            x[i, :, :, width:] = fill
