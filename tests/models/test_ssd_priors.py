"""SSD default boxes and the classic multi-scale anchor generator: counts, hand-computed coordinates,
agreement with torchvision's generators."""

import math

import pytest
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator, DefaultBoxGenerator
from torchvision.models.detection.image_list import ImageList

from detector.models.priors import (
    SSD300_ASPECT_RATIOS,
    SSD300_SCALES,
    SSD300_STEPS,
    anchor_points,
    default_boxes,
    multiscale_anchors,
    square_priors,
    ssd300_default_boxes,
    ssd_scales,
)


def test_ssd300_has_8732_default_boxes():
    boxes = ssd300_default_boxes()
    assert boxes.shape == (8732, 4)
    # per level: 38^2 * 4 + 19^2 * 6 + 10^2 * 6 + 5^2 * 6 + 3^2 * 4 + 1 * 4
    assert 5776 + 2166 + 600 + 150 + 36 + 4 == 8732


def test_ssd300_box_coordinates_by_hand():
    boxes = ssd300_default_boxes()
    # first location of conv4_3: centre (0.5 * 8, 0.5 * 8) = (4, 4) px; min size 21, max size 45
    torch.testing.assert_close(boxes[0], torch.tensor([4 - 10.5, 4 - 10.5, 4 + 10.5, 4 + 10.5]))
    extra = math.sqrt(21 * 45) / 2  # the extra box sqrt(s_k s_k+1)
    torch.testing.assert_close(boxes[1], torch.tensor([4 - extra, 4 - extra, 4 + extra, 4 + extra]))
    w, h = 21 * math.sqrt(2) / 2, 21 / math.sqrt(2) / 2  # ratio 2 then 1/2
    torch.testing.assert_close(boxes[2], torch.tensor([4 - w, 4 - h, 4 + w, 4 + h]))
    torch.testing.assert_close(boxes[3], torch.tensor([4 - h, 4 - w, 4 + h, 4 + w]))
    # second location (x = 1): centre x = 1.5 * 8 = 12
    torch.testing.assert_close(boxes[4], torch.tensor([12 - 10.5, 4 - 10.5, 12 + 10.5, 4 + 10.5]))
    # conv7 (19 x 19, step 16), first location: index 5776, centre 8, min size 45, max size 99, ratio 3
    torch.testing.assert_close(boxes[5776], torch.tensor([8 - 22.5, 8 - 22.5, 8 + 22.5, 8 + 22.5]))
    w3, h3 = 45 * math.sqrt(3) / 2, 45 / math.sqrt(3) / 2
    torch.testing.assert_close(boxes[5776 + 4], torch.tensor([8 - w3, 8 - h3, 8 + w3, 8 + h3]))
    # last level: one location at the image centre, min size 261, max size 315
    torch.testing.assert_close(boxes[-4], torch.tensor([150 - 130.5, 150 - 130.5, 150 + 130.5, 150 + 130.5]))
    half = math.sqrt(261 * 315) / 2
    torch.testing.assert_close(boxes[-3], torch.tensor([150 - half, 150 - half, 150 + half, 150 + half]))
    # ratio 2: 369 x 185 px, clipped to the image width (the reference clip of (cx, cy, w, h) to [0, 1])
    w, h = 261 * math.sqrt(2) / 2, 261 / math.sqrt(2) / 2
    torch.testing.assert_close(boxes[-2], torch.tensor([0.0, 150 - h, 300.0, 150 + h]))
    torch.testing.assert_close(ssd300_default_boxes(clip=False)[-2], torch.tensor([150 - w, 150 - h, 150 + w, 150 + h]))


def test_ssd300_matches_torchvision_default_box_generator():
    generator = DefaultBoxGenerator([list(r) for r in SSD300_ASPECT_RATIOS], scales=list(SSD300_SCALES),
                                    steps=list(SSD300_STEPS))
    features = [torch.zeros(1, 1, s, s) for s in (38, 19, 10, 5, 3, 1)]
    reference = generator(ImageList(torch.zeros(1, 3, 300, 300), [(300, 300)]), features)[0]
    torch.testing.assert_close(ssd300_default_boxes(), reference, atol=1e-3, rtol=0)


def test_ssd_scales_follow_the_paper_formula():
    # plain eq. 4 over 6 levels: 0.2, 0.34, ..., 0.9, then one more step for the last extra box
    assert ssd_scales(6, 0.2, 0.9, first_scale=None) == pytest.approx([0.2, 0.34, 0.48, 0.62, 0.76, 0.9, 1.04])
    # SSD300 convention: own first level, 0.2..0.9 over the 5 others
    assert ssd_scales(6) == pytest.approx([0.1, 0.2, 0.375, 0.55, 0.725, 0.9, 1.075])
    # the COCO SSD300 numbers come out of the same rule
    assert ssd_scales(6, 0.15, 0.87, 0.07) == pytest.approx(list(SSD300_SCALES))


def test_default_boxes_without_steps_centre_on_feature_cells_and_follow_ratios():
    boxes = default_boxes([(2, 2)], (100, 200), [(2, 3)], scales=[0.2, 0.45], clip=False)
    assert boxes.shape == (2 * 2 * 6, 4)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    # (i + 0.5) / f_k of the image: x in {50, 150} of 200, y in {25, 75} of 100; row-major, boxes innermost
    assert centres[::6].tolist() == [[50.0, 25.0], [150.0, 25.0], [50.0, 75.0], [150.0, 75.0]]
    sizes = boxes[:6, 2:] - boxes[:6, :2]
    s, e = 0.2, math.sqrt(0.2 * 0.45)
    expected = [(s, s), (e, e), (s * 2**0.5, s / 2**0.5), (s / 2**0.5, s * 2**0.5), (s * 3**0.5, s / 3**0.5), (s / 3**0.5, s * 3**0.5)]
    torch.testing.assert_close(sizes, torch.tensor(expected) * torch.tensor([200.0, 100.0]))


def test_multiscale_anchors_match_torchvision_anchor_generator():
    # integer-sized anchors so that torchvision's rounding of the base anchors changes nothing
    sizes, ratios = ((16, 32),), ((1.0,),)
    ours = multiscale_anchors([(3, 4)], (8,), sizes, ratios, offset=0.0)
    generator = AnchorGenerator(sizes=sizes, aspect_ratios=ratios)
    reference = generator(ImageList(torch.zeros(1, 3, 24, 32), [(24, 32)]), [torch.zeros(1, 1, 3, 4)])[0]
    torch.testing.assert_close(ours, reference)


def test_multiscale_anchor_shapes_by_hand():
    anchors = multiscale_anchors([(1, 1), (1, 1)], (8, 16), ((32,), (64,)), ((0.5, 2.0), (1.0,)))
    # level 0: centre 4, size 32, ratio w/h = 0.5 -> w = 32 / sqrt 2, h = 32 sqrt 2; then ratio 2
    a, b = 16 / math.sqrt(2), 16 * math.sqrt(2)
    expected = torch.tensor([[4 - a, 4 - b, 4 + a, 4 + b], [4 - b, 4 - a, 4 + b, 4 + a], [8 - 32, 8 - 32, 8 + 32, 8 + 32]])
    torch.testing.assert_close(anchors, expected)


def test_square_priors_for_anchor_points():
    points, strides = anchor_points([(1, 2)], (8,))
    priors = square_priors(points * strides, strides, scale=4.0)
    assert priors.tolist() == [[-12.0, -12.0, 20.0, 20.0], [-4.0, -12.0, 28.0, 20.0]]
