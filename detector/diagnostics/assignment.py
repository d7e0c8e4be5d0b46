"""See what an assigner does on one image: per ground-truth box, its positive anchors (how many, on which levels,
their soft targets) and the best IoU any anchor offered it, drawn one panel per feature level.

`assign_sample` runs a model and a criterion's assignment on one dataset sample (no training step, no gradients);
`summarize_gts` turns the `Assignment` into one `GTSummary` per box; `draw_assignments` draws the panels of one or
more assigners for the same image. `scripts/visualize_assignment.py` (detector-visualize-assignment) is the command.

"Best IoU" of a GT: over all anchors, of the box the assigner compares with it: the prior box on anchor-based heads
(SSD), the decoded predicted box on anchor-free heads (with an untrained model these are near-random boxes); and
over its positives only. A GT with a high best IoU and no positives is one the assigner left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import box_iou

from detector.assigners.base import Assignment
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


VISUALIZE_USAGE = """Draw what assigners do on a few images of a dataset: per GT box its positive anchors, one panel per level.

    python scripts/visualize_assignment.py [assigner=tal,atss,simota] [data=...] [model=...] [key=value ...]
    python scripts/visualize_assignment.py data=shapes_tiny assigner=tal,tal_small num_images=4
    python scripts/visualize_assignment.py model=ssd_csp_n data.img_size=320 split=train
    python scripts/visualize_assignment.py ckpt_path=logs/train/runs/<run>/checkpoints/best.ckpt assigner=tal,atss

Any override of train.py composes the same config (configs/visualize_assignment.yaml adds ckpt_path, split,
first_image, num_images, device, output_dir); `assigner=` takes a comma-separated list, drawn as rows of the same
figure. Writes <output_dir>/<image>.png and <output_dir>/summary.txt (a line per GT: positives per level, best IoU).
"""


def visualize_command(argv: list[str], config_dir: Path) -> int:
    """The command line of scripts/visualize_assignment.py; returns the exit status."""
    import hydra
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from detector.config import check_combination, register_resolvers
    from detector.deploy.load import load_detector
    from detector.models.build import build_model

    if any(arg in ("-h", "--help") for arg in argv):
        print(VISUALIZE_USAGE)
        return 0
    assigners = next((a.split("=", 1)[1].split(",") for a in argv if a.startswith("assigner=")), [None])
    overrides = [a for a in argv if not a.startswith("assigner=")]
    register_resolvers()
    results: dict[str, list] = {}
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        for name in assigners:
            cfg = compose("visualize_assignment", overrides=overrides + ([f"assigner={name}"] if name else []),
                          return_hydra_config=True)
            check_combination(cfg)
            criterion = hydra.utils.instantiate(cfg.criterion).to(cfg.device)
            if not results:  # the model and the images: the same for every assigner
                if cfg.ckpt_path:
                    model, _, meta = load_detector(cfg.ckpt_path, device=cfg.device)
                    if meta["num_classes"] != cfg.data.num_classes:
                        raise SystemExit(f"error: the checkpoint has {meta['num_classes']} classes, data.num_classes "
                                         f"is {cfg.data.num_classes}: pass the data it was trained on (data=...)")
                else:
                    torch.manual_seed(cfg.seed)
                    model = build_model(OmegaConf.to_container(cfg.model, resolve=True)).to(cfg.device)
                datamodule = hydra.utils.instantiate(cfg.data)
                dataset = datamodule.unaugmented_dataset(cfg.split)
                indices = range(cfg.first_image, min(cfg.first_image + cfg.num_images, len(dataset)))
                samples = [dataset[i] for i in indices]
                class_names, output_dir = dataset.class_names, Path(cfg.output_dir)
            label = cfg.hydra.runtime.choices.assigner  # the config option, e.g. tal_small
            results[label] = [assign_sample(model, criterion, sample) for sample in samples]
    lines = []
    for i, sample in enumerate(samples):
        stem = f"{cfg.split}_{sample['image_id']}"
        image = sample["image"].permute(1, 2, 0).numpy()
        per_assigner = {name: runs[i] for name, runs in results.items()}
        path = draw_assignments(image, sample["boxes"], per_assigner, output_dir / f"{stem}.png",
                                title=f"{cfg.split} image {sample['image_id']}")
        lines.append(f"{path.name}:")
        for name, (assignment, output) in per_assigner.items():
            strides = output.priors.level_strides()
            for summary in summarize_gts(assignment, output, sample["boxes"], sample["labels"]):
                lines.append(f"  {name}: {summary.line(class_names, strides)}")
    (output_dir / "summary.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {len(samples)} figures and summary.txt to {output_dir}")
    return 0
