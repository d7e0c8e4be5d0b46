"""The static-to-dynamic schedule (`assigner=atss_then_tal`): which assigner runs in which epoch, from the config,
and across a resume from a checkpoint saved before the switch."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from detector.assigners.atss import ATSSAssigner
from detector.assigners.base import background_assignment
from detector.assigners.tal import TaskAlignedAssigner
from detector.assigners.warmup import WarmupAssigner
from detector.criteria.yolov8 import YOLOv8Criterion
from detector.losses.classification import BCEWithLogits
from detector.losses.dfl import DFLoss
from detector.losses.iou import CIoULoss
from detector.models import YOLODetector
from detector.postprocess.postprocessors import Postprocessor
from detector.training.module import LitDetector


class Recording(torch.nn.Module):
    """An assigner that records the epoch it ran in (via the shared log) and assigns nothing."""

    def __init__(self, name: str, log: list, num_classes: int = 2):
        super().__init__()
        self.name, self.log, self.num_classes = name, log, num_classes

    def forward(self, inputs):
        self.log.append(self.name)
        batch, anchors, _ = inputs.pred_scores.shape
        return background_assignment(batch, anchors, self.num_classes, inputs.pred_boxes)


def test_switches_at_the_warmup_boundary():
    log = []
    assigner = WarmupAssigner(2, Recording("warmup", log), Recording("main", log), warmup_epochs=2)
    for epoch in range(4):
        assigner.set_epoch(epoch, 4)
        assert assigner.active.name == ("warmup" if epoch < 2 else "main")
    assert WarmupAssigner(2, Recording("w", log), Recording("m", log), warmup_epochs=0).active.name == "m"
    with pytest.raises(ValueError, match="warmup_epochs"):
        WarmupAssigner(2, Recording("w", log), Recording("m", log), warmup_epochs=-1)


def test_config_builds_atss_then_tal(compose_config):
    import hydra

    cfg = compose_config(["assigner=atss_then_tal", "assigner.warmup_epochs=2", "assigner.main.small_objects=true"])
    assigner = hydra.utils.instantiate(cfg.assigner)
    assert isinstance(assigner, WarmupAssigner) and assigner.warmup_epochs == 2
    assert isinstance(assigner.warmup, ATSSAssigner) and assigner.warmup.topk == 9
    assert isinstance(assigner.main, TaskAlignedAssigner) and assigner.main.small_objects


class EpochLog(L.Callback):
    """Which assigner each training epoch used (the last one that ran in it)."""

    def __init__(self, calls: list):
        self.calls, self.epochs = calls, {}

    def on_train_epoch_end(self, trainer, module):
        self.epochs[trainer.current_epoch] = self.calls[-1]


def batches(count: int = 2):
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (count, 3, 64, 64), dtype=torch.uint8, generator=generator)
    return [{"images": image[None], "labels": torch.tensor([[0]]), "boxes": torch.tensor([[[8.0, 8, 40, 40]]]),
             "mask": torch.tensor([[True]])} for image in images]


def fit(module, log, root, max_epochs, ckpt_path=None):
    epochs = EpochLog(log)
    trainer = L.Trainer(max_epochs=max_epochs, limit_val_batches=0, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, default_root_dir=root, accelerator="cpu", callbacks=[epochs])
    trainer.fit(module, DataLoader(batches(), batch_size=None), ckpt_path=ckpt_path)
    return trainer, epochs.epochs


def build(log):
    torch.manual_seed(0)
    assigner = WarmupAssigner(2, Recording("warmup", log), Recording("main", log), warmup_epochs=2)
    criterion = YOLOv8Criterion(assigner, BCEWithLogits(), CIoULoss(), DFLoss())
    model = YOLODetector(2, "n", image_size=64)
    return LitDetector(model, criterion, Postprocessor(), lambda groups: torch.optim.SGD(groups, lr=1e-3))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")
@pytest.mark.filterwarnings("ignore:The '(train|val)_dataloader' does not have many workers")
@pytest.mark.filterwarnings("ignore:epoch .* got no positive anchor")  # the recording assigners assign nothing
def test_switch_follows_the_trainer_epoch_across_a_resume(tmp_path):
    log = []
    trainer, epochs = fit(build(log), log, tmp_path / "first", max_epochs=1)
    assert epochs == {0: "warmup"}
    trainer.save_checkpoint(tmp_path / "epoch0.ckpt")
    # resumed in a fresh module (its assigner starts at epoch 0): epoch 1 is still warm-up, epochs 2, 3 are not
    log = []
    _, epochs = fit(build(log), log, tmp_path / "resumed", max_epochs=4, ckpt_path=tmp_path / "epoch0.ckpt")
    assert epochs == {1: "warmup", 2: "main", 3: "main"}
