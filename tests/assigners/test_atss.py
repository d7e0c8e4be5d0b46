"""ATSS assigner on hand-computed cases, edge cases, and against a straightforward dense per-image reference."""

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torchvision.ops import box_iou

from detector.assigners.atss import ATSSAssigner
from detector.assigners.base import AssignerInput
from detector.models.priors import Priors, anchor_points, box_centres, multiscale_anchors, square_priors

FAR = torch.tensor([200.0, 200.0, 210.0, 210.0])  # a prediction overlapping nothing


def box_priors(boxes, level_sizes=None):
    """Priors of an anchor-based head with these prior boxes (one level unless level_sizes)."""
    level_sizes = (len(boxes),) if level_sizes is None else tuple(level_sizes)
    return Priors(box_centres(boxes), torch.ones(len(boxes), 1), boxes, level_sizes)


def point_priors(feature_sizes, strides):
    """Priors of an anchor-free head: anchor points in pixels, no boxes."""
    points, point_strides = anchor_points(feature_sizes, strides)
    sizes = tuple(h * w for h, w in feature_sizes)
    return Priors(points * point_strides, point_strides, None, sizes)


def call(assigner, priors, gt_boxes, gt_labels, gt_mask=None, pred_boxes=None):
    """Batched call: gt (B, M, 4), labels (B, M); predictions FAR unless given (B, A, 4)."""
    batch, anchors = gt_boxes.shape[0], len(priors.points)
    gt_mask = torch.ones(gt_labels.shape, dtype=torch.bool) if gt_mask is None else gt_mask
    pred_boxes = FAR.expand(batch, anchors, 4).clone() if pred_boxes is None else pred_boxes
    scores = torch.full((batch, anchors, assigner.num_classes), 0.5)
    return assigner(AssignerInput(scores, pred_boxes, priors, gt_labels, gt_boxes, gt_mask))


def assign_one(priors, gt, labels, num_classes=3, gt_mask=None, pred_boxes=None, **kwargs):
    """One image: gt (M, 4), labels (M,) -> the Assignment (batch dimension kept)."""
    gt_mask = None if gt_mask is None else gt_mask[None]
    pred_boxes = None if pred_boxes is None else pred_boxes[None]
    return call(ATSSAssigner(num_classes, **kwargs), priors, gt[None], labels[None], gt_mask, pred_boxes)


def positives(result, image=0):
    return result.foreground[image].nonzero().flatten().tolist()


# GT [0, 0, 10, 10] (area 100) and anchor boxes inside it with IoU = area / 100, plus one far away
GT10 = torch.tensor([[0.0, 0, 10, 10]])
NESTED = torch.tensor([
    [0.0, 0, 10, 10],  # IoU 1.0, centre (5, 5)
    [0, 0, 10, 9],  # 0.9, centre (5, 4.5)
    [0, 0, 10, 3],  # 0.3
    [0, 0, 10, 2],  # 0.2
    [0, 0, 10, 1],  # 0.1, centre (5, 0.5)
    [100, 100, 110, 110],  # 0.0, the farthest centre
])


def test_threshold_is_mean_plus_unbiased_std_of_the_candidates():
    # topk = 5 on one level of 6 anchors: the 5 nested boxes are the candidates (the far one is the farthest).
    # IoUs 1, .9, .3, .2, .1: mean .5, squared deviations sum .7, unbiased std sqrt(.7 / 4) = .4183, t = .9183:
    # only anchor 0 (the biased std sqrt(.7 / 5) = .3742 would give t = .8742 and also take anchor 1)
    result = assign_one(box_priors(NESTED), GT10, torch.tensor([2]), topk=5)
    assert positives(result) == [0]
    # topk = 6: the far anchor (IoU 0) joins; mean .41667, squared deviations .90833, std sqrt(.90833 / 5) = .42622,
    # t = .84289: anchors 0 and 1
    result = assign_one(box_priors(NESTED), GT10, torch.tensor([2]), topk=6)
    assert positives(result) == [0, 1]
    assert result.labels[0].tolist() == [2, 2, 0, 0, 0, 0] and result.gt_index[0].tolist() == [0] * 6
    assert (result.boxes[0, :2] == GT10).all()


def test_exactly_k_candidates_on_one_level_are_all_candidates():
    # a single level with exactly topk = 2 anchors: both are candidates. Two different IoUs u1 > u2 give
    # t = (u1 + u2) / 2 + (u1 - u2) / sqrt(2) > u1: no positive with the unbiased std (the biased std would make
    # u1 = mean + std exactly a positive)
    result = assign_one(box_priors(NESTED[:2]), GT10, torch.tensor([0]), topk=2)
    assert positives(result) == []
    # three anchors (k = 3 = level size) with IoUs 1, .5, .5: mean 2/3, std sqrt(1/12), t = .9553: anchor 0
    three = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 5], [0, 5, 10, 10]])
    result = assign_one(box_priors(three), GT10, torch.tensor([0]), topk=3)
    assert positives(result) == [0]
    # topk larger than the level: the level gives all its anchors (same result as k = 3)
    result = assign_one(box_priors(three), GT10, torch.tensor([0]), topk=9)
    assert positives(result) == [0]


def test_equal_ious_give_threshold_equal_to_them_and_every_inside_candidate_is_positive():
    anchors = torch.tensor([
        [0.0, 0, 10, 5],  # IoU .5, centre (5, 2.5) inside
        [0, 5, 10, 10],  # IoU .5, centre (5, 7.5) inside
        [5, 0, 10, 10],  # IoU .5, centre (7.5, 5) inside
        [0, 0, 20, 10],  # IoU 100 / 200 = .5, centre (10, 5) on the GT's right edge: not strictly inside
    ])
    result = assign_one(box_priors(anchors), GT10, torch.tensor([1]), topk=4)
    assert positives(result) == [0, 1, 2]
    assert result.scores[0].sum() == 0  # the default soft target: the predictions (FAR) overlap nothing


def test_anchor_claimed_by_two_gts_goes_to_the_higher_iou_then_the_lower_row():
    anchors = torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 60], [50, 0, 60, 10]])
    # row 0 overlaps anchor 0 with IoU 100 / 144, row 1 with IoU 1; candidates [x, 0, 0] have t = .91 x < x, so
    # anchor 0 is positive for both
    gt = torch.tensor([[0.0, 0, 12, 12], [0, 0, 10, 10]])
    for topk in (3, 1):  # also with topk = 1 on one level: a single candidate, std taken as 0, t = its IoU
        result = assign_one(box_priors(anchors), gt, torch.tensor([0, 2]), soft_target="one_hot", topk=topk)
        assert positives(result) == [0]
        assert result.gt_index[0, 0] == 1 and result.labels[0, 0] == 2
        assert result.boxes[0, 0].tolist() == gt[1].tolist()
        assert result.scores[0].tolist() == [[0, 0, 1], [0, 0, 0], [0, 0, 0]]
    # the same box twice: equal IoUs, the lower row wins
    twice = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10]])
    result = assign_one(box_priors(anchors), twice, torch.tensor([1, 2]), topk=3)
    assert positives(result) == [0] and result.gt_index[0, 0] == 0 and result.labels[0, 0] == 1


def test_gt_smaller_than_a_stride():
    # one 4x4 level at stride 8: anchor points at 4, 12, 20, 28 (index = row * 4 + col), square anchors of 40 px
    priors = point_priors([(4, 4)], (8,))
    # a 4x4 box between the points: no anchor centre inside, no positive
    result = assign_one(priors, torch.tensor([[6.0, 6, 10, 10]]), torch.tensor([0]))
    assert positives(result) == []
    # a 4x4 box around the point (12, 12): its 9 candidates (that point and the 8 around it) all contain the box,
    # IoU 16 / 1600 each, std 0: the only candidate whose centre is inside is positive
    result = assign_one(priors, torch.tensor([[10.0, 10, 14, 14]]), torch.tensor([1]))
    assert positives(result) == [5] and result.labels[0, 5] == 1


def test_zero_area_gt_gets_no_positive_and_no_nan():
    priors = point_priors([(4, 4)], (8,))
    gt = torch.tensor([[12.0, 12, 12, 12], [0, 0, 17, 17], [12.0, 4, 12, 30]])  # a point, a box, a segment
    result = assign_one(priors, gt, torch.tensor([0, 1, 2]))
    assert set(result.gt_index[0, result.foreground[0]].tolist()) == {1}
    assert torch.isfinite(result.scores).all() and torch.isfinite(result.boxes).all()
    result = assign_one(priors, gt[:1], torch.tensor([0]))  # only the zero-area GT
    assert positives(result) == [] and torch.isfinite(result.scores).all()


def test_no_gt_and_all_padded_rows_give_background():
    priors = point_priors([(4, 4)], (8,))
    assigner = ATSSAssigner(2)
    empty = call(assigner, priors, torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.long))
    assert empty.foreground.shape == (2, 16) and not empty.foreground.any()
    assert empty.scores.shape == (2, 16, 2) and empty.scores.eq(0).all() and empty.boxes.shape == (2, 16, 4)
    padded = call(assigner, priors, torch.tensor([[[0.0, 0, 17, 17]]]), torch.tensor([[-1]]),
                  torch.zeros(1, 1, dtype=torch.bool))
    assert not padded.foreground.any() and padded.scores.eq(0).all() and padded.labels.eq(0).all()


def test_padded_rows_are_ignored():
    priors = point_priors([(4, 4)], (8,))
    gt = torch.tensor([[[0.0, 0, 17, 17], [0, 0, 32, 32]], [[0, 0, 32, 32], [0, 0, 17, 17]]])
    labels = torch.tensor([[1, -1], [-1, 1]])
    mask = torch.tensor([[True, False], [False, True]])  # the padded rows look like boxes that would win
    result = call(ATSSAssigner(2), priors, gt, labels, mask)
    alone = assign_one(priors, gt[0, :1], labels[0, :1], num_classes=2)
    assert positives(alone) and positives(result, 0) == positives(alone) == positives(result, 1)
    assert result.gt_index[0, result.foreground[0]].eq(0).all() and result.gt_index[1, result.foreground[1]].eq(1).all()
    assert result.labels[result.foreground].eq(1).all()


def test_ssd_style_prior_boxes_with_several_boxes_per_location():
    # two levels of prior boxes with 3 shapes per location; k is per level, not per location
    feature_sizes, strides = [(4, 4), (2, 2)], (8, 16)
    boxes = multiscale_anchors(feature_sizes, strides, ((16.0,), (32.0,)), ((0.5, 1.0, 2.0), (0.5, 1.0, 2.0)))
    priors = box_priors(boxes, (48, 12))
    gt = torch.tensor([[2.0, 2, 22, 22]])  # centre (12, 12): the location of index 5 on the first level
    result = assign_one(priors, gt, torch.tensor([0]), topk=3)
    # candidates: the 3 boxes at (12, 12) on level 0 and the 3 boxes at (8, 8) on level 1. IoUs: level 0 .5266
    # (ratio .5), 256 / 400 = .64 (the square of side 16), .5266 (ratio 2); level 1 .3213, 400 / 1024 = .3906, .3213;
    # threshold .4544 + .1299 = .5843: the square box of side 16 at (12, 12) only
    assert positives(result) == [5 * 3 + 1]
    iou = box_iou(gt, boxes)[0]
    values = iou[torch.tensor([15, 16, 17, 48, 49, 50])]
    assert torch.isclose(values.mean() + values.std(), torch.tensor(0.5843), atol=1e-4)


def test_soft_targets_are_the_iou_of_the_prediction_or_one_hot():
    anchors = torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 60], [50, 0, 60, 10]])
    pred = FAR.repeat(3, 1)
    pred[0] = torch.tensor([0.0, 0, 10, 5])  # IoU .5 with the GT
    result = assign_one(box_priors(anchors), GT10, torch.tensor([1]), pred_boxes=pred, topk=3)
    assert positives(result) == [0]
    assert result.scores[0].tolist() == [[0, 0.5, 0], [0, 0, 0], [0, 0, 0]]
    pred[0] = torch.tensor([2.0, 3, 11, 13])  # a non-trivial overlap: torchvision's box_iou
    result = assign_one(box_priors(anchors), GT10, torch.tensor([1]), pred_boxes=pred, topk=3)
    assert result.scores[0, 0, 1] == box_iou(pred[:1], GT10)[0, 0] and result.scores[0].sum() == result.scores[0, 0, 1]
    result = assign_one(box_priors(anchors), GT10, torch.tensor([1]), pred_boxes=pred, topk=3, soft_target="one_hot")
    assert result.scores[0].tolist() == [[0, 1, 0], [0, 0, 0], [0, 0, 0]]
    with pytest.raises(ValueError, match="soft_target"):
        ATSSAssigner(3, soft_target="iou")


def test_anchor_scale_sets_the_square_anchors_of_anchor_points():
    priors = point_priors([(4, 4)], (8,))
    gt = torch.tensor([[0.0, 0, 24, 24]])  # centre (12, 12): candidates the 9 points around (12, 12)
    # with squares of side 24 (scale 3) the anchor at (12, 12) is the GT: IoU 1; its 4 neighbours 384 / 768 = .5, the
    # 4 corners 256 / 896 = .2857; t = .4603 + .2290 = .6893: only index 5
    result = assign_one(priors, gt, torch.tensor([0]), anchor_scale=3.0)
    assert positives(result) == [5]
    anchors = square_priors(priors.points, priors.strides, 3.0)
    values = box_iou(gt, anchors)[0, [0, 1, 2, 4, 5, 6, 8, 9, 10]]
    assert torch.isclose(values.mean() + values.std(), torch.tensor(0.6893), atol=1e-4)
    # with the default scale 5 (side 40) every candidate contains the GT: IoU 576 / 1600 = .36 for all 9, std 0,
    # and all 9 centres are inside
    result = assign_one(priors, gt, torch.tensor([0]))
    assert positives(result) == [0, 1, 2, 4, 5, 6, 8, 9, 10]


def test_config_instantiates_the_assigner():
    config = OmegaConf.load(Path(__file__).parents[2] / "configs" / "assigner" / "atss.yaml")
    config = OmegaConf.merge(OmegaConf.create({"data": {"num_classes": 7}}), {"assigner": config})
    assigner = instantiate(config.assigner)
    assert isinstance(assigner, ATSSAssigner) and assigner.num_classes == 7
    assert (assigner.topk, assigner.anchor_scale, assigner.eps, assigner.soft_target) == (9, 5.0, 1e-9, "prediction_iou")


# ----------------------------------------------------------------------------------------------------
# A dense per-image reference, written the straightforward way (mmdetection's formulation: IoU and distance
# matrices over all anchors, per-level top-k, mean + std threshold, -inf matrix for the conflicts)
# ----------------------------------------------------------------------------------------------------


def reference(anchor_boxes, centres, level_sizes, gt, labels, pred, num_classes, topk=9, eps=1e-9):
    """One image, real GT only (M, 4): (foreground, gt_index, labels, scores) with IoU(pred, GT) soft targets."""
    anchors, num_gt = len(anchor_boxes), len(gt)
    foreground = torch.zeros(anchors, dtype=torch.bool)
    gt_index = torch.zeros(anchors, dtype=torch.long)
    scores = torch.zeros(anchors, num_classes)
    if num_gt == 0:
        return foreground, gt_index, gt_index.clone(), scores
    overlaps = box_iou(gt, anchor_boxes)  # (M, A)
    gt_centre = (gt[:, :2] + gt[:, 2:]) / 2
    distances = (gt_centre[:, None, :] - centres[None, :, :]).pow(2).sum(-1).sqrt()  # (M, A)
    candidates, start = [], 0
    for size in level_sizes:
        k = min(topk, size)
        nearest = torch.sort(distances[:, start:start + size], dim=1, stable=True).indices[:, :k]
        candidates.append(nearest + start)
        start += size
    candidates = torch.cat(candidates, 1)  # (M, K)
    candidate_overlaps = overlaps.gather(1, candidates).double()
    std = candidate_overlaps.std(1) if candidates.shape[1] > 1 else torch.zeros(num_gt, dtype=torch.float64)
    threshold = candidate_overlaps.mean(1) + std
    is_pos = candidate_overlaps >= threshold[:, None]
    cx, cy = centres[candidates, 0], centres[candidates, 1]
    inside = torch.stack([cx - gt[:, None, 0], cy - gt[:, None, 1], gt[:, None, 2] - cx, gt[:, None, 3] - cy]).amin(0)
    is_pos &= inside > eps
    masked = torch.full((num_gt, anchors), -float("inf"))
    rows = torch.arange(num_gt)[:, None].expand_as(candidates)
    masked[rows[is_pos], candidates[is_pos]] = overlaps[rows[is_pos], candidates[is_pos]]
    best, argbest = masked.max(0)  # first maximum: the lowest GT row on ties
    foreground = best > -float("inf")
    gt_index = torch.where(foreground, argbest, 0)
    assigned_labels = torch.where(foreground, labels[gt_index], 0)
    for a in foreground.nonzero().flatten().tolist():
        scores[a, assigned_labels[a]] = box_iou(gt[gt_index[a]][None], pred[a][None])[0, 0]
    return foreground, gt_index, assigned_labels, scores


def random_gt(generator, batch, num_gt, extent, integer):
    xy = torch.rand(batch, num_gt, 2, generator=generator) * extent
    wh = 2 + torch.rand(batch, num_gt, 2, generator=generator) * extent / 2
    boxes = torch.cat([xy, xy + wh], -1)
    return boxes.round() if integer else boxes  # integer corners: GT centres on half pixels, many distance ties


@pytest.mark.parametrize("anchor_based", [False, True], ids=["points", "prior_boxes"])
def test_matches_dense_reference_on_random_cases(anchor_based):
    feature_sizes, strides = [(16, 16), (8, 8), (2, 2)], (8, 16, 64)  # the last level (4 anchors) has < topk
    if anchor_based:
        boxes = multiscale_anchors(feature_sizes, strides, ((32.0,), (64.0,), (256.0,)), ((0.5, 1.0, 2.0),) * 3)
        priors = box_priors(boxes, tuple(3 * h * w for h, w in feature_sizes))
        centres = box_centres(boxes)
    else:
        priors = point_priors(feature_sizes, strides)
        boxes, centres = square_priors(priors.points, priors.strides, 5.0), priors.points
    anchors, batch, num_gt, num_classes = len(boxes), 2, 12, 4
    compared = 0
    for seed in range(6):
        generator = torch.Generator().manual_seed(seed)
        gt = random_gt(generator, batch, num_gt, 128, integer=seed % 2 == 1)
        gt[0, 1] = gt[0, 0]  # a duplicated GT: IoU ties between rows
        gt[1, 2, 2:] = gt[1, 2, :2]  # a zero-area GT
        labels = torch.randint(0, num_classes, (batch, num_gt), generator=generator)
        mask = torch.rand(batch, num_gt, generator=generator) > 0.25
        mask[0, :2] = True
        labels[~mask] = -1
        pred = torch.cat([centres - 12, centres + 12], -1) + torch.randn(batch, anchors, 4, generator=generator) * 4
        for kwargs in ({}, {"chunk_elements": 2 * anchors}):  # one chunk, and chunks of 2 GT rows
            assigner = ATSSAssigner(num_classes, **kwargs)
            result = call(assigner, priors, gt, labels, mask, pred)
            for image in range(batch):
                rows = mask[image].nonzero().flatten()
                fg, index, lab, scores = reference(boxes, centres, priors.level_sizes, gt[image, rows],
                                                   labels[image, rows], pred[image], num_classes)
                assert torch.equal(result.foreground[image], fg)
                assert torch.equal(result.gt_index[image], torch.where(fg, rows[index], 0))
                assert torch.equal(result.labels[image], lab)
                assert torch.equal(result.scores[image], scores)
                assert torch.equal(result.boxes[image][fg], gt[image, rows[index]][fg])
                compared += int(fg.sum())
    assert compared > 300


def test_a_thousand_gt_in_one_640_px_image():
    """1000 GT on the 8400 anchor points of a 640 px image (strides 8, 16, 32), against the dense reference."""
    generator = torch.Generator().manual_seed(3)
    priors = point_priors([(80, 80), (40, 40), (20, 20)], (8, 16, 32))
    anchors, num_gt, num_classes = len(priors.points), 1000, 80
    xy = torch.rand(1, num_gt, 2, generator=generator) * 600
    gt = torch.cat([xy, xy + 4 + torch.rand(1, num_gt, 2, generator=generator) * 60], -1)
    labels = torch.randint(0, num_classes, (1, num_gt), generator=generator)
    half = 4 + torch.rand(1, anchors, 2, generator=generator) * 20
    pred = torch.cat([priors.points - half, priors.points + half], -1)
    result = call(ATSSAssigner(num_classes), priors, gt, labels, pred_boxes=pred)  # time and memory: benchmark.py
    fg = result.foreground[0]
    assert 1000 < fg.sum() < 27 * num_gt
    # every positive's centre lies inside its GT, and its soft target is the IoU of its prediction
    points, assigned = priors.points[fg], gt[0, result.gt_index[0, fg]]
    assert ((points > assigned[:, :2]) & (points < assigned[:, 2:])).all()
    assert result.scores[0, fg].max(-1).values.gt(0).all() and result.scores[0, ~fg].eq(0).all()
    boxes = square_priors(priors.points, priors.strides, 5.0)
    ref_fg, ref_index, ref_labels, ref_scores = reference(boxes, priors.points, priors.level_sizes, gt[0], labels[0],
                                                          pred[0], num_classes)
    assert torch.equal(fg, ref_fg) and torch.equal(result.gt_index[0], ref_index)
    assert torch.equal(result.labels[0], ref_labels) and torch.equal(result.scores[0], ref_scores)


def test_conflicts_differ_from_yolov6s_rule():
    """docs/assigners.md: an anchor positive for several GTs goes to the largest IoU among them; YOLOv6's rule (the
    largest IoU over all GTs of the image) gives another GT for 61 of 1532 such anchors on these 200 images."""
    priors = point_priors([(16, 16), (8, 8), (4, 4)], (8, 16, 32))
    assigner = ATSSAssigner(4)
    boxes, centres = assigner.anchor_boxes(priors)
    contested = differ = 0
    for seed in range(200):
        torch.manual_seed(seed)
        xy = torch.rand(12, 2) * 100
        gt = torch.cat([xy, xy + 4 + torch.rand(12, 2) * 60], -1).clamp(max=128)
        row, anchor, iou = assigner._positives(gt, boxes, centres, priors.level_sizes)
        positive_iou = torch.full((12, len(boxes)), -1.0)
        positive_iou[row, anchor] = iou
        claimed = positive_iou.ge(0).sum(0) > 1
        ours = positive_iou.argmax(0)[claimed]  # the first maximum: ties go to the lower row
        yolov6 = box_iou(gt, boxes).argmax(0)[claimed]
        contested, differ = contested + int(claimed.sum()), differ + int((ours != yolov6).sum())
    assert (differ, contested) == (61, 1532)
