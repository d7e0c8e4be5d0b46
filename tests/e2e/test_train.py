"""End-to-end: `python train.py` through Hydra (smoke), a small learning test, and 2-process DDP on CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import ROOT, run_train, tiny_overrides


def test_smoke_run_writes_checkpoints_metrics_and_config(tmp_path):
    result = run_train([*tiny_overrides(tmp_path), "trainer.max_epochs=1", "trainer.limit_train_batches=2"])
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["images"] == 8 and 0.0 <= metrics["map"] <= 1.0 and metrics["parameters"] > 1e6
    assert (run / "checkpoints" / "best.ckpt").exists() and (run / "checkpoints" / "last.ckpt").exists()
    assert (run / "config_resolved.yaml").exists() and (run / ".hydra" / "config.yaml").exists()
    assert "mAP50-95" in result.stdout and "Best checkpoint" in result.stdout


def test_fast_dev_run_and_loss_choice_from_the_command_line(tmp_path):
    run_train([*tiny_overrides(tmp_path), "loss=ciou", "trainer.fast_dev_run=true", "callbacks=none"])


@pytest.mark.slow
def test_ddp_two_cpu_processes_evaluate_every_val_image_once(tmp_path):
    # 7 val images over 2 ranks: the DistributedSampler pads rank 1 with a duplicate, which must not count twice
    args = tiny_overrides(tmp_path, num_train=16, num_val=7)
    run_train([*args, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.max_epochs=1",
               "trainer.limit_train_batches=2", "data.batch_size=2"])
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["images"] == 7


def test_a_few_batches_on_coco128_train_and_evaluate(tmp_path):
    shared = Path(__import__("os").environ.get("DETECTOR_SHARED_DATA", ROOT.parent / "shared" / "data")) / "coco128"
    if not (shared / "data.yaml").exists():
        pytest.skip(f"real data not present at {shared} (only in the project's own workspace)")
    run_train([
        "data=coco128", f"data.root={shared}", f"hydra.run.dir={tmp_path / 'run'}", "data.img_size=160",
        "data.batch_size=4", "data.num_workers=0", "trainer.max_epochs=1", "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=3",
    ])
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["images"] == 12  # 3 val batches of 4 evaluated by pycocotools
