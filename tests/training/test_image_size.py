"""LitDetector hands the criterion the input's size, so that a box loss that needs it (MPDIoU) trains."""

from __future__ import annotations

import torch

from detector.losses.iou import MPDIoULoss


def test_training_step_passes_the_image_size_to_mpdiou(tiny_module, batch):
    module = tiny_module()
    module.criterion.box_loss = MPDIoULoss()
    module.train()
    losses = module._losses(batch, module(batch["images"]))
    assert losses["box"] > 0 and torch.isfinite(losses["loss"])
    losses["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in module.model.parameters() if p.grad is not None)
