"""`channels_last=true`: the weights and the input batch are in channels_last memory format, and the training
loss, gradients and predictions equal those of the default (contiguous) format."""

from __future__ import annotations

import torch
from torch import nn

from .conftest import assert_same_step


def test_conv_weights_are_channels_last(tiny_module):
    convs = [m for m in tiny_module(channels_last=True).model.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    # 3x3 convs with several input channels tell the two formats apart
    assert any(not c.weight.is_contiguous() for c in convs)
    assert all(c.weight.is_contiguous() for c in tiny_module().model.modules() if isinstance(c, nn.Conv2d))


def test_input_batch_is_converted(tiny_module, batch):
    seen = []
    module = tiny_module(channels_last=True)
    module.model.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    module(batch["images"])
    assert seen[0].dtype == torch.float32 and seen[0].is_contiguous(memory_format=torch.channels_last)
    assert not seen[0].is_contiguous()


def test_loss_gradients_and_predictions_equal_the_contiguous_format(tiny_module, batch, training_step):
    reference, channels_last = tiny_module(), tiny_module(channels_last=True)
    # gradients: other conv kernels sum in another order (6e-5 of the norm seen)
    assert_same_step(training_step(reference, batch), training_step(channels_last, batch), loss_rtol=1e-5)

    # predictions: the eval-mode head outputs (the detections after NMS of an untrained model hinge on ties)
    reference.eval(), channels_last.eval()
    with torch.no_grad():
        expected_out, actual_out = reference(batch["images"]), channels_last(batch["images"])
    torch.testing.assert_close(actual_out.box_logits, expected_out.box_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(actual_out.cls_logits, expected_out.cls_logits, rtol=1e-5, atol=1e-5)
