"""LitDetector hands the criterion the input's (height, width), so that a box loss that needs it (MPDIoU) gets it.
(The criteria's use of it is tested in tests/criteria; a whole training step with MPDIoU from the command line runs in
the slow tier of tests/configs/test_combinations.py.)"""

from __future__ import annotations

import pytest
import torch

from detector.criteria.base import CriterionOutput


class RecordingCriterion(torch.nn.Module):
    def forward(self, output, gt_labels, gt_boxes, gt_mask, image_size=None):
        self.image_size = image_size
        return CriterionOutput({"loss": torch.zeros(())})


def test_losses_pass_the_batchs_image_size(tiny_module, batch):
    module = tiny_module()
    module.criterion = RecordingCriterion()
    images = batch["images"]
    module._criterion({**batch, "images": images[..., :48]}, output=None)  # a non-square batch: (64, 48)
    assert module.criterion.image_size == (64, 48)


class DictCriterion(torch.nn.Module):
    def forward(self, output, gt_labels, gt_boxes, gt_mask, image_size=None):
        return {"loss": torch.zeros(())}


def test_a_criterion_that_returns_no_criterion_output_is_refused_by_name(tiny_module, batch):
    module = tiny_module()
    module.criterion = DictCriterion()
    with pytest.raises(TypeError, match=r"DictCriterion returned a dict: a criterion returns a CriterionOutput"):
        module._criterion(batch, output=None)
