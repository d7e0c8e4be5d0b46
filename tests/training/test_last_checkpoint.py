"""checkpoints/last.ckpt holds the last epoch even when the monitored metric stopped improving (Lightning's
save_last only rewrites it with best.ckpt), with the callbacks of configs/callbacks/default.yaml."""

from pathlib import Path

import hydra
import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.demos.boring_classes import BoringModel
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[2]


class WorseEachEpoch(BoringModel):
    """val/map 1, 1/2, 1/3, ...: only the first epoch is the best."""

    def validation_step(self, batch, batch_idx):
        self.log("val/map", 1.0 / (self.current_epoch + 1))
        return super().validation_step(batch, batch_idx)


def test_last_ckpt_is_the_last_epoch_and_best_ckpt_the_best(tmp_path):
    callbacks = OmegaConf.load(ROOT / "configs" / "callbacks" / "default.yaml")
    checkpoints = [hydra.utils.instantiate(callbacks[name], dirpath=str(tmp_path))
                   for name in ("model_checkpoint", "last_checkpoint")]
    assert all(isinstance(c, ModelCheckpoint) for c in checkpoints)
    trainer = L.Trainer(max_epochs=3, callbacks=checkpoints, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_train_batches=2, limit_val_batches=1, accelerator="cpu")
    trainer.fit(WorseEachEpoch())
    assert trainer.checkpoint_callback is checkpoints[0]  # what the runner reports as the best checkpoint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt", "last.ckpt"]
    assert torch.load(tmp_path / "best.ckpt", weights_only=False)["epoch"] == 0
    assert torch.load(tmp_path / "last.ckpt", weights_only=False)["epoch"] == 2
