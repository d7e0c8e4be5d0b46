"""Centre-size box coder of the SSD models (round trip, hand values, torchvision's BoxCoder)."""

import math

import torch
from torchvision.models.detection._utils import BoxCoder

from detector.models.coders import decode_boxes, encode_boxes


def test_encoding_by_hand():
    prior = torch.tensor([0.0, 0, 10, 10])  # centre (5, 5), size 10 x 10
    box = torch.tensor([1.0, 2, 13, 10])  # centre (7, 6), size 12 x 8
    expected = torch.tensor([2 / (0.1 * 10), 1 / (0.1 * 10), math.log(1.2) / 0.2, math.log(0.8) / 0.2])
    torch.testing.assert_close(encode_boxes(box, prior), expected)
    torch.testing.assert_close(decode_boxes(expected, prior), box)


def test_round_trip_on_random_boxes_and_priors():
    generator = torch.Generator().manual_seed(0)
    xy = torch.rand(2, 500, 2, generator=generator) * 300
    boxes = torch.cat((xy[0], xy[0] + 1 + torch.rand(500, 2, generator=generator) * 200), -1)
    # size ratios up to 201 / 5 = 40, below the decoder's cap of 1000 / 16
    priors = torch.cat((xy[1], xy[1] + 5 + torch.rand(500, 2, generator=generator) * 200), -1)
    for variances in ((0.1, 0.2), (1.0, 1.0)):
        offsets = encode_boxes(boxes, priors, variances)
        torch.testing.assert_close(decode_boxes(offsets, priors, variances), boxes, atol=1e-3, rtol=1e-5)
        torch.testing.assert_close(encode_boxes(decode_boxes(offsets, priors, variances), priors, variances), offsets,
                                   atol=1e-3, rtol=1e-4)
    # batched offsets (B, A, 4) against shared priors (A, 4)
    offsets = torch.randn(3, 500, 4, generator=generator)
    torch.testing.assert_close(encode_boxes(decode_boxes(offsets, priors), priors), offsets, atol=1e-3, rtol=1e-4)


def test_same_as_torchvision_box_coder_with_weights_10_10_5_5():
    generator = torch.Generator().manual_seed(1)
    xy = torch.rand(2, 50, 2, generator=generator) * 100
    boxes = torch.cat((xy[0], xy[0] + 5 + torch.rand(50, 2, generator=generator) * 50), -1)
    priors = torch.cat((xy[1], xy[1] + 5 + torch.rand(50, 2, generator=generator) * 50), -1)
    reference = BoxCoder((10.0, 10.0, 5.0, 5.0)).encode_single(boxes, priors)
    torch.testing.assert_close(encode_boxes(boxes, priors), reference, atol=1e-4, rtol=1e-4)


def test_decoding_caps_huge_log_sizes():
    box = decode_boxes(torch.tensor([0.0, 0, 1e4, 1e4]), torch.tensor([0.0, 0, 16, 16]))
    assert torch.isfinite(box).all() and abs((box[2] - box[0]).item() - 1000.0) < 1e-3
