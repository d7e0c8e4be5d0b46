import pytest
import torch

from detector.models import YOLODetector
from detector.models.scales import SCALES


def test_n_scale_parameter_count_matches_published_yolov8n():
    model = YOLODetector(num_classes=80, scale="n")
    count = sum(p.numel() for p in model.parameters())
    # published YOLOv8n: 3,151,904 parameters with BatchNorm fused into the convs (3,157,200 unfused
    # including the 16 fixed DFL weights, which this head does not need as a layer)
    assert abs(count - 3_151_904) / 3_151_904 < 0.05
    assert count == 3_157_184


@pytest.mark.parametrize("scale", sorted(SCALES))
def test_output_shapes_for_every_scale(scale):
    model = YOLODetector(num_classes=3, scale=scale).eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 64, 96))
    anchors = 8 * 12 + 4 * 6 + 2 * 3  # strides 8/16/32 on a 64x96 input
    assert out.box_logits.shape == (1, anchors, 64)
    assert out.cls_logits.shape == (1, anchors, 3)
    assert out.priors.points.shape == (anchors, 2) and out.priors.strides.shape == (anchors, 1)
    assert out.priors.boxes is None and out.priors.level_sizes == (8 * 12, 4 * 6, 2 * 3)


def test_scales_grow_monotonically():
    counts = [sum(p.numel() for p in YOLODetector(80, s).parameters()) for s in "nsml"]
    assert counts == sorted(counts)


def test_head_bias_initialisation():
    model = YOLODetector(num_classes=80, scale="n", image_size=640)
    import math

    for cls_branch, box_branch, stride in zip(model.head.cls_branches, model.head.box_branches, (8, 16, 32)):
        assert torch.allclose(box_branch[-1].bias, torch.ones(64))
        expected = math.log(5 / 80 / (640 / stride) ** 2)
        assert torch.allclose(cls_branch[-1].bias, torch.full((80,), expected))


def test_unknown_scale_is_refused():
    with pytest.raises(ValueError, match="unknown model scale 'q'"):
        YOLODetector(3, scale="q")


def test_dfl_free_head_regresses_the_distances_directly():
    torch.manual_seed(0)
    model = YOLODetector(3, "n", reg_max=1, image_size=64).eval()
    with torch.no_grad():
        output = model(torch.rand(1, 3, 64, 64))
    assert output.box_logits.shape[-1] == 4 and output.reg_max == 1
    points, strides = output.priors.points, output.priors.strides
    expected = torch.cat([points - output.box_logits[0, :, :2] * strides, points + output.box_logits[0, :, 2:] * strides], -1)
    torch.testing.assert_close(output.decode_boxes()[0], expected)
    with pytest.raises(ValueError, match="reg_max must be >= 1"):
        YOLODetector(3, "n", reg_max=0)


def test_end_to_end_model_has_a_one_to_one_branch_of_the_same_layout():
    torch.manual_seed(0)
    plain = YOLODetector(3, "n", image_size=64)
    model = YOLODetector(3, "n", image_size=64, end2end=True)
    assert plain(torch.rand(1, 3, 64, 64)).one2one is None
    output = model(torch.rand(2, 3, 64, 64))
    assert output.one2one.box_logits.shape == output.box_logits.shape
    assert output.one2one.cls_logits.shape == output.cls_logits.shape and output.one2one.priors is output.priors
    # initialised as a copy of the one-to-many head
    for (name, a), b in zip(model.head.state_dict().items(), model.one2one_head.state_dict().values()):
        assert torch.equal(a, b), name


def test_one_to_one_loss_trains_only_its_own_head():
    """As in YOLOv10: the one-to-one branch sees detached features while training."""
    torch.manual_seed(0)
    model = YOLODetector(3, "n", image_size=64, end2end=True).train()
    output = model(torch.rand(2, 3, 64, 64))
    (output.one2one.box_logits.sum() + output.one2one.cls_logits.sum()).backward()
    grads = {name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert grads and all(name.startswith("one2one_head.") for name in grads)
