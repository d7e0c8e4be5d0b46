"""The run progress bar (detector.training.progress.RunProgressBar): epoch k/N, the logged loss components without
their prefix, and the ETA of the whole run from the time per batch so far."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from detector.training.progress import RunProgressBar


def fake_trainer(**options) -> SimpleNamespace:
    values = dict(max_epochs=8, current_epoch=2, num_training_batches=100, max_steps=-1, global_step=250,
                  accumulate_grad_batches=1, loggers=[], progress_bar_metrics={
                      "train/box": 1.5, "train/cls": 2.25, "val/mAP50-95": 0.4})
    return SimpleNamespace(**{**values, **options})


def bar_at(trainer: SimpleNamespace, batch_in_epoch: int, batches_run: int, seconds: float,
           monkeypatch) -> RunProgressBar:
    bar = RunProgressBar()
    bar._trainer = trainer
    bar._batches, bar._epoch_batches = batches_run, batch_in_epoch
    bar._start = 0.0
    monkeypatch.setattr("detector.training.progress.time.perf_counter", lambda: seconds)  # the clock now
    return bar


def test_eta_is_the_time_per_batch_so_far_times_the_batches_left(monkeypatch):
    trainer = fake_trainer()
    bar = bar_at(trainer, batch_in_epoch=50, batches_run=250, seconds=500.0, monkeypatch=monkeypatch)
    # epoch 3 of 8 (0-based 2), batch 50 of 100: 50 left in this epoch + 5 epochs of 100
    assert bar.batches_left(trainer) == 550
    assert bar.seconds_left(trainer) == pytest.approx(2.0 * 550)


def test_max_steps_caps_the_batches_left_and_no_epoch_limit_gives_no_eta():
    bar = RunProgressBar()
    bar._epoch_batches = 50
    trainer = fake_trainer(max_steps=300, accumulate_grad_batches=2)
    bar._trainer = trainer
    assert bar.batches_left(trainer) == (300 - 250) * 2
    trainer = fake_trainer(max_epochs=-1)
    bar._trainer = trainer
    assert bar.batches_left(trainer) is None and bar.seconds_left(trainer) is None
    trainer = fake_trainer(num_training_batches=float("inf"))
    bar._trainer = trainer
    assert bar.batches_left(trainer) is None


def test_metrics_show_the_components_without_prefix_and_the_eta(monkeypatch):
    trainer = fake_trainer(progress_bar_metrics={"train/box": torch.tensor(1.5), "train/cls": 2.25,
                                                 "val/mAP50-95": 0.4})
    bar = bar_at(trainer, batch_in_epoch=50, batches_run=250, seconds=500.0, monkeypatch=monkeypatch)
    metrics = bar.get_metrics(trainer, None)
    assert list(metrics) == ["box", "cls", "val/mAP50-95", "ETA"]
    assert metrics["ETA"] == "0:18:20"  # 1100 s
    bar._batches = 0  # before the first batch: no estimate yet
    assert "ETA" not in bar.get_metrics(trainer, None)


def test_the_description_counts_epochs_from_one():
    bar = RunProgressBar()
    trainer = fake_trainer(current_epoch=0, max_epochs=8)
    bar._trainer = trainer
    bar.train_progress_bar = bar.init_train_tqdm()
    bar._epoch_batches = 7
    bar.on_train_epoch_start(trainer)
    assert bar.train_progress_bar.desc.startswith("Epoch 1/8") and bar._epoch_batches == 0
    bar.train_progress_bar.close()
