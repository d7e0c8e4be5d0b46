"""SSD models: output shapes, priors (8732 for SSD300) and their cache, no download by default."""

import inspect

import pytest
import torch

from detector.models.priors import ssd300_default_boxes
from detector.models.ssd import SSD300VGG16, SSDCSP, SSDHeadOutput


def test_ssd300_vgg16_gives_8732_boxes_on_300px_and_caches_its_priors():
    assert inspect.signature(SSD300VGG16).parameters["pretrained_backbone"].default is False
    torch.manual_seed(0)
    model = SSD300VGG16(num_classes=3).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 300, 300))
    assert isinstance(out, SSDHeadOutput)
    assert out.box_deltas.shape == (1, 8732, 4) and out.cls_logits.shape == (1, 8732, 4) and out.priors.shape == (8732, 4)
    torch.testing.assert_close(out.priors, ssd300_default_boxes())
    assert model.priors([(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)], (300, 300), torch.device("cpu")) is out.priors
    with pytest.raises(ValueError, match="too small"):
        model(torch.rand(1, 3, 128, 128))


def test_ssd_csp_outputs_follow_the_default_box_order():
    torch.manual_seed(0)
    model = SSDCSP(num_classes=5, scale="n").eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 128, 128))
    # levels 16, 8, 4, 2, 1 with 4 boxes per location
    anchors = 4 * (16**2 + 8**2 + 4**2 + 2**2 + 1)
    assert out.box_deltas.shape == (2, anchors, 4) and out.cls_logits.shape == (2, anchors, 6)
    assert out.priors.shape == (anchors, 4)
    with torch.no_grad():
        assert model(torch.rand(1, 3, 128, 128)).priors is out.priors  # cached, not rebuilt
    # the head's flattening matches the priors: the box output of location (y=1, x=2), box 3 of level 0
    # is channel 3 * 4 + c of the level-0 box map
    with torch.no_grad():
        features = model.neck(model.backbone(torch.rand(1, 3, 128, 128)))
        box_map = model.head.box_branches[0](features[0])  # (1, 4 boxes x 4, 16, 16)
    x = features[-1]
    for layer in model.extras:
        x = layer(x)
        features.append(x)
    with torch.no_grad():
        deltas, _ = model.head(features)
    index = (1 * 16 + 2) * 4 + 3
    torch.testing.assert_close(deltas[0, index], box_map[0, 12:16, 1, 2])
    centre = (out.priors[index, :2] + out.priors[index, 2:]) / 2
    assert centre.tolist() == [2.5 * 8, 1.5 * 8]
    # initial scores: the background dominates (foreground bias log(0.01 / 0.99))
    assert out.cls_logits.softmax(-1)[..., 0].mean() > 0.8


def test_ssd_models_refuse_dfl_bins():
    with pytest.raises(ValueError, match="no DFL bins"):
        SSDCSP(num_classes=2, reg_max=16)
