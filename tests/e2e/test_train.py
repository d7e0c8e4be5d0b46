"""End to end: `python train.py` through Hydra (smoke: files and the printed summary), 2-process DDP on CPU; a
fast_dev_run and a few batches of COCO128 through the runner in process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from detector.training.runner import train

from ..conftest import TRAINED_NUM_VAL
from .conftest import run_train, tiny_overrides


def test_smoke_run_writes_checkpoints_metrics_and_config(trained):
    # the session's `python train.py` run (tests/conftest.py): 2 training steps, 6 val images
    run = trained["run"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["images"] == TRAINED_NUM_VAL and 0.0 <= metrics["map"] <= 1.0 and metrics["parameters"] > 1e6
    assert (run / "checkpoints" / "best.ckpt").exists() and (run / "checkpoints" / "last.ckpt").exists()
    assert (run / "config_resolved.yaml").exists() and (run / ".hydra" / "config.yaml").exists()
    assert metrics["status"] == "ok" and (run / "checkpoints" / "best.ckpt").samefile(metrics["best_checkpoint"])
    assert "mAP50-95" in trained["stdout"] and "Best checkpoint" in trained["stdout"]
    # the epoch's assignment statistics: in the history (assign_*) and in the CSV log (assign/*)
    (epoch,) = metrics["history"]
    assert epoch["assign_gt_count"] > 0 and epoch["assign_pos_per_gt"] > 0 and 0 < epoch["assign_pos_iou"] <= 1
    assert sum(epoch[f"assign_level{k}_share"] for k in range(3)) == pytest.approx(1.0)
    assert "assign/pos_per_gt" in (run / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")


def in_process_overrides(tmp_path: Path, **sizes) -> list[str]:
    """tiny_overrides for `train(cfg)` in this process: no Hydra run directory, so the output goes to paths.output_dir."""
    return [o for o in tiny_overrides(tmp_path, **sizes) if not o.startswith("hydra.")] + [f"paths.output_dir={tmp_path / 'run'}"]


def test_fast_dev_run_with_a_loss_choice(compose_config, tmp_path):
    cfg = compose_config([*in_process_overrides(tmp_path), "loss/box=giou", "trainer.fast_dev_run=true", "callbacks=none"])
    metrics = train(cfg)
    # one training batch and one validation batch of 4, with the chosen box loss
    assert metrics["status"] == "ok" and metrics["images"] == 4 and metrics["epoch"] == 0
    assert metrics["combination"]["loss.box"]["_target_"] == "detector.losses.iou.GIoULoss"
    (epoch,) = metrics["history"]
    assert epoch["train_steps"] == 1 and epoch["train_loss"] > 0
    assert not (tmp_path / "run" / "checkpoints").exists()  # callbacks=none: no checkpoint


@pytest.mark.slow
def test_ddp_two_cpu_processes_evaluate_every_val_image_once(tmp_path):
    # 7 val images over 2 ranks: the DistributedSampler pads rank 1 with a duplicate, which must not count twice
    args = tiny_overrides(tmp_path, num_train=16, num_val=7)
    result = run_train([*args, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.max_epochs=1",
                        "trainer.limit_train_batches=2", "data.batch_size=2"])
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["images"] == 7
    assert metrics["history"][0]["assign_gt_count"] > 0  # the assignment statistics, reduced across the ranks
    # the run folder's pictures, drawn by rank 0 alone (one evaluation of best.ckpt, no drawing failure)
    for name in ("results.png", "labels.png", "train_batch0.jpg", "train_batch1.jpg", "val_batch0_labels.jpg",
                 "val_batch0_pred.jpg", "eval/evaluation.json"):
        assert (run / name).is_file(), name
    output = result.stdout + result.stderr
    assert output.count("Evaluating the best checkpoint") == 1 and "not drawn" not in output


@pytest.mark.slow
def test_a_few_batches_on_coco128_train_and_evaluate(compose_config, coco128, tmp_path):
    cfg = compose_config([
        "data=coco128", f"data.root={coco128}", f"paths.output_dir={tmp_path / 'run'}", "data.img_size=160",
        "data.batch_size=4", "data.num_workers=0", "trainer.max_epochs=1", "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=3",
    ])
    metrics = train(cfg)
    assert metrics["status"] == "ok" and metrics["images"] == 12  # 3 val batches of 4 evaluated by pycocotools


def test_fast_dev_run_with_device_augmentation(compose_config, tmp_path):
    cfg = compose_config([*in_process_overrides(tmp_path), "data.augment_on=device", "data.mosaic_prob=1.0",
                          "trainer.fast_dev_run=true", "callbacks=none"])
    with pytest.warns(UserWarning, match="leaves out what has no batch version: HueSaturationValue"):
        metrics = train(cfg)
    assert metrics["status"] == "ok" and metrics["history"][0]["train_loss"] > 0


@pytest.mark.slow
def test_one_epoch_with_device_augmentation_and_close_mosaic(tmp_path):
    # mosaics on the device in epoch 0, closed by CloseMosaic for epoch 1; the pictures show the augmented batches
    result = run_train([*tiny_overrides(tmp_path), "data.augment_on=device", "data.mosaic_prob=1.0",
                        "trainer.max_epochs=2", "callbacks.close_mosaic.epochs=1"])
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "ok" and len(metrics["history"]) == 2
    assert "CloseMosaic: mosaic off from epoch 1" in result.stdout + result.stderr
    assert (tmp_path / "run" / "train_batch0.jpg").is_file()
