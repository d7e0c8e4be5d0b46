"""The dataset doctor of `check_dataset`: what in a usable dataset will still hurt training with the chosen model.

On the records that passed the checks (detector.data.checks), with the boxes as training sees them after the
letterbox to `data.img_size` (longest side -> img_size, top-left, no augmentation):
- a histogram of box sizes (sqrt of the area, px) against the model's strides and prior sizes (text and PNG);
- the boxes the chosen model family cannot match at this size:
  anchor-free heads: boxes that contain no anchor point of any level (points at (i + 0.5) * stride). TAL and ATSS
  take candidates only among the points inside a box, so these get no positive; `assigner=tal_small` widens sides
  shorter than the second stride to it for the candidate test (counted when the caller passes that rule as
  `widen`); SimOTA's centre region (2.5 strides) reaches them.
  anchor-based heads (SSD priors): boxes whose best prior IoU is below the matcher's threshold (only their one
  forced best prior becomes positive), and those that overlap no prior at all (no positive);
- class imbalance (boxes per class), duplicate boxes (same image, same class, IoU > 0.95), and images with a box
  that covers almost the whole image (>= 90% of its area: often a whole-image label or a box in the wrong format).

The data stage reads the model only through what the caller gives: the priors of its head output (`PriorLayout`,
e.g. `detector.models.build.model_priors`) and optionally an assigner's box widening.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torchvision.ops import box_iou

from detector.data.dataset import Record
from detector.data.transforms import letterbox_scale

SIZE_BINS = (0, 4, 8, 16, 32, 64, 128, 256, 512, 1024, math.inf)  # sqrt(area), px after the letterbox
DUPLICATE_IOU = 0.95
WHOLE_IMAGE = 0.9


class PriorLayout(Protocol):
    """What the doctor reads of a head output's priors (detector.models.priors.Priors): prior boxes (anchor-based
    heads, else None), the number of priors and the stride of each level."""

    boxes: torch.Tensor | None
    level_sizes: tuple[int, ...]

    def level_strides(self) -> list[float]: ...


@dataclass
class Diagnosis:
    img_size: int
    strides: list[float]
    prior_sizes: list[float]  # sqrt(area) of the distinct prior boxes (anchor-based heads), px
    sizes: np.ndarray  # (N,) sqrt(area) of every box after the letterbox
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))  # (N, 4) xyxy px after the letterbox
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (N,) class of each box
    no_anchor_point: int | None = None  # anchor-free: boxes that contain no anchor point
    no_anchor_point_widened: int | None = None  # the same with TAL's small-object widening
    below_threshold: int | None = None  # anchor-based: best prior IoU < threshold
    no_prior: int | None = None  # anchor-based: best prior IoU == 0
    iou_threshold: float | None = None
    class_counts: list[int] = field(default_factory=list)
    duplicates: int = 0
    duplicate_examples: list[str] = field(default_factory=list)
    whole_image: int = 0
    whole_image_examples: list[str] = field(default_factory=list)


def letterboxed_boxes(record: Record, img_size: int) -> np.ndarray:
    """(n, 4) the record's boxes in the pixels of its letterboxed image."""
    sx, sy = letterbox_scale(record.height, record.width, img_size)
    return np.asarray(record.boxes, np.float64).reshape(-1, 4) * (sx, sy, sx, sy)


def points_inside(boxes: np.ndarray, stride: float, grid: int) -> np.ndarray:
    """(n,) how many points (i + 0.5) * stride, i in 0..grid-1, of one level lie strictly inside each box."""
    counts = []
    for low, high in ((boxes[:, 0], boxes[:, 2]), (boxes[:, 1], boxes[:, 3])):
        first = np.floor(low / stride - 0.5) + 1  # first i with (i + 0.5) * stride > low
        last = np.ceil(high / stride - 0.5) - 1  # last i with (i + 0.5) * stride < high
        counts.append(np.clip(np.minimum(last, grid - 1) - np.maximum(first, 0) + 1, 0, None))
    return counts[0] * counts[1]


def diagnose(records: Sequence[Record], num_classes: int, img_size: int, priors: PriorLayout | None,
             iou_threshold: float = 0.5, widen: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Diagnosis:
    """The doctor's findings on `records` for a model whose head output has `priors` at `img_size` (None: the label
    statistics alone, without strides, prior sizes and unmatchable boxes). `widen`: an assigner's small-box rule,
    (n, 4) xyxy -> (n, 4) (e.g. TAL's `widen_small_boxes` with these priors); None: the widened count is not made."""
    per_image = [letterboxed_boxes(r, img_size) for r in records]
    boxes = np.concatenate(per_image) if per_image else np.zeros((0, 4))
    sizes = np.sqrt(np.prod(np.clip(boxes[:, 2:] - boxes[:, :2], 0, None), 1))
    strides = priors.level_strides() if priors is not None else []
    labels = [np.asarray(r.labels, np.int64).reshape(-1) for r in records]
    diagnosis = Diagnosis(img_size, strides, [], sizes, boxes, np.concatenate(labels) if labels else np.zeros(0, np.int64))
    if priors is not None and priors.boxes is None:
        grids = [round(math.sqrt(n)) for n in priors.level_sizes]  # square input: a grid of g x g points per level
        inside = lambda b: sum(points_inside(b, s, g) for s, g in zip(strides, grids))  # noqa: E731
        diagnosis.no_anchor_point = int((inside(boxes) == 0).sum())
        if widen is not None:
            diagnosis.no_anchor_point_widened = int((inside(widen(torch.as_tensor(boxes)).numpy()) == 0).sum())
    elif priors is not None:
        prior_boxes = priors.boxes.float()
        areas = ((prior_boxes[:, 2:] - prior_boxes[:, :2]).prod(1)).sqrt()
        diagnosis.prior_sizes = sorted({round(float(a), 1) for a in areas})
        best = torch.cat([box_iou(torch.as_tensor(chunk, dtype=torch.float32), prior_boxes).max(1).values
                          for chunk in np.array_split(boxes, max(1, len(boxes) // 2048 + 1)) if len(chunk)] or [torch.zeros(0)])
        diagnosis.iou_threshold = iou_threshold
        diagnosis.below_threshold = int((best < iou_threshold).sum())
        diagnosis.no_prior = int((best <= 0).sum())
    counts = np.zeros(num_classes, np.int64)
    for record, letterboxed in zip(records, per_image):
        labels = np.asarray(record.labels, np.int64).reshape(-1)
        np.add.at(counts, labels, 1)
        if len(labels) > 1:
            iou = box_iou(torch.as_tensor(letterboxed), torch.as_tensor(letterboxed)).numpy()
            same = (labels[:, None] == labels[None]) & (iou > DUPLICATE_IOU)
            pairs = int(np.triu(same, 1).sum())
            if pairs:
                diagnosis.duplicates += pairs
                if len(diagnosis.duplicate_examples) < 5:
                    diagnosis.duplicate_examples.append(f"{record.image_path.name}: {pairs} pair(s)")
        if len(labels):
            original = np.asarray(record.boxes, np.float64).reshape(-1, 4)
            box_areas = np.prod(np.clip(original[:, 2:] - original[:, :2], 0, None), 1)
            if (box_areas >= WHOLE_IMAGE * record.width * record.height).any():
                diagnosis.whole_image += 1
                if len(diagnosis.whole_image_examples) < 5:
                    diagnosis.whole_image_examples.append(record.image_path.name)
    diagnosis.class_counts = counts.tolist()
    return diagnosis


def _share(count: int, total: int) -> str:
    return f"{count} ({100 * count / total:.1f}%)" if total else "0"


def size_histogram(diagnosis: Diagnosis) -> list[str]:
    """Text lines: the box count of each size bin, with the strides and prior sizes that fall in it."""
    counts, _ = np.histogram(diagnosis.sizes, bins=np.array(SIZE_BINS, dtype=float))
    width = max(1, counts.max()) if len(counts) else 1
    lines = []
    for (low, high), count in zip(zip(SIZE_BINS[:-1], SIZE_BINS[1:]), counts):
        if low > diagnosis.img_size and count == 0:
            break
        marks = [f"stride {s:g}" for s in diagnosis.strides if low <= s < high]
        marks += [f"prior {p:g}" for p in diagnosis.prior_sizes if low <= p < high][:3]
        label = f"{low:g}-{high:g}" if high != math.inf else f">= {low:g}"
        lines.append(f"  {label:>10} px {count:7d} {'#' * round(40 * count / width):<40} {', '.join(marks)}".rstrip())
    return lines


def report_lines(diagnosis: Diagnosis, class_names: Sequence[str]) -> list[str]:
    """The doctor's report: the histogram and every finding, with what to do about it."""
    total = len(diagnosis.sizes)
    lines = [f"box sizes (sqrt of area, px) after the letterbox to data.img_size={diagnosis.img_size}:",
             *size_histogram(diagnosis)]
    smallest = diagnosis.strides[0] if diagnosis.strides else None
    if diagnosis.no_anchor_point is not None:
        widened = ("" if diagnosis.no_anchor_point_widened is None else
                   f"with assigner=tal_small {_share(diagnosis.no_anchor_point_widened, total)}; ")
        lines.append(f"boxes that contain no anchor point at strides {', '.join(f'{s:g}' for s in diagnosis.strides)}: "
                     f"{_share(diagnosis.no_anchor_point, total)} (TAL and ATSS give them no positive; {widened}"
                     "SimOTA reaches them)")
        if diagnosis.no_anchor_point:
            lines.append(f"  -> raise data.img_size (boxes scale with it), or assigner=tal_small / assigner=simota; "
                         f"boxes under the smallest stride ({smallest:g} px) are hard for any anchor-free head")
    if diagnosis.below_threshold is not None:
        lines.append(f"boxes whose best prior IoU < {diagnosis.iou_threshold:g}: {_share(diagnosis.below_threshold, total)} "
                     f"(only their one forced best prior is positive); overlapping no prior: "
                     f"{_share(diagnosis.no_prior, total)} (no positive)")
        if diagnosis.below_threshold:
            lines.append("  -> smaller prior scales (model.first_scale / model.min_scale, docs/ssd.md) or a larger "
                         "data.img_size")
    counts = np.array(diagnosis.class_counts)
    if len(counts):
        present = counts[counts > 0]
        ratio = present.max() / present.min() if len(present) else float("nan")
        rare = [f"{class_names[i]} ({c})" for i, c in enumerate(counts) if c < 0.01 * counts.sum()]
        lines.append(f"class imbalance: most/least frequent present class {ratio:.1f}x; classes under 1% of the boxes: "
                     f"{', '.join(rare[:10]) or 'none'}{' ...' if len(rare) > 10 else ''}")
    lines.append(f"duplicate boxes (same image and class, IoU > {DUPLICATE_IOU}): {diagnosis.duplicates} pair(s)"
                 + (f", e.g. {'; '.join(diagnosis.duplicate_examples)}" if diagnosis.duplicates else ""))
    lines.append(f"images with a box covering >= {WHOLE_IMAGE:.0%} of the image: {diagnosis.whole_image}"
                 + (f", e.g. {', '.join(diagnosis.whole_image_examples)}" if diagnosis.whole_image else ""))
    return lines


def plot_sizes(diagnosis: Diagnosis, path: str | Path, title: str = "") -> Path:
    """PNG: the histogram of box sizes (log bins) with the strides (dashed) and prior sizes (dotted)."""
    from matplotlib.figure import Figure  # the Agg canvas: no pyplot, no global backend change

    from detector.evaluation.plots import save_figure

    figure = Figure(figsize=(7, 3.5))
    ax = figure.add_subplot()
    _size_panel(ax, diagnosis)
    ax.set_title(title, fontsize=9)
    return save_figure(figure, path, dpi=110)


def plot_labels(diagnosis: Diagnosis, class_names: Sequence[str], path: str | Path, title: str = "") -> Path:
    """PNG of the label statistics (a training run's labels.png): boxes per class, the box-size histogram of
    `plot_sizes`, the aspect ratios w/h (log bins) and the box centres over the letterboxed image."""
    from matplotlib.figure import Figure

    from detector.evaluation.plots import save_figure

    figure = Figure(figsize=(12, 7.5))
    (counts_ax, sizes_ax), (aspect_ax, centres_ax) = figure.subplots(2, 2)
    names = list(class_names) or [str(k) for k in range(len(diagnosis.class_counts))]
    counts_ax.bar(range(len(names)), diagnosis.class_counts, color="tab:blue")
    counts_ax.set_xticks(range(len(names)), names, rotation=90 if len(names) > 8 else 0,
                         fontsize=8 if len(names) <= 30 else 5)
    counts_ax.set(ylabel="boxes", title="boxes per class")
    _size_panel(sizes_ax, diagnosis)
    sizes_ax.set_xlabel(sizes_ax.get_xlabel(), fontsize=8)
    wh = np.clip(diagnosis.boxes[:, 2:] - diagnosis.boxes[:, :2], 0, None) if len(diagnosis.boxes) else np.zeros((0, 2))
    aspect = wh[:, 0] / np.maximum(wh[:, 1], 1e-9)
    aspect = aspect[(aspect > 0) & np.isfinite(aspect)]
    top = max(float(np.abs(np.log2(aspect)).max()) if len(aspect) else 1.0, 1.0)
    aspect_ax.hist(aspect, bins=np.geomspace(2**-top, 2**top, 41), color="tab:blue", alpha=0.8)
    aspect_ax.set_xscale("log")
    aspect_ax.set(xlabel="aspect ratio w/h", ylabel="boxes", title="box shapes")
    centres = (diagnosis.boxes[:, :2] + diagnosis.boxes[:, 2:]) / 2 if len(diagnosis.boxes) else np.zeros((0, 2))
    size = diagnosis.img_size
    centres_ax.hist2d(centres[:, 0], centres[:, 1], bins=32, range=[[0, size], [0, size]], cmap="Blues")
    centres_ax.set(xlim=(0, size), ylim=(size, 0), aspect="equal", xlabel="x (px)", ylabel="y (px)",
                   title=f"box centres in the {size} px letterboxed image")
    figure.suptitle(title or f"{len(diagnosis.boxes)} boxes", fontsize=10)
    figure.tight_layout()
    return save_figure(figure, path, dpi=100)


def _size_panel(ax, diagnosis: Diagnosis) -> None:
    """The histogram of box sizes (log bins) with the strides (dashed) and prior sizes (dotted) on `ax`."""
    sizes = diagnosis.sizes[diagnosis.sizes > 0]
    top = max(float(sizes.max()) if len(sizes) else 1.0, diagnosis.img_size)
    ax.hist(sizes, bins=np.geomspace(1, top * 1.01, 40), color="tab:blue", alpha=0.8)
    ax.set_xscale("log")
    for stride in diagnosis.strides:
        ax.axvline(stride, color="tab:red", ls="--", lw=1)
    for prior in diagnosis.prior_sizes:
        ax.axvline(prior, color="tab:green", ls=":", lw=0.8)
    ax.set_xlabel(f"box size sqrt(w*h), px at img_size {diagnosis.img_size} (red: strides, green: prior boxes)")
    ax.set_ylabel("boxes")

