"""Mosaic control during training. The mosaic itself is albumentations' `A.Mosaic`
(`detector.data.transforms.mosaic_transform`), fed by `DetectionDataset` with 3 extra random images
through its metadata key; `DetectionDataset.set_mosaic` switches it on/off in every DataLoader worker
(a shared-memory flag, so persistent workers see it too).

Add to the trainer's callbacks, e.g. in a callbacks config:

    close_mosaic:
      _target_: detector.data.mosaic.CloseMosaic
      epochs: 10
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info


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
    whole, un-mosaicked images, closer to what it sees at validation. Also correct on resume."""

    def __init__(self, epochs: int = 10) -> None:
        self.epochs = int(epochs)

    def mosaic_wanted(self, epoch: int, max_epochs: int | None) -> bool:
        return not (max_epochs is not None and max_epochs > 0 and epoch >= max_epochs - self.epochs)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # runs before the epoch's DataLoader iterator (and its workers' first batches) is created
        dataset = train_dataset(trainer)
        if dataset is None or not hasattr(dataset, "set_mosaic") or getattr(dataset, "mosaic_pipeline", None) is None:
            return
        wanted = self.mosaic_wanted(trainer.current_epoch, trainer.max_epochs)
        if dataset.mosaic_enabled != wanted:
            dataset.set_mosaic(wanted)
            rank_zero_info(f"CloseMosaic: mosaic {'on' if wanted else 'off'} from epoch {trainer.current_epoch}")
