import math

import torch

from detector.models.coders import boxes_to_distances, decode_dfl, dfl_expectation, distances_to_boxes


def test_distance_round_trip():
    torch.manual_seed(0)
    points = torch.rand(50, 2) * 20
    distances = torch.rand(50, 4) * 10
    boxes = distances_to_boxes(points, distances)
    torch.testing.assert_close(boxes_to_distances(points, boxes), distances)


def test_distances_hand_case_and_clamp():
    point = torch.tensor([[5.0, 5.0]])
    box = torch.tensor([[2.0, 4.0, 9.0, 30.0]])
    assert boxes_to_distances(point, box).tolist() == [[3.0, 1.0, 4.0, 25.0]]
    # clamped to [0, reg_max - 1 - 0.01] the way the DFL targets are
    torch.testing.assert_close(boxes_to_distances(point, box, 14.99), torch.tensor([[3.0, 1.0, 4.0, 14.99]]))
    # a point outside the box gives a negative distance, clamped to 0
    assert boxes_to_distances(torch.tensor([[1.0, 5.0]]), box, 15)[0, 0].item() == 0.0


def test_dfl_expectation_of_one_hot_and_two_bin_distributions():
    reg_max = 16
    logits = torch.full((1, 4 * reg_max), -1e4)
    logits[0, 3] = 0  # side 0: all mass on bin 3
    logits[0, reg_max + 7] = logits[0, reg_max + 8] = 0  # side 1: half on 7, half on 8 -> 7.5
    logits[0, 2 * reg_max : 3 * reg_max] = 0  # side 2: uniform -> 7.5
    logits[0, 3 * reg_max + 15] = math.log(3.0)  # side 3: 3/4 on bin 15, 1/4 on bin 0
    logits[0, 3 * reg_max + 0] = 0
    torch.testing.assert_close(dfl_expectation(logits, reg_max), torch.tensor([[3.0, 7.5, 7.5, 11.25]]))


def test_decode_dfl_round_trips_integer_distances():
    reg_max = 16
    points = torch.tensor([[4.5, 6.5], [10.5, 0.5]])
    distances = torch.tensor([[1, 2, 3, 4], [0, 15, 7, 9]])
    logits = torch.nn.functional.one_hot(distances, reg_max).float().mul(100).flatten(1).unsqueeze(0)
    boxes = decode_dfl(points, logits, reg_max)
    torch.testing.assert_close(boxes[0], distances_to_boxes(points, distances.float()))
