"""The training progress bar: Lightning's tqdm bar that also says when the whole run will end."""

from __future__ import annotations

import datetime
import math
import time

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar


class RunProgressBar(TQDMProgressBar):
    """`Epoch 3/8: 40%|████ | 37/93 [00:12<00:18, box=1.21, cls=2.03, dfl=1.10, loss=4.34, val/mAP50-95=0.41,
    ETA=0:03:05]`: the epoch counted from 1 out of `trainer.max_epochs`, the step within the epoch, the values the
    module logs to the progress bar (the loss components of the step, without their `train/` prefix; the last
    validation's mAP), and `ETA`, the time left for the whole run: the seconds per training batch since this fit
    started (the validations included once one has run) times the training batches left (capped by
    `trainer.max_steps`). No ETA without an epoch limit or with an iterable of unknown length."""

    def __init__(self, refresh_rate: int = 1, process_position: int = 0, leave: bool = False) -> None:
        super().__init__(refresh_rate, process_position, leave)
        self._start = time.perf_counter()
        self._batches = 0  # training batches since this fit started
        self._epoch_batches = 0  # ... since this epoch started

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._start, self._batches = time.perf_counter(), 0

    def on_train_epoch_start(self, trainer: L.Trainer, *args) -> None:
        self._epoch_batches = 0
        super().on_train_epoch_start(trainer, *args)
        limit = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        self.train_progress_bar.set_description(f"Epoch {trainer.current_epoch + 1}{limit}")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        self._batches += 1
        self._epoch_batches = batch_idx + 1
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        metrics = {key.removeprefix("train/"): value for key, value in super().get_metrics(trainer, pl_module).items()
                   if key != "v_num"}
        seconds = self.seconds_left(trainer)
        if seconds is not None:
            metrics["ETA"] = str(datetime.timedelta(seconds=round(seconds)))
        return metrics

    def batches_left(self, trainer: L.Trainer) -> int | None:
        """Training batches left in the run (None when unknown)."""
        per_epoch = self.total_train_batches
        if not (trainer.max_epochs and trainer.max_epochs > 0) or not math.isfinite(per_epoch):
            return None
        left = (trainer.max_epochs - trainer.current_epoch) * int(per_epoch) - self._epoch_batches
        if trainer.max_steps and trainer.max_steps > 0:
            left = min(left, (trainer.max_steps - trainer.global_step) * trainer.accumulate_grad_batches)
        return max(left, 0)

    def seconds_left(self, trainer: L.Trainer) -> float | None:
        """The run's ETA in seconds (module docstring); None before the first batch or when unknown."""
        left = self.batches_left(trainer)
        if left is None or not self._batches:
            return None
        return (time.perf_counter() - self._start) / self._batches * left
