"""The pictures of a run folder (detector.training.plots.RunPlots): the drawing helpers on known input (boxes where
the labels are, one point per epoch), and a tiny two-epoch run whose folder gets every picture and eval/."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from detector.deploy.predict import class_color
from detector.training.plots import PANELS, RunPlots, batch_grid, ground_truth, results_figure

NAMES = ["circle", "square", "triangle"]


def grey_batch(count: int, size: int = 96) -> torch.Tensor:
    return torch.full((count, 3, size, size), 128, dtype=torch.uint8)


def test_batch_grid_tiles_the_images_and_draws_each_box_where_its_label_is():
    images = grey_batch(5)
    boxes = torch.tensor([[[10.0, 40, 50, 80]], [[30, 20, 90, 60]], [[0, 0, 0, 0]], [[0, 0, 0, 0]], [[5, 50, 40, 90]]])
    batch = {"images": images, "boxes": boxes, "labels": torch.tensor([[0], [2], [0], [0], [1]]),
             "mask": torch.tensor([[True], [True], [False], [False], [True]])}
    grid = batch_grid(images, ground_truth(batch), NAMES)
    assert grid.shape == (2 * 96, 3 * 96, 3)  # 5 images: 3 columns, 2 rows; the sixth cell left white
    assert (grid[96:, 192:] == 255).all()
    for index, ((x1, y1, x2, y2), label) in {0: ((10, 40, 50, 80), 0), 1: ((30, 20, 90, 60), 2),
                                               4: ((5, 50, 40, 90), 1)}.items():
        row, column = divmod(index, 3)
        tile = grid[row * 96:(row + 1) * 96, column * 96:(column + 1) * 96].astype(int)
        colour = np.array(class_color(label))
        # the bottom edge and the right edge are in the class colour; the inside of the box is still grey
        assert np.abs(tile[y2, x1 + 3:x2 - 3] - colour).max() <= 40
        assert np.abs(tile[y1 + 15:y2 - 3, x2] - colour).max() <= 40
        assert (tile[(y1 + y2) // 2 + 5, (x1 + x2) // 2] == 128).all()
    assert (grid[0:96, 96 * 2:96 * 3][70:, :] == 128).all()  # tile 2 (no box): untouched below its top


def test_batch_grid_shows_scores_of_detections_and_fits_large_batches():
    images = grey_batch(16, size=640)
    detections = [{"boxes": torch.tensor([[64.0, 64, 320, 320]]), "scores": torch.tensor([0.9]),
                   "labels": torch.tensor([1])}] * 16
    grid = batch_grid(images, detections, NAMES, max_images=16, max_side=1280)
    assert grid.shape == (1280, 1280, 3)  # 4 x 4 tiles of 640 px scaled to 320
    colour = np.array(class_color(1))
    assert np.abs(grid[160, 40:150].astype(int) - colour).max() <= 40  # the box (scaled by 0.5) in tile 0
    without_score = batch_grid(images, [{k: v for k, v in d.items() if k != "scores"} for d in detections], NAMES,
                               max_side=1280)
    assert (grid != without_score).any()  # the "square 0.90" label is wider than "square"


def test_results_figure_has_one_point_per_epoch_and_skips_what_is_not_logged():
    rows = [{"epoch": 0, "train_box": 2.0, "train_cls": 3.0, "val_map": 0.1, "lr": 1e-3, "assign_pos_per_gt": 9.0},
            {"epoch": 1, "train_box": 1.5, "train_cls": 2.5, "lr": 8e-4, "assign_pos_per_gt": 8.0},  # no validation
            {"epoch": 2, "train_box": 1.0, "train_cls": float("nan"), "val_map": 0.3, "lr": 5e-4,
             "assign_pos_per_gt": 7.0, "train_loss": None, "train_steps": 4}]
    figure = results_figure(rows)
    panels = {ax.get_title(): ax.lines[0] for ax in figure.axes}
    assert set(panels) == {PANELS[k] for k in ("train_box", "train_cls", "val_map", "lr", "assign_pos_per_gt")}
    assert list(panels["train box loss"].get_xdata()) == [1, 2, 3]
    assert list(panels["train box loss"].get_ydata()) == [2.0, 1.5, 1.0]
    assert list(panels["mAP50-95"].get_xdata()) == [1, 3]  # the epoch without validation has no point
    assert list(panels["train cls loss"].get_xdata()) == [1, 2]  # a non-finite epoch mean is left out
    assert panels["positives per GT"].get_marker() == "o"


def test_pictures_go_to_loggers_with_a_tensorboard_writer(tmp_path):
    path = tmp_path / "results.png"
    cv2.imwrite(str(path), np.zeros((30, 40, 3), np.uint8) + np.array([255, 0, 0], np.uint8))  # blue in BGR
    added = []
    writer = SimpleNamespace(add_image=lambda tag, image, global_step, dataformats: added.append(
        (tag, image, global_step, dataformats)))
    csv_like = SimpleNamespace(experiment=SimpleNamespace())
    trainer = SimpleNamespace(loggers=[csv_like, SimpleNamespace(experiment=writer)], current_epoch=4)
    RunPlots()._publish(trainer, path)
    [(tag, image, step, formats)] = added
    assert (tag, step, formats) == ("plots/results", 4, "HWC")
    assert image.shape == (30, 40, 3) and (image[..., 2] == 255).all() and (image[..., 0] == 0).all()  # RGB


def test_history_rows_and_running_sums_survive_a_checkpoint_round_trip():
    from detector.training.callbacks import MetricsHistory

    history = MetricsHistory()
    trainer = SimpleNamespace(current_epoch=0, accumulate_grad_batches=1)
    for box in (1.0, 3.0):
        step = {"loss": torch.tensor(box + 1), "losses": {"loss": torch.tensor(box + 1), "box": torch.tensor(box)}}
        history.on_train_batch_end(trainer, None, step, None, 0)
    buffer = io.BytesIO()
    torch.save(history.state_dict(), buffer)  # as Lightning saves a callback's state into the checkpoint
    buffer.seek(0)
    restored = MetricsHistory()
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    [row] = restored.history()
    assert row["train_box"] == 2.0 and row["train_loss"] == 3.0 and row["train_steps"] == 2


def test_callbacks_plots_false_and_no_progress_bar_turn_the_callbacks_off(compose_config, tmp_path):
    from lightning.pytorch.callbacks import ProgressBar

    from detector.training.runner import instantiate_callbacks

    for overrides, plots, bars in ((["callbacks.plots=false"], 0, 1), (["~callbacks.plots"], 0, 1), ([], 1, 1),
                                   (["trainer.enable_progress_bar=false"], 1, 0)):
        callbacks = instantiate_callbacks(compose_config([*overrides, f"paths.output_dir={tmp_path}"]))
        assert sum(isinstance(c, RunPlots) for c in callbacks) == plots, overrides
        assert sum(isinstance(c, ProgressBar) for c in callbacks) == bars, overrides


def test_a_picture_that_cannot_be_drawn_is_reported_once_and_training_goes_on():
    plots = RunPlots()
    with pytest.warns(UserWarning, match=r"RunPlots: results.png not drawn \(ValueError: broken\)"):
        with plots._reported("results.png"):
            raise ValueError("broken")
    with plots._reported("results.png"):  # the second failure of the same picture: no second warning
        raise ValueError("broken")
    assert plots._failed == {"results.png"}


# --- a tiny run (slow: a real training): 12 + 6 synthetic 64-px images, 2 epochs of 2 steps -------------------------

EPOCHS, BATCH, IMG = 2, 3, 64


@pytest.fixture(scope="module")
def tiny_run(compose_config, tmp_path_factory) -> Path:
    from detector.training.runner import train

    tmp = tmp_path_factory.mktemp("plots")
    cfg = compose_config([
        f"paths.output_dir={tmp / 'run'}", f"paths.data_dir={tmp / 'data'}", "data.prepare.num_train=12",
        "data.prepare.num_val=6", f"data.prepare.image_size={IMG}", f"data.img_size={IMG}",
        f"data.batch_size={BATCH}", "data.num_workers=0", f"trainer.max_epochs={EPOCHS}",
        "trainer.limit_train_batches=2", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
        "callbacks.recompute_batch_norm.batches=0",
        # a checkpoint at every epoch (with val mAP tied at 0, save_last would not write the second one)
        "callbacks.model_checkpoint.monitor=null"])
    assert train(cfg)["status"] == "ok"
    return tmp / "run"


@pytest.mark.slow
def test_a_run_folder_gets_every_picture(tiny_run):
    for name in ("train_batch0.jpg", "train_batch1.jpg", "val_batch0_labels.jpg", "val_batch0_pred.jpg",
                 "val_batch1_labels.jpg", "val_batch1_pred.jpg"):
        image = cv2.imread(str(tiny_run / name))
        assert image is not None and image.shape == (2 * IMG, 2 * IMG, 3), name  # 3 images: 2 x 2 tiles
    assert not (tiny_run / "train_batch2.jpg").exists()  # limit_train_batches=2
    assert cv2.imread(str(tiny_run / "labels.png")).shape[1] > 800
    assert cv2.imread(str(tiny_run / "results.png")).shape[1] > 1000


@pytest.mark.slow
def test_the_val_labels_picture_shows_the_first_val_images_with_their_boxes(tiny_run):
    from detector.data.transforms import letterbox_scale

    gt = json.loads((tiny_run.parent / "data/shapes/annotations/val.json").read_text())
    first = gt["images"][0]  # the first val image: tile 0 (the val loader does not shuffle)
    picture = cv2.imread(str(tiny_run / "val_batch0_labels.jpg")).astype(int)
    image = cv2.imread(str(tiny_run.parent / "data/shapes/images/val" / first["file_name"])).astype(int)
    sx, sy = letterbox_scale(first["height"], first["width"], IMG)
    # drawn: where the picture differs from the image (JPEG at 64 px blurs a 1-px line over about 3 rows)
    drawn = np.abs(picture[:IMG, :IMG] - image).sum(-1) > 60
    for annotation in (a for a in gt["annotations"] if a["image_id"] == first["id"]):
        x, y, w, h = annotation["bbox"]
        x1, y1 = round(x * sx), round(y * sy)
        x2, y2 = min(round((x + w) * sx), IMG - 1), min(round((y + h) * sy), IMG - 1)
        assert drawn[y2 - 1:y2 + 2, x1 + 1:x2].any(0).mean() >= 0.8  # the bottom edge of the box
        assert drawn[y1 + 1:y2, x2 - 1:x2 + 2].any(1).mean() >= 0.8  # its right edge
    assert drawn.mean() < 0.8  # and the image is still there


@pytest.mark.slow
def test_results_has_one_point_per_epoch_with_losses_lr_and_assignment(tiny_run):
    # results.png draws metrics.json's rows; the last checkpoint holds the same rows: a resume continues the curves
    rows = json.loads((tiny_run / "metrics.json").read_text())["history"]
    assert [row["epoch"] for row in rows] == list(range(EPOCHS))
    for row in rows:
        for key in ("train_box", "train_cls", "train_dfl", "train_loss", "val_loss", "val_map", "val_map_50",
                    "val_mar_100", "lr", "assign_pos_per_gt", "assign_gt_without_pos", "assign_pos_iou"):
            assert np.isfinite(row[key]), key
    state = torch.load(tiny_run / "checkpoints/last.ckpt", weights_only=True)["callbacks"]
    [saved] = [s for k, s in state.items() if k.startswith("MetricsHistory")]
    assert saved["epochs"][EPOCHS - 1]["val_map"] == rows[-1]["val_map"]
    lines = {ax.get_title(): ax.lines[0] for ax in results_figure(rows).axes}
    assert len(lines) == 15 and all(len(line.get_xdata()) == EPOCHS for line in lines.values())


@pytest.mark.slow
def test_the_best_checkpoint_is_evaluated_into_eval(tiny_run):
    evaluation = json.loads((tiny_run / "eval/evaluation.json").read_text())
    assert Path(evaluation["ckpt_path"]) == tiny_run / "checkpoints/best.ckpt" and evaluation["split"] == "val"
    assert evaluation["images"] == 6 and len(evaluation["coco"]) == 12 and "map50_voc07_11point" in evaluation["voc"]
    for name in ("pr_curve_iou50.png", "pr_curve_iou50-95.png", "confusion_matrix.png", "per_class.md"):
        assert (tiny_run / "eval" / name).is_file(), name

