"""DataStallMeter: a slow dataset makes the training loop wait (time/data_wait high, one warning naming the
settings that help); a fast one does not; the logged figures are consistent (img/s = batch size / step time)."""

from __future__ import annotations

import time
import warnings

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from detector.training.callbacks import DataStallMeter

BATCH, STEPS = 4, 6


class Sleepy(Dataset):
    """Batches of {"images"}; each sample takes `delay` seconds to load."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def __len__(self) -> int:
        return BATCH * STEPS

    def __getitem__(self, index: int) -> dict:
        time.sleep(self.delay)
        return {"images": torch.full((2,), float(index))}


class Busy(L.LightningModule):
    """A model whose training step takes `compute` seconds."""

    def __init__(self, compute: float) -> None:
        super().__init__()
        self.compute, self.layer = compute, nn.Linear(2, 1)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        time.sleep(self.compute)
        return self.layer(batch["images"]).square().mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def fit(delay: float, compute: float, epochs: int = 2) -> tuple[dict, list[str]]:
    meter = DataStallMeter(warn_above=0.2)
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[meter])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(Busy(compute), DataLoader(Sleepy(delay), batch_size=BATCH, num_workers=0))
    stalls = [str(w.message) for w in caught if "waiting for the next batch" in str(w.message)]
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("time/")}, stalls


def test_a_slow_dataset_is_reported_once_with_the_fix():
    # per step: 4 x 50 ms loading against 10 ms of compute: about 95% of the step is waiting
    metrics, stalls = fit(delay=0.05, compute=0.01)
    assert 0.5 < metrics["time/data_wait"] <= 1.0
    assert 0.21 <= metrics["time/step"] < 2.0
    assert metrics["time/images_per_s"] == pytest.approx(BATCH / metrics["time/step"], rel=1e-6)
    assert len(stalls) == 1  # two slow epochs, one warning
    assert "data.num_workers=" in stalls[0] and "data.cache_images=ram" in stalls[0]


def test_a_fast_dataset_is_not_reported():
    metrics, stalls = fit(delay=0.0, compute=0.15)  # long enough for Lightning's own work between steps not to count
    assert 0.0 <= metrics["time/data_wait"] < 0.2
    assert 0.15 <= metrics["time/step"] < 2.0
    assert metrics["time/images_per_s"] == pytest.approx(BATCH / metrics["time/step"], rel=1e-6)
    assert stalls == []
