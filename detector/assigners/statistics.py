"""Assignment statistics: how many positive anchors each ground-truth box gets (by COCO size bucket and by feature
level), how good they are, and a warning that names the cause when too many boxes get none.

Three steps, so that an epoch's numbers are exact (sums of sums, never means of means) and correct under DDP:
  1. `assignment_statistics(...)`: the sums and counts of one batch, from the `Assignment` the criterion already
     has (no second assignment pass): a few reductions over (B, M) and (B, A) tensors, no host synchronisation.
     The criteria return them for their main (one-to-many) branch with the losses of training calls.
  2. `AssignmentStatistics`: a torchmetrics `Metric` that adds them up over an epoch; `compute()` reduces them
     across DDP ranks (sums, and minima for the minimum and the smallest stride / prior).
  3. `summarize(totals)`: the ratios that `LitDetector` logs as `assign/<name>` (listed in its docstring), and
     `unassigned_warning(totals, ...)`: the message when more than a share of the epoch's boxes got no positive.

Definitions (per epoch; a GT is a real row of gt_mask, padded rows are ignored; an image without GT adds only to
`images`): the positives of a GT are the foreground anchors of its image whose gt_index is its row. Size buckets
are COCO's, on the GT box in input pixels: small area < 32^2, medium < 96^2, large otherwise. The IoU of a positive
is that of its decoded predicted box with its assigned GT box; its quality is its largest soft class target
(max over classes of `assignment.scores`: 1 for the one-hot targets of the SSD matcher, TAL's alignment-based
value for TAL). Ratios without a denominator (a bucket without GT, an epoch without positives) are NaN.
"""

from __future__ import annotations

import math

import torch
from torchmetrics import Metric

from detector.assigners.base import Assignment
from detector.boxes import paired_box_iou
from detector.models.priors import Priors

SIZE_BUCKETS = ("small", "medium", "large")
AREA_LIMITS = (32**2, 96**2)  # COCO: small < 32^2 <= medium < 96^2 <= large (input pixels)
MAX_LEVELS = 16  # per-level sums are padded to this many levels (fixed shapes: DDP reduction)
NO_GT = torch.iinfo(torch.long).max  # the minimum of positives per GT over no GT

# name: (shape, dtype, initial value, how batches and ranks combine)
STATES: dict[str, tuple[tuple[int, ...], torch.dtype, float, str]] = {
    "images": ((), torch.long, 0, "sum"),
    "gts": ((3,), torch.long, 0, "sum"),  # per size bucket
    "gt_positives": ((3,), torch.long, 0, "sum"),  # positives of the GTs of each bucket
    "gts_without": ((3,), torch.long, 0, "sum"),  # GTs with no positive, per bucket
    "min_positives": ((3,), torch.long, NO_GT, "min"),  # fewest positives of one GT, per bucket
    "without_small": ((), torch.long, 0, "sum"),  # GTs with no positive that are smaller than `reference`
    "without_small_size": ((), torch.float32, 0.0, "sum"),  # the sum of their sizes (px)
    "positives": ((), torch.long, 0, "sum"),
    "level_positives": ((MAX_LEVELS,), torch.long, 0, "sum"),
    "levels": ((), torch.long, 0, "max"),
    "iou_sum": ((), torch.float32, 0.0, "sum"),
    "quality_sum": ((), torch.float32, 0.0, "sum"),
    "min_stride": ((), torch.float32, math.inf, "min"),  # the smallest stride of the priors (px)
    "min_prior": ((), torch.float32, math.inf, "min"),  # the smallest prior box, sqrt of its area (px); inf: none
}


def size_buckets(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) xyxy input pixels -> (...) COCO size bucket: 0 small, 1 medium, 2 large."""
    area = (boxes[..., 2:] - boxes[..., :2]).clamp(min=0).prod(-1)
    return (area >= AREA_LIMITS[0]).long() + (area >= AREA_LIMITS[1]).long()


@torch.no_grad()
def assignment_statistics(
    assignment: Assignment, gt_boxes: torch.Tensor, gt_mask: torch.Tensor, priors: Priors, pred_boxes: torch.Tensor,
    positives: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """The sums and counts of one batch (the keys of `STATES`), as tensors on the assignment's device.

    gt_boxes (B, M, 4) xyxy input pixels and gt_mask (B, M) as the criterion got them, `priors` the head's,
    pred_boxes (B, A, 4) the decoded predicted boxes in input pixels. `positives`: the (image, anchor) indices of the
    foreground (`foreground.nonzero(as_tuple=True)`) when the caller has them: the IoU and the quality are then
    computed on the positives only, not on every anchor and class (the same sums, cheaper).
    A GT counts as "small" for its head when it may be too small for any prior: on anchor-free heads
    (priors.boxes None) when its shorter side is below the smallest stride (it can fall between anchor points);
    on anchor-based heads when the square root of its area is below that of the smallest prior box."""
    foreground, gt_index = assignment.foreground, assignment.gt_index
    batch, num_gt = gt_mask.shape
    device = foreground.device
    valid = gt_mask.bool()
    gt_boxes = gt_boxes.float()
    if len(priors.level_sizes) > MAX_LEVELS:
        raise ValueError(f"{len(priors.level_sizes)} feature levels: the assignment statistics hold at most {MAX_LEVELS}")

    # positives of every GT row (B, M): the foreground anchors that point at it
    per_gt = torch.zeros(batch, num_gt, dtype=torch.long, device=device)
    if num_gt:
        per_gt.scatter_add_(1, gt_index, foreground.long())
    buckets = torch.arange(len(SIZE_BUCKETS), device=device)
    in_bucket = (size_buckets(gt_boxes).unsqueeze(-1) == buckets) & valid.unsqueeze(-1)  # (B, M, 3)
    without = in_bucket & (per_gt == 0).unsqueeze(-1)
    if num_gt:
        min_positives = per_gt.unsqueeze(-1).masked_fill(~in_bucket, NO_GT).amin((0, 1))
    else:
        min_positives = torch.full((len(SIZE_BUCKETS),), NO_GT, dtype=torch.long, device=device)

    # "too small for the priors": the GT's size against the smallest stride / prior box
    wh = (gt_boxes[..., 2:] - gt_boxes[..., :2]).clamp(min=0)
    min_stride = priors.strides.min().float().to(device)
    if priors.boxes is None:
        min_prior = torch.full((), math.inf, device=device)
        size, reference = wh.amin(-1), min_stride
    else:
        min_prior = (priors.boxes[:, 2:] - priors.boxes[:, :2]).clamp(min=0).prod(-1).sqrt().min().float().to(device)
        size, reference = wh.prod(-1).sqrt(), min_prior
    small = without.any(-1) & (size < reference)

    # positives per level, padded to MAX_LEVELS
    per_anchor = foreground.sum(0)  # (A,)
    levels = torch.zeros(MAX_LEVELS, dtype=torch.long, device=device)
    level_sums = [part.sum() for part in per_anchor.split(list(priors.level_sizes))]
    levels[:len(level_sums)] = torch.stack(level_sums)

    # a non-finite predicted box (a step that the module skips) counts as IoU 0 rather than making the epoch's mean NaN
    if positives is None:  # masked sums over every anchor (no synchronisation to find the positives)
        iou = paired_box_iou(pred_boxes.detach().float(), assignment.boxes.float())
        iou_sum = torch.where(foreground, iou, 0.0).nan_to_num(0.0).sum()
        quality_sum = torch.where(foreground, assignment.scores.detach().amax(-1).float(), 0.0).sum()
    else:  # index_select on flat (image, anchor) rows: faster than advanced indexing
        rows = positives[0] * foreground.shape[1] + positives[1]

        def select(values: torch.Tensor) -> torch.Tensor:
            return values.detach().reshape(-1, values.shape[-1]).index_select(0, rows)

        iou = paired_box_iou(select(pred_boxes).float(), select(assignment.boxes).float())
        iou_sum = iou.nan_to_num(0.0).sum()
        quality_sum = select(assignment.scores).amax(-1).float().sum()
    return {
        "images": torch.full((), batch, dtype=torch.long, device=device),  # full, not tensor: no host-to-device copy
        "gts": in_bucket.sum((0, 1)),
        "gt_positives": (per_gt.unsqueeze(-1) * in_bucket).sum((0, 1)),
        "gts_without": without.sum((0, 1)),
        "min_positives": min_positives,
        "without_small": small.sum(),
        "without_small_size": torch.where(small, size, 0.0).sum(),
        "positives": foreground.sum(),
        "level_positives": levels,
        "levels": torch.full((), len(priors.level_sizes), dtype=torch.long, device=device),
        "iou_sum": iou_sum,
        "quality_sum": quality_sum,
        "min_stride": min_stride,
        "min_prior": min_prior,
    }


class AssignmentStatistics(Metric):
    """The sums of `assignment_statistics` over an epoch: `update(batch_sums)`, `compute()` -> the totals (summed,
    or the minimum / maximum, across batches and DDP ranks), `reset()`. Its states are not saved in checkpoints."""

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        for name, (shape, dtype, initial, reduction) in STATES.items():
            self.add_state(name, default=torch.full(shape, initial, dtype=dtype), dist_reduce_fx=reduction)

    def update(self, batch: dict[str, torch.Tensor]) -> None:
        for name, (_, dtype, _, reduction) in STATES.items():
            total, value = getattr(self, name), batch[name].to(device=self.device, dtype=dtype)
            if reduction == "sum":
                combined = total + value
            elif reduction == "min":
                combined = torch.minimum(total, value)
            else:
                combined = torch.maximum(total, value)
            setattr(self, name, combined)

    def compute(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in STATES}


def totals_to_python(totals: dict[str, torch.Tensor]) -> dict[str, int | float | list]:
    """The totals as Python numbers and lists (one host transfer per state, once per epoch)."""
    return {name: value.tolist() for name, value in totals.items()}


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


def summarize(totals: dict) -> dict[str, float]:
    """The epoch's ratios from its totals (tensors or Python numbers):

    gt_count            real GT boxes seen
    pos_per_gt          positives per GT (mean);  pos_per_gt_min  the fewest of one GT
    gt_without_pos      share of the GTs with no positive
    *_{small,medium,large}  the same four within each COCO size bucket
    level{k}_pos_per_gt positives of level k per GT (they add up to pos_per_gt)
    level{k}_share      share of the positives on level k
    pos_iou             mean IoU of the positives' decoded boxes with their GT
    pos_quality         mean soft target (max over classes) of the positives
    pos_per_image       positive anchors per image"""
    t = {name: (value.tolist() if isinstance(value, torch.Tensor) else value) for name, value in totals.items()}
    gts, positives = sum(t["gts"]), t["positives"]
    known_min = [m for m in t["min_positives"] if m != NO_GT]
    out = {
        "gt_count": float(gts),
        "pos_per_gt": _ratio(sum(t["gt_positives"]), gts),
        "pos_per_gt_min": float(min(known_min)) if known_min else math.nan,
        "gt_without_pos": _ratio(sum(t["gts_without"]), gts),
    }
    for k, bucket in enumerate(SIZE_BUCKETS):
        out[f"gt_count_{bucket}"] = float(t["gts"][k])
        out[f"pos_per_gt_{bucket}"] = _ratio(t["gt_positives"][k], t["gts"][k])
        out[f"pos_per_gt_min_{bucket}"] = float(t["min_positives"][k]) if t["min_positives"][k] != NO_GT else math.nan
        out[f"gt_without_pos_{bucket}"] = _ratio(t["gts_without"][k], t["gts"][k])
    for level in range(int(t["levels"])):
        out[f"level{level}_pos_per_gt"] = _ratio(t["level_positives"][level], gts)
        out[f"level{level}_share"] = _ratio(t["level_positives"][level], positives)
    out["pos_iou"] = _ratio(t["iou_sum"], positives)
    out["pos_quality"] = _ratio(t["quality_sum"], positives)
    out["pos_per_image"] = _ratio(positives, t["images"])
    return out


def _round_up(value: float, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


def unassigned_warning(totals: dict, threshold: float, img_size: int | None = None, epoch: int | None = None) -> str | None:
    """The warning when more than `threshold` (a share) of the epoch's GTs got no positive, else None: how many,
    their size buckets, and the likely reason with the override that helps (boxes smaller than the smallest
    stride at this `data.img_size` on anchor-free heads; prior boxes too large on anchor-based heads; else
    crowded or duplicate boxes and the assigner's limits)."""
    t = {name: (value.tolist() if isinstance(value, torch.Tensor) else value) for name, value in totals.items()}
    gts, without = sum(t["gts"]), sum(t["gts_without"])
    if not gts or without / gts <= threshold:
        return None
    when = f"epoch {epoch}: " if epoch is not None else ""
    split = ", ".join(f"{bucket} {n}" for bucket, n in zip(SIZE_BUCKETS, t["gts_without"]))
    lines = [f"{when}{without} of {gts} ground-truth boxes ({without / gts:.1%}) got no positive anchor "
             f"(more than {threshold:.1%}); by size: {split}."]
    small = int(t["without_small"])
    at_size = f"data.img_size={img_size}" if img_size else "this data.img_size"
    mean_size = t["without_small_size"] / small if small else 0.0
    if small and math.isinf(t["min_prior"]):
        stride = t["min_stride"]
        larger = (f"data.img_size={_round_up(img_size * min(max(stride / max(mean_size, 1e-6), 1.25), 4.0), 32)}"
                  if img_size else "a larger data.img_size")
        lines.append(
            f"{small} of them have a side shorter than the smallest stride ({stride:g} px) at {at_size} (mean "
            f"{mean_size:.1f} px), so they can fall between the anchor points: train at a larger size ({larger}) or, "
            "with TAL, widen small boxes for the candidate test (assigner=tal_small, i.e. assigner.small_objects=true).")
    elif small:
        prior = t["min_prior"]
        scale = f"={max(mean_size / img_size, 0.001):.3f}" if img_size else ""
        lines.append(
            f"{small} of them are smaller (square root of the area, mean {mean_size:.1f} px) than the smallest prior "
            f"box ({prior:.1f} px) at {at_size}: the priors are too large for them. Lower the prior scales: "
            f"model.first_scale{scale} (the first level) and model.min_scale, or model.scales when the model config "
            "lists them (model=ssd300_vgg16 does).")
    if without > small:
        lines.append(
            f"{without - small} of them are not smaller than the priors: they lose their anchors to overlapping boxes "
            "(crowded or duplicate ground truth: scripts/check_dataset.py) or to the assigner's limits "
            "(e.g. a larger assigner.topk for TAL and ATSS).")
    return " ".join(lines)
