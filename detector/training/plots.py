"""The pictures of a training run's folder, drawn by one callback (`RunPlots`, `callbacks.plots` in
configs/callbacks/default.yaml) on the global-zero process:

    results.png                 the per-epoch curves of the run's MetricsHistory rows (the rows of metrics.json):
                                train losses, val losses, mAP50 / mAP50-95 / mAR100, learning rate, assignment
                                statistics; redrawn at each epoch end
    train_batch{0,1,2}.jpg      the first batches of the run as the model saw them (after mosaic and augmentation)
    val_batch{0,1}_labels.jpg   the first validation batches with their labels ...
    val_batch{0,1}_pred.jpg     ... and with the detections (score >= conf_threshold) of the best epoch so far,
                                redrawn when the best mAP50-95 improves
    labels.png                  the training labels (detector.data.doctor.plot_labels, as check_dataset draws them)
    eval/                       at the end, the evaluate.py report of best.ckpt on the validation split

The same images go to every TensorBoard logger. Nothing here draws from a random generator or from the data
loaders: the batches are those the loop already produced, and the model built for the stride marks of labels.png
is built under a forked generator, so the training numbers are the same with and without the pictures."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import cv2
import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn
from matplotlib.figure import Figure  # the Agg canvas: no pyplot, no display, no global backend change

from detector.data.doctor import diagnose, plot_labels
from detector.deploy.evaluate import evaluate_checkpoint, evaluation_config
from detector.deploy.predict import draw_detections
from detector.evaluation.plots import save_figure
from detector.models.build import model_priors
from detector.training.callbacks import MetricsHistory, train_dataset

# the panels of results.png: MetricsHistory row key -> title (those a run does not record are left out)
PANELS = {
    "train_box": "train box loss", "train_cls": "train cls loss", "train_dfl": "train DFL loss",
    "train_loss": "train loss", "lr": "learning rate",
    "val_box": "val box loss", "val_cls": "val cls loss", "val_dfl": "val DFL loss", "val_loss": "val loss",
    "val_map_50": "mAP50", "val_map": "mAP50-95", "val_mar_100": "mAR100",
    "assign_pos_per_gt": "positives per GT", "assign_gt_without_pos": "GTs without a positive",
    "assign_pos_iou": "positives' IoU",
}
COLUMNS = 5


def results_figure(rows: Sequence[dict[str, float]]) -> Figure:
    """One panel per PANELS entry present in `rows` (one dict per epoch, "epoch" 0-based): a point per epoch
    that has the value, joined by a line; x is the epoch counted from 1."""
    keys = [key for key in PANELS if any(_finite(row.get(key)) for row in rows)]
    figure = Figure(figsize=(3.2 * COLUMNS, 2.6 * max(1, math.ceil(len(keys) / COLUMNS))))
    for index, key in enumerate(keys):
        ax = figure.add_subplot(max(1, math.ceil(len(keys) / COLUMNS)), COLUMNS, index + 1)
        points = [(row["epoch"] + 1, row[key]) for row in rows if _finite(row.get(key))]
        ax.plot(*zip(*points), marker="o", markersize=3, linewidth=1.5)
        ax.set_title(PANELS[key], fontsize=10)
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        if key == "lr":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    figure.supxlabel("epoch", fontsize=10)
    figure.tight_layout()
    return figure


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def batch_grid(images: torch.Tensor, targets: Sequence[dict[str, torch.Tensor]], class_names: Sequence[str],
               max_images: int = 16, max_side: int = 2048) -> np.ndarray:
    """BGR mosaic of the first `max_images` images (B, 3, H, W) uint8, image i at row i // c, column i % c of a
    c = ceil(sqrt(n)) column grid, each drawn with its `targets[i]` (boxes in its pixels, labels, and scores for
    detections) by `detector.deploy.predict.draw_detections`; scaled down so that the grid fits `max_side`."""
    count = min(len(images), max_images)
    columns = max(1, math.ceil(math.sqrt(count)))
    rows = max(1, math.ceil(count / columns))
    height, width = images.shape[-2:]
    scale = min(1.0, max_side / (columns * max(height, width)))
    tile_h, tile_w = round(height * scale), round(width * scale)
    grid = np.full((rows * tile_h, columns * tile_w, 3), 255, np.uint8)
    for i in range(count):
        image = images[i].permute(1, 2, 0).cpu().numpy()
        target = {k: v.detach().cpu() for k, v in targets[i].items()}
        if scale < 1:
            image = cv2.resize(image, (tile_w, tile_h), interpolation=cv2.INTER_AREA)
            target["boxes"] = target["boxes"].float() * scale
        row, column = divmod(i, columns)
        grid[row * tile_h:(row + 1) * tile_h, column * tile_w:(column + 1) * tile_w] = draw_detections(
            np.ascontiguousarray(image), target, list(class_names))
    return grid


def ground_truth(batch: dict) -> list[dict[str, torch.Tensor]]:
    """Per image of a collated batch, its boxes and labels (the padding dropped)."""
    return [{"boxes": boxes[mask], "labels": labels[mask]}
            for boxes, labels, mask in zip(batch["boxes"], batch["labels"], batch["mask"])]


class RunPlots(Callback):
    """Draws the pictures of the module docstring into the trainer's `default_root_dir` (the run directory).
    train_batches / val_batches: how many batches to draw; max_images: images per batch picture; conf_threshold:
    the smallest score drawn in val_batch*_pred.jpg; labels: draw labels.png; evaluate: write eval/ at the end.
    results.png draws the rows of the trainer's MetricsHistory (kept in the checkpoints: a resumed run continues
    its curves)."""

    def __init__(self, train_batches: int = 3, val_batches: int = 2, max_images: int = 16, conf_threshold: float = 0.25,
                 labels: bool = True, evaluate: bool = True) -> None:
        self.train_batches, self.val_batches, self.max_images = int(train_batches), int(val_batches), int(max_images)
        self.conf_threshold, self.labels, self.evaluate = float(conf_threshold), bool(labels), bool(evaluate)
        self._val_batches: list[tuple[dict, list[dict]]] = []
        self._first_epoch: int | None = None
        self._failed: set[str] = set()

    @contextmanager
    def _reported(self, name: str) -> Iterator[None]:
        """A picture that cannot be drawn is reported (once per name), never the end of the training."""
        try:
            yield
        except Exception as error:  # noqa: BLE001 - a picture is not worth a run
            if name not in self._failed:
                self._failed.add(name)
                rank_zero_warn(f"RunPlots: {name} not drawn ({type(error).__name__}: {error}); the training goes on")

    @staticmethod
    def run_dir(trainer: L.Trainer) -> Path:
        return Path(trainer.default_root_dir)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and self.labels:
            with self._reported("labels.png"):
                self._draw_labels(trainer, pl_module)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._first_epoch = trainer.current_epoch

    def _draw_labels(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dataset = train_dataset(trainer)
        if getattr(dataset, "records", None) is None:
            rank_zero_info("RunPlots: no training dataset with records; labels.png not drawn")
            return
        img_size = int(dataset.image_size)
        model_config = (getattr(pl_module, "run_config", None) or {}).get("model")
        priors = None
        if model_config is not None:
            with torch.random.fork_rng(devices=[]):  # building the model draws initial weights: not from the run's generator
                priors = model_priors(model_config, img_size)
        diagnosis = diagnose(dataset.records, len(dataset.class_names), img_size, priors)
        path = plot_labels(diagnosis, dataset.class_names, self.run_dir(trainer) / "labels.png",
                           title=f"training labels: {len(diagnosis.boxes)} boxes in {len(dataset.records)} images")
        self._publish(trainer, path)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        if not trainer.is_global_zero:
            return
        if trainer.current_epoch == self._first_epoch and batch_idx < self.train_batches:
            with self._reported("train_batch*.jpg"):
                self._save(trainer, f"train_batch{batch_idx}.jpg",
                           batch_grid(batch["images"], ground_truth(batch), self._class_names(trainer), self.max_images))

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._val_batches = []

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or batch_idx >= self.val_batches:
            return
        if not isinstance(outputs, dict) or "detections" not in outputs:
            return
        n = self.max_images
        kept = {"images": batch["images"][:n].cpu(), "boxes": batch["boxes"][:n].cpu(),
                "labels": batch["labels"][:n].cpu(), "mask": batch["mask"][:n].cpu()}
        detections = [{k: v[d["scores"] >= self.conf_threshold].cpu() for k, v in d.items()}
                      for d in outputs["detections"][:n]]
        self._val_batches.append((kept, detections))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        best = getattr(pl_module, "best_metrics", None)
        if best is not None and best.get("epoch") != trainer.current_epoch:
            return  # not the best epoch so far: the pictures of the best one stay
        names = self._class_names(trainer)
        for index, (batch, detections) in enumerate(self._val_batches):
            with self._reported("val_batch*.jpg"):
                self._save(trainer, f"val_batch{index}_labels.jpg",
                           batch_grid(batch["images"], ground_truth(batch), names, self.max_images))
                self._save(trainer, f"val_batch{index}_pred.jpg",
                           batch_grid(batch["images"], detections, names, self.max_images))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        history = next((c for c in trainer.callbacks if isinstance(c, MetricsHistory)), None)
        if history is None:
            if "results.png" not in self._failed and trainer.is_global_zero:
                self._failed.add("results.png")
                rank_zero_info("RunPlots: results.png draws the rows of a MetricsHistory callback, and this trainer "
                               "has none (detector.training.runner.train adds it)")
            return
        history.close_epoch(trainer, pl_module)  # every rank: the assignment summary is reduced across DDP ranks
        if trainer.is_global_zero:
            with self._reported("results.png"):
                path = save_figure(results_figure(history.history()), self.run_dir(trainer) / "results.png", dpi=100)
                self._publish(trainer, path)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not (self.evaluate and trainer.is_global_zero):
            return
        checkpoint = getattr(trainer.checkpoint_callback, "best_model_path", "") or ""
        if not checkpoint or not Path(checkpoint).is_file():
            rank_zero_info("RunPlots: no best checkpoint; eval/ not written")
            return
        out = self.run_dir(trainer) / "eval"
        print(f"\nEvaluating the best checkpoint into {out} (as scripts/evaluate.py does)")
        try:
            evaluate_checkpoint(evaluation_config(checkpoint, out, device=str(pl_module.device)))
        except Exception as error:  # noqa: BLE001 - the training is done: report, do not fail the run
            rank_zero_warn(f"RunPlots: the evaluation of {checkpoint} failed ({type(error).__name__}: {error}); "
                           f"run it with: python scripts/evaluate.py ckpt_path={checkpoint}")
            return
        for path in sorted(out.glob("*.png")):
            self._publish(trainer, path, tag=f"eval/{path.stem}")

    @staticmethod
    def _class_names(trainer: L.Trainer) -> list[str]:
        dataset = train_dataset(trainer)
        return list(getattr(dataset, "class_names", None) or getattr(trainer.datamodule, "class_names", []))

    def _save(self, trainer: L.Trainer, name: str, image_bgr: np.ndarray) -> None:
        path = self.run_dir(trainer) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(path), image_bgr, [cv2.IMWRITE_JPEG_QUALITY, 90]):
            rank_zero_warn(f"RunPlots: could not write {path}")
            return
        self._publish(trainer, path)

    def _publish(self, trainer: L.Trainer, path: Path, tag: str | None = None) -> None:
        """The picture at `path` to every logger with a TensorBoard writer (`experiment.add_image`: TensorBoardLogger),
        as `plots/<file stem>` (or `tag`) at the current epoch."""
        loggers = [logger for logger in trainer.loggers if callable(getattr(logger.experiment, "add_image", None))]
        if not loggers:
            return
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            return
        for logger in loggers:
            logger.experiment.add_image(tag or f"plots/{path.stem}", image[:, :, ::-1].copy(),
                                        global_step=trainer.current_epoch, dataformats="HWC")
