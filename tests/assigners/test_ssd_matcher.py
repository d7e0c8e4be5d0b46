"""SSD matcher: the two matching principles on hand-built cases, edge cases, and agreement with
torchvision's SSDMatcher on random cases."""

import torch
from torchvision.models.detection._utils import SSDMatcher as TorchvisionSSDMatcher
from torchvision.ops import box_iou

from detector.assigners.base import AssignerInput
from detector.assigners.ssd_matcher import SSDMatcher
from detector.models.priors import Priors, anchor_points, box_centres


def prior_boxes(boxes):
    """Priors of an anchor-based head with these prior boxes (one level); the matcher reads only the boxes."""
    return Priors(box_centres(boxes), torch.ones(len(boxes), 1), boxes, (len(boxes),))


def call(matcher, gt_labels, gt_boxes, gt_mask, priors):
    """The matcher on padded GT (B, M); the predictions are not used (empty)."""
    batch, anchors = gt_boxes.shape[0], len(priors.points)
    return matcher(AssignerInput(torch.zeros(batch, anchors, matcher.num_classes), torch.zeros(batch, anchors, 4),
                                 priors, gt_labels, gt_boxes, gt_mask))


def match(priors, gt_boxes, gt_labels, gt_mask=None, num_classes=3, threshold=0.5):
    """One image: priors (A, 4), gt (M, 4) -> the Assignment of that image (batch dimension kept)."""
    gt_mask = torch.ones(gt_labels.shape, dtype=torch.bool) if gt_mask is None else gt_mask
    matcher = SSDMatcher(num_classes, iou_threshold=threshold)
    return call(matcher, gt_labels[None], gt_boxes[None], gt_mask[None], prior_boxes(priors))


def test_gt_below_threshold_still_gets_its_best_prior():
    priors = torch.tensor([[0.0, 0, 10, 10], [10, 0, 20, 10], [0, 10, 10, 20]])
    gt = torch.tensor([[0.0, 0, 4, 4]])  # IoU 0.16 with prior 0, 0 with the others
    result = match(priors, gt, torch.tensor([2]))
    assert result.foreground[0].tolist() == [True, False, False]
    assert result.labels[0].tolist() == [2, 0, 0] and result.gt_index[0, 0] == 0
    assert result.boxes[0, 0].tolist() == gt[0].tolist()
    assert result.scores[0].tolist() == [[0, 0, 1], [0, 0, 0], [0, 0, 0]]


def test_prior_above_threshold_for_two_gts_goes_to_the_higher_iou():
    priors = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 8], [0, 0, 10, 6]])
    gt = torch.tensor([[0.0, 0, 10, 6], [0, 0, 10, 8]])  # B (row 0), A (row 1)
    # prior 0: IoU 0.6 with B, 0.8 with A -> A; prior 1 is A's best (IoU 1); prior 2 is B's best (IoU 1)
    result = match(priors, gt, torch.tensor([0, 1]))
    assert result.foreground[0].all()
    assert result.gt_index[0].tolist() == [1, 1, 0] and result.labels[0].tolist() == [1, 1, 0]


def test_principle_one_overrides_principle_two():
    priors = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 9]])
    big, small = torch.tensor([0.0, 0, 10, 9]), torch.tensor([6.0, 6, 10, 10])
    # prior 0: IoU 0.9 with `big` (principle 2) but it is the best prior of `small` (IoU 0.16 vs 0.128)
    result = match(priors, torch.stack([big, small]), torch.tensor([1, 2]))
    assert result.foreground[0].tolist() == [True, True]
    assert result.gt_index[0].tolist() == [1, 0] and result.labels[0].tolist() == [2, 1]


def test_two_gts_with_the_same_best_prior_give_it_to_the_larger_iou_whatever_their_order():
    priors = torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 60]])
    small, larger = torch.tensor([0.0, 0, 5, 5]), torch.tensor([0.0, 0, 8, 8])  # IoU 0.25 and 0.64 with prior 0
    for gt, labels, winner in ((torch.stack([small, larger]), torch.tensor([0, 1]), 1),
                               (torch.stack([larger, small]), torch.tensor([1, 0]), 0)):
        result = match(priors, gt, labels)
        assert result.foreground[0].tolist() == [True, False]
        assert result.gt_index[0, 0] == winner and result.labels[0, 0] == 1


def test_zero_gt_and_all_padded_rows_give_background():
    priors = torch.tensor([[0.0, 0, 10, 10], [10, 0, 20, 10]])
    matcher = SSDMatcher(2)
    empty = call(matcher, torch.zeros(2, 0, dtype=torch.long), torch.zeros(2, 0, 4),
                 torch.zeros(2, 0, dtype=torch.bool), prior_boxes(priors))
    assert empty.foreground.shape == (2, 2) and not empty.foreground.any() and empty.scores.shape == (2, 2, 2)
    assert empty.scores.eq(0).all()
    padded = call(matcher, torch.full((1, 2), -1), priors[None].clone(), torch.zeros(1, 2, dtype=torch.bool),
                  prior_boxes(priors))
    assert not padded.foreground.any() and padded.scores.eq(0).all()


def test_padded_rows_never_match_even_when_they_overlap_a_prior():
    priors = torch.tensor([[0.0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]])
    gt = torch.tensor([[20.0, 0, 30, 10], [0, 0, 10, 10], [0, 0, 0, 0]])  # row 1 and 2 are padding
    result = match(priors, gt, torch.tensor([2, -1, -1]), gt_mask=torch.tensor([True, False, False]))
    assert result.foreground[0].tolist() == [False, True, False]
    assert result.labels[0].tolist() == [0, 2, 0] and result.gt_index[0].tolist() == [0, 0, 0]


def test_batched_images_are_matched_independently():
    priors = torch.tensor([[0.0, 0, 10, 10], [20, 0, 30, 10]])
    gt_boxes = torch.tensor([[[0.0, 0, 10, 10], [0, 0, 0, 0]], [[20.0, 0, 30, 10], [0, 0, 10, 9]]])
    gt_labels, gt_mask = torch.tensor([[1, -1], [0, 2]]), torch.tensor([[True, False], [True, True]])
    result = call(SSDMatcher(3), gt_labels, gt_boxes, gt_mask, prior_boxes(priors))
    assert result.foreground.tolist() == [[True, False], [True, True]]
    assert result.labels.tolist() == [[1, 0], [2, 0]] and result.gt_index.tolist() == [[0, 0], [1, 0]]


def test_anchor_points_get_square_priors_of_the_configured_scale():
    # 4 x 4 points at stride 8 (pixels 4, 12, 20, 28); scale 2 -> squares of side 16
    points, strides = anchor_points([(4, 4)], (8,))
    gt = torch.tensor([[[4.0, 4, 20, 20]]])  # exactly the square of the point (12, 12) = index 5
    matcher = SSDMatcher(1, point_prior_scale=2.0)
    priors = Priors(points * strides, strides, None, (len(points),))  # an anchor-free head: no prior boxes
    result = call(matcher, torch.zeros(1, 1, dtype=torch.long), gt, torch.ones(1, 1, dtype=torch.bool), priors)
    # its neighbours overlap by 8 x 16: IoU 128 / 384 < 0.5
    assert result.foreground[0].nonzero().flatten().tolist() == [5]


def random_boxes(generator, count, size=100.0):
    xy = torch.rand(count, 2, generator=generator) * size
    wh = torch.rand(count, 2, generator=generator) * size / 3 + 2
    return torch.cat((xy, xy + wh), -1)


def test_agrees_with_torchvision_ssd_matcher_on_random_cases():
    generator = torch.Generator().manual_seed(0)
    compared = 0
    for _ in range(50):
        priors = random_boxes(generator, 300)
        gt = random_boxes(generator, int(torch.randint(1, 8, (1,), generator=generator)))
        iou = box_iou(gt, priors)
        best_prior = iou.argmax(1)
        if len(best_prior.unique()) < len(best_prior) or iou.amax(1).eq(0).any():
            continue  # two GTs share a best prior: torchvision gives it to the last row, ours to the larger IoU
        reference = TorchvisionSSDMatcher(0.5)(iou)  # (A,) GT index, -1 below threshold
        result = match(priors, gt, torch.zeros(len(gt), dtype=torch.long))
        assert result.foreground[0].tolist() == (reference >= 0).tolist()
        assert result.gt_index[0][reference >= 0].tolist() == reference[reference >= 0].tolist()
        compared += 1
    assert compared >= 30
