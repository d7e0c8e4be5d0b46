"""LitDetector hands the criterion the input's (height, width), so that a box loss that needs it (MPDIoU) gets it.
(The criteria's use of it is tested in tests/criteria; a whole training step with MPDIoU from the command line runs in
the slow tier of tests/configs/test_combinations.py.)"""

from __future__ import annotations

import torch


class RecordingCriterion(torch.nn.Module):
    def forward(self, output, gt_labels, gt_boxes, gt_mask, image_size=None):
        self.image_size = image_size
        return {"loss": torch.zeros(())}


def test_losses_pass_the_batchs_image_size(tiny_module, batch):
    module = tiny_module()
    module.criterion = RecordingCriterion()
    images = batch["images"]
    module._losses({**batch, "images": images[..., :48]}, output=None)  # a non-square batch: (64, 48)
    assert module.criterion.image_size == (64, 48)
