"""Evaluation plots: precision-recall curves per class and overall at IoU 0.5 and averaged over IoU 0.5:0.95,
and the confusion matrix with its background row/column. matplotlib `Figure` objects saved with the Agg
canvas: no display, no pyplot state, no change of the process-wide backend."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # drawn with the Agg canvas; no pyplot, no display, no global backend change

MAX_LEGEND_CLASSES = 20
MAX_ANNOTATED_CLASSES = 30


def save_figure(figure: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Write `figure` to `path` (its folder created) with a tight bounding box; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def pr_curves(evaluator, category_ids: Sequence[int]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Recall points (R,) and, for "iou50" and "iou50-95", precision (K, R) per class in `category_ids` order
    (NaN for a class without ground truth) from a finished COCOeval (area all, 100 detections)."""
    precision = np.asarray(evaluator.eval["precision"], np.float64)[:, :, :, 0, -1]  # (T, R, K)
    iou_thresholds = np.asarray(evaluator.params.iouThrs)
    t50 = int(np.argmin(np.abs(iou_thresholds - 0.5)))
    index = {int(c): k for k, c in enumerate(evaluator.params.catIds)}
    curves = {}
    for name, p in (("iou50", precision[t50:t50 + 1]), ("iou50-95", precision)):
        per_class = []
        for category_id in category_ids:
            k = index.get(int(category_id))
            values = p[:, :, k] if k is not None else np.full(p.shape[:2], -1.0)
            per_class.append(np.where((values > -1).all(0), np.where(values > -1, values, 0).mean(0), np.nan))
        curves[name] = np.stack(per_class) if per_class else np.zeros((0, p.shape[1]))
    return np.asarray(evaluator.params.recThrs, np.float64), curves


def plot_pr_curves(evaluator, class_names: Sequence[str], category_ids: Sequence[int], out_dir: str | Path,
                   dpi: int = 120) -> list[Path]:
    """Writes pr_curve_iou50.png and pr_curve_iou50-95.png (one thin line per class, the class mean thick;
    the legend gives each class's AP, the area under its curve); returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    recall, curves = pr_curves(evaluator, category_ids)
    paths = []
    for name, title in (("iou50", "IoU 0.5"), ("iou50-95", "IoU 0.5:0.95 (mean over thresholds)")):
        per_class = curves[name]
        fig = Figure(figsize=(7, 6))
        ax = fig.add_subplot()
        legend = len(class_names) <= MAX_LEGEND_CLASSES
        for class_name, curve in zip(class_names, per_class):
            if np.isnan(curve).all():
                continue
            ax.plot(recall, curve, linewidth=1, alpha=0.8 if legend else 0.35,
                    label=f"{class_name} {curve.mean():.3f}" if legend else None)
        valid = per_class[~np.isnan(per_class).all(1)] if len(per_class) else per_class
        if len(valid):
            mean_curve = valid.mean(0)
            ax.plot(recall, mean_curve, color="blue", linewidth=3, label=f"all classes {mean_curve.mean():.3f}")
        ax.set(xlabel="Recall", ylabel="Precision", xlim=(0, 1), ylim=(0, 1.01), title=f"Precision-recall, {title}")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower left", fontsize=8 if legend else 9)
        paths.append(save_figure(fig, out_dir / f"pr_curve_{name}.png", dpi))
    return paths


def plot_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], path: str | Path, normalize: bool = True,
                          dpi: int = 120) -> Path:
    """Heat map of a (C + 1, C + 1) confusion matrix (rows: true class, columns: predicted; last = background).
    normalize: each row divided by its sum (the share of each true class predicted as ...); cells show the
    shares and, for up to MAX_ANNOTATED_CLASSES classes, the values."""
    matrix = np.asarray(matrix, np.float64)
    names = [*class_names, "background"]
    values = matrix / np.maximum(matrix.sum(1, keepdims=True), 1) if normalize else matrix
    size = max(6.0, 0.35 * len(names) + 3)
    fig = Figure(figsize=(size, size * 0.85))
    ax = fig.add_subplot()
    vmax = 1.0 if normalize else max(float(values.max()), 1.0)
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=vmax)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ticks = np.arange(len(names))
    fontsize = 8 if len(names) <= MAX_ANNOTATED_CLASSES else 5
    ax.set_xticks(ticks, names, rotation=90, fontsize=fontsize)
    ax.set_yticks(ticks, names, fontsize=fontsize)
    ax.set(xlabel="Predicted", ylabel="True", title="Confusion matrix" + (" (rows normalised)" if normalize else ""))
    if len(names) <= MAX_ANNOTATED_CLASSES:
        for i in range(len(names)):
            for j in range(len(names)):
                if matrix[i, j]:
                    text = f"{values[i, j]:.2f}" if normalize else f"{int(matrix[i, j])}"
                    ax.text(j, i, text, ha="center", va="center", fontsize=7,
                            color="white" if values[i, j] > 0.5 * vmax else "black")
    return save_figure(fig, path, dpi)
