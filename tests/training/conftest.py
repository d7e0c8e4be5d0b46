"""Fixtures: a tiny LitDetector (n-scale YOLOv8-style model) that has the same weights at every build, a 64-px
batch of 2, and a training step that returns the losses and gradients."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from detector.assigners.tal import TaskAlignedAssigner
from detector.criteria.yolov8 import YOLOv8Criterion
from detector.losses.classification import BCEWithLogits
from detector.losses.dfl import DFLoss
from detector.losses.iou import CIoULoss
from detector.models import YOLODetector
from detector.postprocess.postprocessors import Postprocessor
from detector.training.module import LitDetector

IMG_SIZE, NUM_CLASSES = 64, 5


Losses = dict[str, torch.Tensor]


def build_module(**options) -> LitDetector:
    torch.manual_seed(0)
    model = YOLODetector(NUM_CLASSES, "n", image_size=IMG_SIZE)
    criterion = YOLOv8Criterion(TaskAlignedAssigner(NUM_CLASSES), BCEWithLogits(), CIoULoss(), DFLoss())
    return LitDetector(model, criterion, Postprocessor(), lambda groups: torch.optim.SGD(groups, lr=0.01), **options)


@pytest.fixture
def tiny_module() -> Callable[..., LitDetector]:
    """tiny_module(**options) -> a LitDetector with the same weights at every call; `options` go to LitDetector
    (channels_last, compile_model)."""
    return build_module


@pytest.fixture
def batch() -> dict[str, torch.Tensor]:
    """Two uint8 images (as the data loader gives them) with 2 and 1 GT boxes."""
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (2, 3, IMG_SIZE, IMG_SIZE), dtype=torch.uint8, generator=generator)
    boxes = torch.tensor([[[4.0, 6, 30, 40], [34, 30, 60, 58]], [[10, 10, 40, 30], [0, 0, 0, 0]]])
    labels, mask = torch.tensor([[0, 3], [1, -1]]), torch.tensor([[True, True], [True, False]])
    return {"images": images, "boxes": boxes, "labels": labels, "mask": mask}


def train_step(module: LitDetector, batch: dict[str, torch.Tensor]) -> tuple[Losses, Losses]:
    """(loss components, gradients by parameter name) of one training-mode forward + backward."""
    module.train()
    module.zero_grad(set_to_none=True)
    losses = module.criterion(module(batch["images"]), batch["labels"], batch["boxes"], batch["mask"]).losses
    losses["loss"].backward()
    return losses, {name: p.grad for name, p in module.model.named_parameters() if p.grad is not None}


def assert_same_step(expected: tuple[Losses, Losses], actual: tuple[Losses, Losses], loss_rtol: float) -> None:
    """Two train_step results agree: every loss component to `loss_rtol`, and each parameter's gradient to 1e-3 of
    its norm (other kernels sum in another order). The batch must have positives (box and cls losses > 0)."""
    (expected_losses, expected_grads), (actual_losses, actual_grads) = expected, actual
    assert expected_losses["box"] > 0 and expected_losses["cls"] > 0
    for name in expected_losses:
        torch.testing.assert_close(actual_losses[name], expected_losses[name], rtol=loss_rtol, atol=1e-6)
    assert expected_grads.keys() == actual_grads.keys()
    for name, grad in expected_grads.items():
        assert (actual_grads[name] - grad).norm() <= 1e-3 * grad.norm(), name


@pytest.fixture
def training_step() -> Callable[[LitDetector, dict[str, torch.Tensor]], tuple[Losses, Losses]]:
    """training_step(module, batch) -> (loss components, gradients by parameter name)."""
    return train_step
