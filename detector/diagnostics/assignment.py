"""See what an assigner does on one image: per ground-truth box, its positive anchors (how many, on which levels,
their soft targets) and the best IoU any anchor offered it, drawn one panel per feature level.

`assign_sample` runs a model and a criterion's assignment on one dataset sample (no training step, no gradients);
`summarize_gts` turns the `Assignment` into one `GTSummary` per box; `draw_assignments` draws the panels of one or
more assigners for the same image; `visualize_assignments` does all three for composed configs, one row each (the
command `detector-visualize-assignment`, detector/cli.py, composes them).

"Best IoU" of a GT: over all anchors, of the box the assigner compares with it: the prior box on anchor-based heads
(SSD), the decoded predicted box on anchor-free heads (with an untrained model these are near-random boxes); and
over its positives only. A GT with a high best IoU and no positives is one the assigner left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torchvision.ops import box_iou

from detector.assigners.base import Assignment
from detector.config import check_combination
from detector.deploy.load import load_detector
from detector.models.build import build_model
from detector.models.priors import Priors


@dataclass
class GTSummary:
    index: int
    label: int
    box: tuple[float, float, float, float]  # xyxy input pixels
    positives: int
    level_positives: list[int]
    best_iou: float  # over every anchor
    best_positive_iou: float  # over its positives (nan without)
    mean_target: float  # mean soft target (largest class target) of its positives (nan without)

    def line(self, class_names: list[str], strides: list[float]) -> str:
        x1, y1, x2, y2 = self.box
        levels = ", ".join(f"stride {s:g}: {n}" for s, n in zip(strides, self.level_positives) if n)
        name = class_names[self.label] if 0 <= self.label < len(class_names) else str(self.label)
        return (f"GT {self.index} {name} {x2 - x1:.0f}x{y2 - y1:.0f} px: {self.positives} positives"
                f"{f' ({levels})' if levels else ''}, best IoU {self.best_iou:.2f} (positives {self.best_positive_iou:.2f}),"
                f" mean soft target {self.mean_target:.3g}")


@torch.no_grad()
def assign_sample(model: torch.nn.Module, criterion: torch.nn.Module, sample: dict) -> tuple[Assignment, object]:
    """(assignment, head output) of one dataset sample (`DetectionDataset[i]`) with the model in eval mode."""
    model.eval()
    device = next(model.parameters()).device
    images = sample["image"][None].to(device).float() / 255
    output = model(images)
    boxes, labels = sample["boxes"][None].to(device).float(), sample["labels"][None].to(device)
    mask = torch.ones_like(labels, dtype=torch.bool)
    return criterion.assign(output, labels, boxes, mask), output


def anchor_boxes(output: object) -> torch.Tensor:
    """(A, 4) the box each anchor offers a GT: prior boxes on anchor-based heads, else the decoded predictions."""
    priors: Priors = output.priors
    return priors.boxes if priors.boxes is not None else output.decode_boxes()[0]


def summarize_gts(assignment: Assignment, output: object, gt_boxes: torch.Tensor, gt_labels: torch.Tensor) -> list[GTSummary]:
    """One `GTSummary` per GT of a one-image assignment (batch size 1)."""
    priors: Priors = output.priors
    foreground, gt_index = assignment.foreground[0], assignment.gt_index[0]
    quality = assignment.scores[0].max(-1).values.float()
    level = torch.repeat_interleave(torch.arange(len(priors.level_sizes), device=foreground.device),
                                    torch.tensor(priors.level_sizes, device=foreground.device))
    ious = box_iou(gt_boxes.float().to(foreground.device), anchor_boxes(output).float()) if len(gt_boxes) else None
    summaries = []
    for g in range(len(gt_boxes)):
        positive = foreground & (gt_index == g)
        count = int(positive.sum())
        summaries.append(GTSummary(
            index=g, label=int(gt_labels[g]), box=tuple(float(v) for v in gt_boxes[g]), positives=count,
            level_positives=torch.bincount(level[positive], minlength=len(priors.level_sizes)).tolist(),
            best_iou=float(ious[g].max()) if ious.shape[1] else float("nan"),
            best_positive_iou=float(ious[g][positive].max()) if count else float("nan"),
            mean_target=float(quality[positive].mean()) if count else float("nan"),
        ))
    return summaries


def draw_assignments(
    image: np.ndarray, gt_boxes: torch.Tensor, results: dict[str, tuple[Assignment, object]], path: str | Path,
    title: str = "",
) -> Path:
    """One row per assigner (`results`: name -> (assignment, head output) of the same image), one panel per level:
    the GT boxes in one colour each, and each positive of a GT in its colour, sized by its soft target (anchor
    points as dots on anchor-free heads, prior boxes as rectangles on anchor-based heads). Writes a PNG."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure  # the Agg canvas: no pyplot, no global backend change
    from matplotlib.patches import Rectangle

    from detector.evaluation.plots import save_figure

    gt = gt_boxes.cpu().numpy().reshape(-1, 4)
    colours = colormaps["tab20"](np.arange(max(len(gt), 1)) % 20)
    rows = list(results.items())
    columns = max(len(output.priors.level_sizes) for _, output in results.values())
    figure = Figure(figsize=(3.2 * columns, 3.4 * len(rows)), layout="tight")
    axes = figure.subplots(len(rows), columns, squeeze=False)
    for row, (name, (assignment, output)) in enumerate(rows):
        priors: Priors = output.priors
        foreground, gt_index = assignment.foreground[0].cpu(), assignment.gt_index[0].cpu()
        quality = assignment.scores[0].max(-1).values.float().cpu()
        top = float(quality[foreground].max()) if foreground.any() else 1.0
        starts, strides = [*priors.level_starts(), len(priors.points)], priors.level_strides()
        for column, ax in enumerate(axes[row]):
            ax.set_axis_off()
            if column >= len(priors.level_sizes):
                continue
            ax.imshow(image)
            for g, (x1, y1, x2, y2) in enumerate(gt):
                ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=1.5, ec=colours[g]))
            level = slice(starts[column], starts[column + 1])
            chosen = foreground[level].nonzero().flatten() + starts[column]
            size = 0.2 + quality[chosen] / max(top, 1e-12)  # relative soft target, 0.2..1.2
            if priors.boxes is None:
                points = priors.points[chosen].cpu().numpy()
                ax.scatter(points[:, 0], points[:, 1], s=(40 * size).numpy(), c=colours[gt_index[chosen].numpy()],
                           edgecolors="white", linewidths=0.5)
            else:
                for anchor, scale in zip(chosen.tolist(), size.tolist()):
                    x1, y1, x2, y2 = priors.boxes[anchor].tolist()
                    ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=1.5 * scale,
                                           ec=colours[int(gt_index[anchor])], ls="--"))
            ax.set_title(f"{name} | stride {strides[column]:g} | {len(chosen)} positives", fontsize=8)
    if title:
        figure.suptitle(title, fontsize=9)
    return save_figure(figure, path, dpi=110)


def visualize_assignments(configs: Mapping[str, DictConfig]) -> list[str]:
    """Draw the assignments of every config (row label -> a composed configs/visualize_assignment.yaml) on the same
    images: the model (`ckpt_path`, else untrained, seeded), the images and `output_dir` come from the first config,
    the criterion (assigner, losses) from each. Writes <output_dir>/<split>_<image id>.png and summary.txt and returns
    the summary's lines. ValueError when the checkpoint's class count is not `data.num_classes`."""
    first = next(iter(configs.values()))
    for cfg in configs.values():
        check_combination(cfg)
    if first.ckpt_path:
        model, _, meta = load_detector(first.ckpt_path, device=first.device)
        if meta["num_classes"] != first.data.num_classes:
            raise ValueError(f"the checkpoint has {meta['num_classes']} classes, data.num_classes is "
                             f"{first.data.num_classes}: pass the data it was trained on (data=...)")
    else:
        torch.manual_seed(first.seed)
        model = build_model(OmegaConf.to_container(first.model, resolve=True)).to(first.device)
    dataset = hydra.utils.instantiate(first.data).unaugmented_dataset(first.split)
    samples = [dataset[i] for i in range(first.first_image, min(first.first_image + first.num_images, len(dataset)))]
    results = {}
    for label, cfg in configs.items():
        criterion = hydra.utils.instantiate(cfg.criterion).to(first.device)
        results[label] = [assign_sample(model, criterion, sample) for sample in samples]
    output_dir, lines = Path(first.output_dir), []
    for i, sample in enumerate(samples):
        per_row = {label: runs[i] for label, runs in results.items()}
        path = draw_assignments(sample["image"].permute(1, 2, 0).numpy(), sample["boxes"], per_row,
                                output_dir / f"{first.split}_{sample['image_id']}.png",
                                title=f"{first.split} image {sample['image_id']}")
        lines.append(f"{path.name}:")
        for label, (assignment, output) in per_row.items():
            strides = output.priors.level_strides()
            for summary in summarize_gts(assignment, output, sample["boxes"], sample["labels"]):
                lines.append(f"  {label}: {summary.line(dataset.class_names, strides)}")
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "summary.txt").write_text("\n".join(lines) + "\n")
    return lines
