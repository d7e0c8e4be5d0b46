"""Non-finite losses: the step is skipped with a warning naming the component; N in a row stop training."""

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from detector.assigners.tal import TaskAlignedAssigner
from detector.criteria.yolov8 import YOLOv8Criterion
from detector.losses.classification import BCEWithLogits
from detector.losses.dfl import DFLoss
from detector.losses.iou import CIoULoss
from detector.models import YOLODetector
from detector.postprocess.postprocessors import Postprocessor
from detector.training.module import LitDetector, NonFiniteLossError


class PoisonedCriterion(YOLOv8Criterion):
    """Returns a NaN box loss on the steps listed in `bad_steps` (counted per call)."""

    def __init__(self, bad_steps):
        super().__init__(TaskAlignedAssigner(2), BCEWithLogits(), CIoULoss(), DFLoss())
        self.bad_steps, self.calls = set(bad_steps), 0

    def forward(self, *args, **kwargs):
        output = super().forward(*args, **kwargs)
        losses = output.losses
        if self.calls in self.bad_steps:
            losses["box"] = losses["box"] * float("nan")
            losses["loss"] = losses["box"] + losses["cls"] + losses["dfl"]
        self.calls += 1
        return output


def batches(n):
    g = torch.Generator().manual_seed(0)
    return [{
        "images": torch.randint(0, 255, (2, 3, 64, 64), dtype=torch.uint8, generator=g),
        "labels": torch.tensor([[0], [1]]), "boxes": torch.tensor([[[8.0, 8, 40, 40]], [[20.0, 10, 60, 50]]]),
        "mask": torch.ones(2, 1, dtype=torch.bool),
    } for _ in range(n)]


def fit(bad_steps, steps, max_nonfinite_steps=3):
    module = LitDetector(
        YOLODetector(2, "n", image_size=64), PoisonedCriterion(bad_steps), Postprocessor(),
        optimizer=lambda params: torch.optim.SGD(params, lr=0.01), max_nonfinite_steps=max_nonfinite_steps,
    )
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, DataLoader(batches(steps), batch_size=None))
    return module


def test_a_nan_step_is_skipped_and_named():
    with pytest.warns(UserWarning, match=r"step 1: non-finite box, loss; skipped the update \(1/3 in a row\)"):
        module = fit(bad_steps=[1], steps=3)
    assert module.nonfinite_steps == 0  # reset by the good step after it
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_consecutive_nan_steps_stop_training_with_a_clear_error():
    with pytest.raises(NonFiniteLossError, match="3 consecutive steps with non-finite loss"):
        with pytest.warns(UserWarning):
            fit(bad_steps=[1, 2, 3, 4, 5], steps=6)


def test_skipped_step_leaves_the_weights_unchanged():
    module = LitDetector(YOLODetector(2, "n", image_size=64), PoisonedCriterion([0]), Postprocessor(),
                         optimizer=lambda params: torch.optim.SGD(params, lr=0.1))
    before = {k: v.clone() for k, v in module.model.state_dict().items() if v.dtype.is_floating_point}
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    with pytest.warns(UserWarning, match="non-finite"):
        trainer.fit(module, DataLoader(batches(1), batch_size=None))
    after = module.model.state_dict()
    # parameters are untouched (BatchNorm running statistics still saw the forward pass)
    for name, _ in module.model.named_parameters():
        assert torch.equal(before[name], after[name]), name
