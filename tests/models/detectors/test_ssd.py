"""SSD models: output shapes, priors (8732 for SSD300) and their cache; built without weights, SSD300's VGG16 takes
torchvision's on the training side."""

from urllib.error import URLError

import pytest
import torch
from torchvision.models import get_model

from detector.models.detectors.ssd import SSD300VGG16, SSDCSP
from detector.models.heads.ssd import SSDHeadOutput
from detector.models.priors import ssd300_default_boxes
from detector.training.finetune import prepare_model


def test_ssd300_vgg16_gives_8732_boxes_on_300px_and_caches_its_priors():
    torch.manual_seed(0)
    model = SSD300VGG16(num_classes=3).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 300, 300))
    assert isinstance(out, SSDHeadOutput)
    assert out.box_deltas.shape == (1, 8732, 4) and out.cls_logits.shape == (1, 8732, 4) and out.priors.boxes.shape == (8732, 4)
    torch.testing.assert_close(out.priors.boxes, ssd300_default_boxes())
    assert out.priors.level_sizes == (5776, 2166, 600, 150, 36, 4)  # 38^2 x 4, 19^2 x 6, ...
    assert model.priors([(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)], (300, 300), torch.device("cpu")) is out.priors
    with pytest.raises(ValueError, match="too small"):
        model(torch.rand(1, 3, 128, 128))


@pytest.mark.slow  # builds VGG16 and SSD300 twice: about 7 s
def test_ssd300_without_network_names_the_vgg_file_and_takes_a_local_copy(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def download_url_to_file(url, *args, **kwargs):
        raise URLError(OSError(-2, "Name or service not known"))

    monkeypatch.setattr(torch.hub, "download_url_to_file", download_url_to_file)
    with pytest.raises(RuntimeError, match=r"could not download .*vgg16_features-amdegroot-88682ab5.pth.* place it at "
                                           r".*hub/checkpoints/vgg16_features-amdegroot-88682ab5.pth.*"
                                           r"model.backbone_weights=/path/to/vgg16_features-amdegroot-88682ab5.pth"):
        prepare_model(SSD300VGG16(num_classes=3), pretrained_backbone=True)
    torch.manual_seed(0)
    vgg = get_model("vgg16", weights=None)
    torch.save(vgg.state_dict(), tmp_path / "vgg16.pth")
    model = SSD300VGG16(num_classes=3)
    head = model.head.state_dict()
    prepare_model(model, backbone_weights=str(tmp_path / "vgg16.pth"))
    assert torch.equal(model.conv4_3[0].weight, vgg.features[0].weight)
    assert torch.equal(model.conv7[5].bias, vgg.features[28].bias)  # conv5_3, after pool4
    assert all(torch.equal(v, model.head.state_dict()[k]) for k, v in head.items())  # the rest as built


def test_ssd_csp_outputs_follow_the_default_box_order():
    torch.manual_seed(0)
    model = SSDCSP(num_classes=5, scale="n").eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 128, 128))
    # levels 16, 8, 4, 2, 1 with 4 boxes per location
    anchors = 4 * (16**2 + 8**2 + 4**2 + 2**2 + 1)
    assert out.box_deltas.shape == (2, anchors, 4) and out.cls_logits.shape == (2, anchors, 6)
    assert out.priors.boxes.shape == (anchors, 4) and sum(out.priors.level_sizes) == anchors
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
    centre = out.priors.points[index]
    assert centre.tolist() == [2.5 * 8, 1.5 * 8]
    # initial scores: the background dominates (foreground bias log(0.01 / 0.99))
    assert out.cls_logits.softmax(-1)[..., 0].mean() > 0.8


def test_ssd_head_output_decodes_against_its_priors_and_carries_its_variances():
    model = SSDCSP(num_classes=2, variances=(0.1, 0.2)).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 64))
    assert out.variances == (0.1, 0.2)
    # zero offsets decode to the default boxes themselves
    torch.testing.assert_close(out._replace(box_deltas=torch.zeros_like(out.box_deltas)).decode_boxes()[0], out.priors.boxes)
    # strides: the centre spacing of each level (64 px / feature width), per prior
    assert out.priors.strides[0].item() == 8.0 and out.priors.strides[-1].item() == 64.0  # the last level is 1 x 1
