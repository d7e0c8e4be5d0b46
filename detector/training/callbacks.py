"""Training callbacks built on Lightning's own mechanisms: EMA, unfreezing, metrics history, closing the
mosaic for the last epochs, saving on interrupt, the data-stall meter."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, WeightAveraging
from lightning.pytorch.utilities.data import extract_batch_size
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn
from torch import nn


class EMA(WeightAveraging):
    """Exponential moving average of the weights (and float buffers), with the YOLOv8 warm-up of the decay:
        d_k = decay * (1 - exp(-k / tau)),   ema <- d_k * ema + (1 - d_k) * weights
    after the k-th optimizer step. Lightning validates and checkpoints with the averaged weights."""

    def __init__(self, decay: float = 0.9999, tau: float = 2000.0) -> None:
        def ema_update(averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor) -> torch.Tensor:
            # tensor arithmetic on the step count's device: no host-device synchronisation per parameter
            d = decay * (1 - torch.exp(-num_averaged.float() / tau))
            return averaged * d + current * (1 - d)

        super().__init__(avg_fn=ema_update)


class RecomputeBatchNorm(Callback):
    """Before each validation, recompute the running mean and variance of every BatchNorm layer that trains, from
    the last `batches` training batches of the epoch, with the weights about to be validated (after the EMA swap: list this
    callback after `ema`). Each layer's statistics become the plain average over those batches (momentum None),
    as torch.optim.swa_utils.update_bn and detectron2's PreciseBN do; frozen layers (eval mode) keep theirs.

    Why: with BatchNorm momentum 0.03 the running statistics trail the weights by about 33 batches. YOLOv8 steps the
    optimizer every 4 batches of 16 (nominal batch 64), we step every batch, so near the peak learning rate the
    statistics used in eval mode describe weights that are 33 steps old, and a branch can fire everywhere on the
    validation images (docs/ablations.md, "Why short runs collapsed"). The recomputed statistics are what the
    checkpoint saves. batches = 0 turns it off."""

    def __init__(self, batches: int = 8) -> None:
        self.recent: deque[torch.Tensor] = deque(maxlen=max(int(batches), 0))

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.recent.clear()  # this epoch's batches only: a run resumed at an epoch boundary validates the same way

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        if self.recent.maxlen:
            self.recent.append(batch["images"].detach())

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self.recent:
            return
        with trainer.precision_plugin.forward_context():
            recompute_batch_norm(pl_module, self.recent)


def recompute_batch_norm(model: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Replace the running mean and variance of every BatchNorm layer that `model.train()` puts in training mode by
    their plain average over `batches` (each a model input), as torch.optim.swa_utils.update_bn does; the layers it
    keeps in eval mode (the detector's frozen ones) keep theirs. The model's mode is restored."""
    was_training = model.training
    model.train()
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the batches below
    with torch.no_grad():
        for inputs in batches:
            model(inputs)
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    model.train(was_training)


class Unfreeze(Callback):
    """Make every parameter trainable again at the start of epoch `epoch` (after `model.freeze=...`), or of the
    first epoch after it when a run resumes later (the model is rebuilt frozen). The BatchNorm layers that were
    kept in eval mode while frozen go back to training mode with the module."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch < self.epoch:
            return
        frozen = [p for p in pl_module.parameters() if not p.requires_grad]
        if not frozen:
            return
        for parameter in frozen:
            parameter.requires_grad_(True)
        pl_module.train(pl_module.training)  # re-applies the modes: the unfrozen norms train again
        rank_zero_info(f"epoch {trainer.current_epoch}: unfroze {len(frozen)} parameter tensors")


class MetricsHistory(Callback):
    """The one per-epoch record of a run (added by `detector.training.runner.train`, whatever the callbacks config):
    `metrics.json`'s history, results.png's curves (`detector.training.plots.RunPlots` draws these rows) and
    scripts/time_to_accuracy.py read it. Per epoch:
    - `train_loss`: the mean training loss over the epoch's finite steps (the loss the optimizer saw, undoing
      Lightning's division by `accumulate_grad_batches`), `train_steps`, `train_nonfinite_steps`, and
      `train_<component>` (box, cls, dfl, ...): the mean of each loss component the training step returns;
    - `val_<name>` for every scalar the validation logs as `val/<name>` (COCO stats, val losses);
    - `lr` at the epoch's end, and `minutes`: wall time from the start of fitting to the end of that validation
      (a resumed run counts from its resume);
    - `assign_<name>`: the epoch's assignment statistics (the module's `assignment_summary()`,
      `detector.assigners.statistics.summarize`).
    Sums stay on the device (no synchronisation per step); a run that crashes mid-epoch keeps its partial epoch,
    and a non-finite loss in the step that raised (NonFiniteLossError comes before the end of its step) still
    counts in `train_nonfinite_steps`."""

    def __init__(self) -> None:
        self.epochs: dict[int, dict[str, float | int | None]] = {}
        self._fit_start: float | None = None
        self._reset()

    def _reset(self) -> None:
        self._loss_sum: torch.Tensor | float = 0.0
        self._finite_steps: torch.Tensor | int = 0
        self._nonfinite_steps: torch.Tensor | int = 0
        self._component_sums: dict[str, torch.Tensor | float] = {}
        self._component_steps: dict[str, torch.Tensor | int] = {}
        self._epoch: int | None = None
        self._pending: torch.Tensor | None = None  # the loss of the step under way (scaled under fp16 AMP)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_start = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush()
        self._epoch = trainer.current_epoch

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        self._pending = loss.detach()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if self._pending is not None and not bool(torch.isfinite(self._pending).all()):
            self._epoch = trainer.current_epoch
            self._nonfinite_steps = self._nonfinite_steps + 1
        self._pending = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        self._pending = None
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        loss = loss.detach().float() * trainer.accumulate_grad_batches
        finite = torch.isfinite(loss)
        self._epoch = trainer.current_epoch
        self._loss_sum = self._loss_sum + torch.where(finite, loss, torch.zeros_like(loss))
        self._finite_steps = self._finite_steps + finite.long()
        self._nonfinite_steps = self._nonfinite_steps + (~finite).long()
        components = outputs.get("losses") if isinstance(outputs, dict) else None
        for name, value in (components or {}).items():
            if name == "loss" or not isinstance(value, torch.Tensor) or value.numel() != 1:
                continue
            value = value.detach().float().reshape(())
            finite = torch.isfinite(value)
            key = f"train_{name}"
            self._component_sums[key] = self._component_sums.get(key, 0.0) + torch.where(finite, value, 0.0)
            self._component_steps[key] = self._component_steps.get(key, 0) + finite.long()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.close_epoch(trainer, pl_module)

    def close_epoch(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Complete this epoch's row: its training means, learning rate and assignment statistics. Idempotent, and
        called on every rank: RunPlots calls it before drawing, whichever of the two callbacks runs first (the module
        computes the assignment summary on the first call of the epoch, reduced across DDP ranks)."""
        row = self.epochs.setdefault(trainer.current_epoch, {"epoch": trainer.current_epoch})
        summary = getattr(pl_module, "assignment_summary", None)
        if callable(summary):
            row.update({f"assign_{name}": value for name, value in summary().items()})
        optimizers = getattr(trainer, "optimizers", None)
        if optimizers:
            row["lr"] = float(optimizers[0].param_groups[0]["lr"])
        self._flush()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after LitDetector.on_validation_epoch_end has logged val/map (callback hooks run before the module's)
        if trainer.sanity_checking:
            return
        row = self.epochs.setdefault(trainer.current_epoch, {"epoch": trainer.current_epoch})
        for key, value in trainer.callback_metrics.items():
            name = key.removeprefix("val/")
            # the COCO stats and val losses; not the progress bar's upper-case twins (val/mAP50-95, val/mAP50)
            if key.startswith("val/") and name == name.lower() and value.numel() == 1:
                row[f"val_{name}"] = float(value)
        if self._fit_start is not None:
            row["minutes"] = (time.perf_counter() - self._fit_start) / 60

    def _flush(self) -> None:
        if self._epoch is None:
            return
        steps, nonfinite = int(self._finite_steps), int(self._nonfinite_steps)
        row = self.epochs.setdefault(self._epoch, {"epoch": self._epoch})
        row["train_loss"] = float(self._loss_sum) / steps if steps else None
        row["train_steps"], row["train_nonfinite_steps"] = steps, nonfinite
        for key, total in self._component_sums.items():
            count = int(self._component_steps[key])
            row[key] = float(total) / count if count else None
        self._reset()

    def state_dict(self) -> dict[str, Any]:
        """The epochs so far and the sums of the epoch under way (plain types), so that a resumed run's history
        is the uninterrupted run's."""
        return {"epochs": {epoch: dict(row) for epoch, row in self.epochs.items()}, "epoch": self._epoch,
                "loss_sum": float(self._loss_sum), "finite_steps": int(self._finite_steps),
                "nonfinite_steps": int(self._nonfinite_steps),
                "component_sums": {k: float(v) for k, v in self._component_sums.items()},
                "component_steps": {k: int(v) for k, v in self._component_steps.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epochs = {int(epoch): dict(row) for epoch, row in state_dict["epochs"].items()}
        self._epoch = state_dict["epoch"]
        self._loss_sum = state_dict["loss_sum"]
        self._finite_steps, self._nonfinite_steps = state_dict["finite_steps"], state_dict["nonfinite_steps"]
        self._component_sums = dict(state_dict.get("component_sums", {}))
        self._component_steps = dict(state_dict.get("component_steps", {}))

    def history(self) -> list[dict[str, float | int | None]]:
        """One dict per epoch seen so far (including a partial epoch), sorted by epoch."""
        self._flush()
        return [self.epochs[epoch] for epoch in sorted(self.epochs)]


def train_dataset(trainer: L.Trainer):
    """The training DetectionDataset of a trainer (via its datamodule, else its train dataloader)."""
    datamodule = getattr(trainer, "datamodule", None)
    dataset = getattr(datamodule, "train_dataset", None)
    if dataset is None:
        loader = getattr(trainer, "train_dataloader", None)
        dataset = getattr(loader, "dataset", None)
    return dataset


class CloseMosaic(Callback):
    """Turn mosaic off for the last `epochs` epochs (YOLOv8's close_mosaic): the model finishes training on
    whole, un-mosaicked images, closer to what it sees at validation. The dataset (the datamodule's batch
    augmentation with `data.augment_on=device`) decides per sample (per batch) from its epoch, so batches prefetched
    before an epoch starts, and resumed runs, follow it too."""

    def __init__(self, epochs: int = 10) -> None:
        self.epochs = int(epochs)

    def first_closed_epoch(self, max_epochs: int | None) -> int | None:
        return max(max_epochs - self.epochs, 0) if max_epochs is not None and max_epochs > 0 else None

    @staticmethod
    def mosaic_makers(trainer: L.Trainer) -> list:
        """What makes the training mosaics: the dataset (in the DataLoader workers) and/or the datamodule's batch
        augmentation (`data.augment_on=device`)."""
        dataset = train_dataset(trainer)
        augment = getattr(getattr(trainer, "datamodule", None), "batch_augment", None)
        makers = []
        if hasattr(dataset, "close_mosaic_at") and getattr(dataset, "mosaic_pipeline", None) is not None:
            makers.append(dataset)
        if hasattr(augment, "close_mosaic_at") and getattr(augment, "mosaic_prob", 0) > 0:
            makers.append(augment)
        return makers

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # before Lightning creates the first epoch's DataLoader iterator (its workers start drawing samples at once)
        closed = self.first_closed_epoch(trainer.max_epochs)
        if closed is not None:
            for maker in self.mosaic_makers(trainer):
                maker.close_mosaic_at(closed)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.mosaic_makers(trainer) and trainer.current_epoch == self.first_closed_epoch(trainer.max_epochs):
            rank_zero_info(f"CloseMosaic: mosaic off from epoch {trainer.current_epoch}")


class SaveOnInterrupt(Callback):
    """On SIGTERM (Lightning stops after the current batch) or Ctrl+C, save `last.ckpt` before exiting,
    so that `python train.py ckpt_path=.../last.ckpt` resumes from there."""

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            return
        checkpoint = trainer.checkpoint_callback
        if not isinstance(checkpoint, ModelCheckpoint) or checkpoint.dirpath is None:
            return
        path = Path(checkpoint.dirpath) / f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}{ModelCheckpoint.FILE_EXTENSION}"
        trainer.save_checkpoint(path)
        rank_zero_info(f"Interrupted ({type(exception).__name__}): saved {path}")


class GradientNorms(Callback):
    """Log the gradient norm of each part of the model before clipping, `grad_norm/<part>`, at the logger's
    cadence (`trainer.log_every_n_steps`): the backbone stages, the neck, the head's box and class branches, and the
    class logits' bias alone (the prior), plus `cls_prior/level<i>`, sigmoid of the mean class bias of each level.
    A part is the name of a parameter cut after `depth` dots (`backbone.stage2`, `head.cls_branches`)."""

    def __init__(self, depth: int = 2) -> None:
        self.depth = int(depth)

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        if (trainer.global_step + 1) % max(trainer.log_every_n_steps, 1) != 0 and trainer.global_step != 0:
            return
        model = getattr(pl_module, "model", pl_module)
        parts: dict[str, list[torch.Tensor]] = {}
        for name, parameter in model.named_parameters():
            if parameter.grad is not None:
                parts.setdefault(".".join(name.split(".")[: self.depth]), []).append(parameter.grad)
        head = getattr(model, "head", None)
        cls_branches = getattr(head, "cls_branches", None)
        if cls_branches is not None:
            biases = [branch[-1].bias for branch in cls_branches]
            if all(b.grad is not None for b in biases):
                parts["head.cls_bias"] = [b.grad for b in biases]
            for level, bias in enumerate(biases):
                pl_module.log(f"cls_prior/level{level}", bias.detach().float().mean().sigmoid(), batch_size=1)
        for part, grads in parts.items():
            norm = torch.nn.utils.get_total_norm(grads)
            pl_module.log(f"grad_norm/{part}", norm, batch_size=1)


class DataStallMeter(Callback):
    """Per training epoch, how long the loop waited for its batches: `time/data_wait`, the share of the step time
    spent between the end of one batch (`on_train_batch_end`) and the start of the next (`on_train_batch_start`:
    fetching, collating, moving to the device); `time/step`, seconds per step (wait + compute); `time/images_per_s`,
    the batch size over `time/step`. The first batch of an epoch (DataLoader iterator and worker start-up) and
    validations in the middle of an epoch are left out. When the wait is above `warn_above` of the step time, one
    warning per run names the settings that feed the model faster.

    On a GPU the compute is asynchronous: the wait measured on the host overlaps the GPU's work until something
    synchronises (the loss logged on the progress bar does every step), so the fraction is an upper bound there."""

    def __init__(self, warn_above: float = 0.2) -> None:
        self.warn_above = float(warn_above)
        self.warned = False
        self._last_end: float | None = None
        self._batch_start: float | None = None
        self._reset()

    def _reset(self) -> None:
        self._wait = self._compute = 0.0
        self._steps = self._images = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reset()
        self._last_end = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        self._batch_start = time.perf_counter()
        if self._last_end is not None:
            self._wait += self._batch_start - self._last_end

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        now = time.perf_counter()
        if self._last_end is not None and self._batch_start is not None:  # the waits counted are those of these steps
            self._compute += now - self._batch_start
            self._steps += 1
            self._images += len(batch["images"]) if isinstance(batch, dict) and "images" in batch else extract_batch_size(batch)
        self._last_end = now

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._last_end is not None:  # a validation inside the epoch is not a data wait
            self._last_end = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._steps:
            return
        total = self._wait + self._compute
        wait_fraction = self._wait / total
        step = total / self._steps
        images_per_s = self._images / total
        for name, value in (("time/data_wait", wait_fraction), ("time/step", step), ("time/images_per_s", images_per_s)):
            pl_module.log(name, value, on_step=False, on_epoch=True, batch_size=1)
        if wait_fraction > self.warn_above and not self.warned:
            self.warned = True
            rank_zero_warn(
                f"epoch {trainer.current_epoch}: {wait_fraction:.0%} of the training step time ({step:.3f} s/step, "
                f"{images_per_s:.1f} img/s) was spent waiting for the next batch. Feed the model faster: more DataLoader "
                f"workers (data.num_workers=, now {_num_workers(trainer)}; about one per CPU core), or cache the decoded "
                "images (data.cache_images=ram, or disk when they do not fit in memory)."
            )


def _num_workers(trainer: L.Trainer) -> int | str:
    loader = getattr(trainer, "train_dataloader", None)
    return getattr(loader, "num_workers", "?")
