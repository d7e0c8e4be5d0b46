"""A tiny real fit (2 steps at 64 px): the assignment statistics reach the loggers (CSV) as assign/<name> and the
metrics.json history (MetricsHistory) as assign_<name>."""

from __future__ import annotations

import csv
import math

import lightning as L
import pytest
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader

from detector.training.callbacks import MetricsHistory


@pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")
@pytest.mark.filterwarnings("ignore:The '(train|val)_dataloader' does not have many workers")
def test_two_steps_log_and_record_the_assignment_statistics(tiny_module, batch, tmp_path):
    module, history = tiny_module(), MetricsHistory()
    trainer = L.Trainer(max_epochs=1, limit_val_batches=0, accelerator="cpu", enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, callbacks=[history],
                        logger=CSVLogger(tmp_path), log_every_n_steps=1)
    trainer.fit(module, DataLoader([batch, batch], batch_size=None))
    (row,) = history.history()
    # the fixture batch: 3 GT boxes in 2 images, twice
    assert row["train_steps"] == 2 and row["assign_gt_count"] == 6.0
    assert row["assign_pos_per_gt"] > 0 and 0 < row["assign_pos_iou"] <= 1 and 0 < row["assign_pos_quality"] <= 1
    assert row["assign_pos_per_image"] == pytest.approx(row["assign_pos_per_gt"] * 3 / 2)
    assert sum(row[f"assign_level{k}_share"] for k in range(3)) == pytest.approx(1.0)
    assert math.isnan(row["assign_pos_per_gt_large"])  # no large box in the batch
    assert trainer.callback_metrics["assign/pos_per_gt"] == pytest.approx(row["assign_pos_per_gt"])
    with open(tmp_path / "lightning_logs" / "version_0" / "metrics.csv", newline="") as file:
        logged = [r for r in csv.DictReader(file) if r.get("assign/pos_per_gt")]
    assert len(logged) == 1 and float(logged[0]["assign/gt_without_pos"]) == row["assign_gt_without_pos"]
