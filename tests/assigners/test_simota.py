"""SimOTA assigner on hand-built cases, and against a straightforward dense per-image reference."""

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou

from detector.assigners.base import AssignerInput
from detector.assigners.simota import SimOTAAssigner, class_cost, negative_log_sum
from detector.models.priors import Priors, anchor_points

# one 8x8 level at stride 8: anchor points in pixels at 4, 12, ..., 60 (index = row * 8 + col)
POINTS, STRIDES = anchor_points([(8, 8)], (8,))
POINTS = POINTS * STRIDES
FAR = torch.tensor([200.0, 200.0, 210.0, 210.0])  # a prediction overlapping nothing


def anchor(x: float, y: float) -> int:
    """Index of the anchor point at pixel (x, y) of the 8x8 grid."""
    return int((y - 4) // 8 * 8 + (x - 4) // 8)


def inputs(scores, pred_boxes, points, strides, gt_labels, gt_boxes, gt_mask):
    priors = Priors(points, strides, None, (len(points),))
    return AssignerInput(scores, pred_boxes, priors, gt_labels, gt_boxes, gt_mask)


def assign(pred_boxes, gt_boxes, gt_labels, gt_mask=None, scores=None, num_classes=3, **kwargs):
    """One image on the 8x8 grid; scores default to 0.5 everywhere."""
    if scores is None:
        scores = torch.full((len(POINTS), num_classes), 0.5)
    gt_mask = torch.ones(gt_labels.shape, dtype=torch.bool) if gt_mask is None else gt_mask
    assigner = SimOTAAssigner(num_classes, **kwargs)
    return assigner(inputs(scores[None], pred_boxes[None], POINTS, STRIDES, gt_labels[None], gt_boxes[None], gt_mask[None]))


def positives(result) -> list[int]:
    return result.foreground[0].nonzero().flatten().tolist()


def test_dynamic_k_from_the_top_ious():
    # 5x5 anchors inside; with radius 1.5 (|d| < 12 px from (20, 20)) the 3x3 around the centre are in box and centre
    gt = torch.tensor([[0.0, 0.0, 40.0, 40.0]])
    pred = FAR.repeat(64, 1)
    a9, a8, a7 = anchor(20, 20), anchor(12, 12), anchor(28, 28)
    pred[a9] = torch.tensor([0.0, 0.0, 40.0, 36.0])  # IoU 0.9
    pred[a8] = torch.tensor([0.0, 0.0, 40.0, 32.0])  # IoU 0.8
    pred[a7] = torch.tensor([0.0, 0.0, 40.0, 28.0])  # IoU 0.7
    # k = floor(0.9 + 0.8 + 0.7) = 2: the two lowest costs are the two best IoUs (equal class costs)
    result = assign(pred, gt, torch.tensor([2]), center_radius=1.5)
    assert positives(result) == sorted([a9, a8])
    assert result.gt_index[0, [a9, a8]].tolist() == [0, 0] and result.labels[0, [a9, a8]].tolist() == [2, 2]
    assert (result.boxes[0, [a9, a8]] == gt).all()
    # soft targets: IoU x one-hot(class)
    torch.testing.assert_close(result.scores[0, [a9, a8]], torch.tensor([[0.0, 0.0, 0.9], [0.0, 0.0, 0.8]]))
    assert result.scores[0, ~result.foreground[0]].eq(0).all()
    # only the top 2 IoUs count: k = floor(1.7) = 1
    assert positives(assign(pred, gt, torch.tensor([2]), center_radius=1.5, candidate_topk=2)) == [a9]
    # a GT overlapping nothing still gets k = 1
    assert len(positives(assign(FAR.repeat(64, 1), gt, torch.tensor([2]), center_radius=1.5))) == 1


def test_gt_smaller_than_a_stride_gets_positives_from_its_centre_region():
    gt = torch.tensor([[13.0, 13.0, 19.0, 19.0]])  # contains no anchor point; centre (16, 16)
    pred = FAR.repeat(64, 1)
    scores = torch.full((64, 3), 0.5)
    best = anchor(20, 12)
    scores[best, 1] = 0.9  # the most confident anchor for the GT's class: lowest class cost
    for radius, region in ((1.0, {anchor(x, y) for x in (12, 20) for y in (12, 20)}), (2.5, None)):
        result = assign(pred, gt, torch.tensor([1]), scores=scores, center_radius=radius)
        assert positives(result) == [best] and result.labels[0, best] == 1
        assert result.scores[0, best].tolist() == [0.0, 0.0, 0.0]  # IoU 0
        if region is not None:  # |x - 16| < 8 and |y - 16| < 8: the four anchors around the centre
            assert best in region
    # with a prediction on the GT, that anchor wins and its target is its IoU
    pred[anchor(12, 20)] = torch.tensor([13.0, 13.0, 19.0, 19.0])
    result = assign(pred, gt, torch.tensor([1]), scores=scores, center_radius=1.0)
    assert positives(result) == [anchor(12, 20)] and result.scores[0, anchor(12, 20), 1] == 1.0


def test_only_in_centre_candidates_and_no_candidates():
    # the centre region reaches anchors outside the box: they are candidates (penalised, but the only ones)
    gt = torch.tensor([[30.0, 30.0, 34.0, 34.0]])  # no anchor inside; centre (32, 32)
    pred = FAR.repeat(64, 1)
    pred[anchor(36, 36)] = torch.tensor([29.0, 29.0, 35.0, 35.0])
    result = assign(pred, gt, torch.tensor([0]), center_radius=0.6)  # |d| < 4.8: the four anchors at 28, 36
    assert positives(result) == [anchor(36, 36)]
    # a GT far outside the image has no candidate at all: background
    result = assign(pred, torch.tensor([[500.0, 500.0, 520.0, 520.0]]), torch.tensor([0]))
    assert not result.foreground.any() and result.scores.eq(0).all()


def test_penalty_prefers_anchors_in_box_and_in_centre():
    gt = torch.tensor([[0.0, 0.0, 40.0, 40.0]])
    pred = FAR.repeat(64, 1)
    corner, centre = anchor(4, 4), anchor(20, 20)  # both in the box; only `centre` is within 8 px of (20, 20)
    pred[corner] = gt[0]  # IoU 1: the lower cost without the penalty
    pred[centre] = torch.tensor([0.0, 0.0, 40.0, 20.0])  # IoU 0.5
    result = assign(pred, gt, torch.tensor([0]), center_radius=1.0)  # k = floor(1.5) = 1
    assert positives(result) == [centre]
    # with a radius covering the corner too, the better prediction wins
    assert positives(assign(pred, gt, torch.tensor([0]), center_radius=3.0)) == [corner]


def test_shared_anchor_goes_to_the_lowest_cost_gt():
    """Three GTs on the same box (so the same geometry and IoUs), classes 0, 1, 2; candidate_topk=1 gives k = 1.
    The class cost of GT y at anchor a is sum_c -log(1 - p_c) - logit(p_y): the most probable class is cheapest."""
    box = torch.tensor([0.0, 0.0, 40.0, 40.0])
    gts, labels = box.repeat(3, 1), torch.tensor([0, 1, 2])
    x, y = anchor(20, 20), anchor(12, 12)
    pred = FAR.repeat(64, 1)
    pred[x] = pred[y] = box  # IoU 1 at x and y, 0 elsewhere; both in box and in centre (|d| < 12)

    def run(p_x):
        scores = torch.full((64, 3), 0.5)
        scores[x] = torch.tensor(p_x)
        scores[y] = torch.tensor([0.01, 0.01, 0.99])  # GT 2's clear favourite; costly for GTs 0 and 1
        return assign(pred, gts, labels, scores=scores, center_radius=1.5, candidate_topk=1)

    # GTs 0 and 1 both select x, GT 2 selects y; x goes to the cheaper selector, GT 0
    result = run([0.6, 0.5, 0.01])
    assert positives(result) == sorted([x, y])
    assert result.gt_index[0, x] == 0 and result.labels[0, x] == 0 and result.scores[0, x].tolist() == [1.0, 0.0, 0.0]
    assert result.gt_index[0, y] == 2
    # equal costs: the lower GT index
    assert run([0.5, 0.5, 0.01]).gt_index[0, x] == 0
    # YOLOX's rule: GTs 0 and 1 select x, GT 2 selects y (cost 0.03 < 1.90 at x) but has the lowest cost at x
    # among all GTs (1.90 < 2.30), so x goes to GT 2 although GT 2 did not select it
    result = run([0.5, 0.5, 0.6])
    assert positives(result) == sorted([x, y])
    assert result.gt_index[0, [x, y]].tolist() == [2, 2] and result.labels[0, [x, y]].tolist() == [2, 2]
    assert result.scores[0, x].tolist() == [0.0, 0.0, 1.0]
    # an anchor selected by a single GT stays with it, even where another GT has a lower cost:
    # at x GT 1 costs 1.97 < GT 0's 2.41, but GT 1 selects y (1.44) and GT 0 selects x (y costs it 4.38)
    scores = torch.full((64, 3), 0.5)
    scores[x], scores[y] = torch.tensor([0.3, 0.4, 0.5]), torch.tensor([0.5, 0.95, 0.5])
    result = assign(pred, gts[:2], labels[:2], scores=scores, center_radius=1.5, candidate_topk=1)
    assert positives(result) == sorted([x, y]) and result.gt_index[0, [x, y]].tolist() == [0, 1]


def test_no_gt_and_all_padding_give_background():
    pred = FAR.repeat(64, 1)
    result = assign(pred, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    assert not result.foreground.any() and result.scores.eq(0).all()
    assert result.boxes.shape == (1, 64, 4) and result.scores.shape == (1, 64, 3)
    gt = torch.tensor([[0.0, 0.0, 40.0, 40.0]])
    result = assign(pred, gt, torch.tensor([0]), gt_mask=torch.tensor([False]))
    assert not result.foreground.any() and result.scores.eq(0).all()


def test_padded_rows_are_ignored():
    gt = torch.tensor([[0.0, 0.0, 40.0, 40.0], [0.0, 0.0, 64.0, 64.0], [40.0, 40.0, 64.0, 64.0]])
    pred = gt[1].repeat(64, 1)  # overlaps the padded row perfectly
    pred[anchor(20, 20)] = gt[0]
    pred[anchor(52, 52)] = gt[2]
    mask = torch.tensor([True, False, True])  # the middle row is padding, even though it looks like a box
    result = assign(pred, gt, torch.tensor([0, 1, 2]), gt_mask=mask, center_radius=1.0)
    assert result.foreground.any() and not (result.gt_index[0] == 1).any()
    assert set(result.labels[0, result.foreground[0]].tolist()) == {0, 2}
    # the padded row contributes no candidate: nothing outside the real GTs' boxes and centre regions is positive
    fg = result.foreground[0].nonzero().flatten()
    xy = POINTS[fg]
    assert (((xy > 0) & (xy < 40)).all(1) | ((xy > 40) & (xy < 64)).all(1)).all()
    expected = assign(pred, gt[[0, 2]], torch.tensor([0, 2]), center_radius=1.0)
    assert torch.equal(result.foreground, expected.foreground)
    assert torch.equal(result.gt_index[result.foreground], torch.tensor([0, 2])[expected.gt_index[expected.foreground]])


def test_zero_area_gt_is_finite():
    gt = torch.tensor([[20.0, 20.0, 20.0, 20.0], [10.0, 30.0, 10.0, 50.0]])  # a point on an anchor, and a segment
    pred = FAR.repeat(64, 1)
    pred[anchor(20, 20)] = gt[0]  # zero-area prediction on the zero-area GT: union 0
    pred[anchor(12, 36)] = torch.tensor([12.0, 36.0, 12.0, 36.0])
    scores = torch.full((64, 3), 0.5)
    scores[anchor(20, 20), 0] = scores[anchor(12, 36), 1] = 0.9  # (all IoUs are 0: the class cost decides)
    result = assign(pred, gt, torch.tensor([0, 1]), scores=scores, center_radius=1.0)
    assert positives(result) == [anchor(20, 20), anchor(12, 36)]  # k = 1 each, from the centre regions
    assert result.gt_index[0, [anchor(20, 20), anchor(12, 36)]].tolist() == [0, 1]
    assert torch.isfinite(result.scores).all() and result.scores.eq(0).all()
    assert torch.isfinite(result.boxes).all()


def test_class_cost_shortcut_equals_binary_cross_entropy():
    torch.manual_seed(0)
    C = 7
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-4)):
        p = torch.rand(500, C, dtype=dtype)
        p[:50] = p[:50] ** 20  # near 0
        p[50:100] = 1 - p[50:100] ** 20  # near 1
        p[100, 3], p[101, 0], p[102] = 0.0, 1.0, 1.0  # the -100 clamps
        p[103], p[104, 2] = 0.0, 1e-45 if dtype == torch.float32 else 1e-320
        y = torch.randint(0, C, (500,))
        y[100], y[101], y[102], y[103], y[104] = 3, 0, 5, 1, 2
        expected = F.binary_cross_entropy(p, F.one_hot(y, C).to(dtype), reduction="none").sum(-1)
        actual = class_cost(negative_log_sum(p), p.gather(1, y[:, None]).squeeze(1))
        torch.testing.assert_close(actual, expected, rtol=tol, atol=tol)


# ----------------------------------------------------------------------------------------------------
# Against a dense reference
# ----------------------------------------------------------------------------------------------------


def dense_reference(scores, pred, points, strides, labels, boxes, mask, center_radius=2.5, candidate_topk=10,
                    iou_weight=3.0, cls_weight=1.0, stats=None):
    """SimOTA one image at a time on the dense (candidates x GT) matrices, as YOLOX 0.1-0.2 / mmdetection's
    SimOTAAssigner compute it (class probabilities p used directly in the BCE, no sqrt(cls * obj)).
    Returns (foreground, gt_index, target scores); `stats` (a dict) receives the number of shared anchors and of
    those won by a GT that did not select them."""
    B, A, C = scores.shape
    foreground = torch.zeros(B, A, dtype=torch.bool)
    gt_index = torch.zeros(B, A, dtype=torch.long)
    target = torch.zeros(B, A, C, dtype=scores.dtype)
    x, y = points[:, :1], points[:, 1:]  # (A, 1): broadcast against the GTs
    for i in range(B):
        real = mask[i].nonzero().flatten()
        gts, ys = boxes[i, real], labels[i, real]
        G = len(real)
        if G == 0:
            continue
        x1, y1, x2, y2 = gts.unbind(-1)
        in_box = torch.stack([x - x1, y - y1, x2 - x, y2 - y], -1).amin(-1) > 0  # (A, G)
        cx, cy, r = (x1 + x2) / 2, (y1 + y2) / 2, center_radius * strides
        in_centre = torch.stack([x - (cx - r), y - (cy - r), (cx + r) - x, (cy + r) - y], -1).amin(-1) > 0
        valid = (in_box | in_centre).any(1)
        V = int(valid.sum())
        if V == 0:
            continue
        ious = box_iou(pred[i, valid], gts)  # (V, G)
        p = scores[i, valid].unsqueeze(1).expand(V, G, C)
        onehot = F.one_hot(ys, C).to(scores.dtype).unsqueeze(0).expand(V, G, C)
        cls = F.binary_cross_entropy(p, onehot, reduction="none").sum(-1)
        cost = cls_weight * cls + iou_weight * -torch.log(ious + 1e-8) + 1e5 * (~(in_box & in_centre)[valid])
        # dynamic k: sum of the best IoUs of each GT, truncated, at least 1
        ks = ious.topk(min(candidate_topk, V), dim=0).values.sum(0).int().clamp(min=1)
        matching = torch.zeros(V, G, dtype=torch.long)
        for j in range(G):
            matching[cost[:, j].topk(int(ks[j]), largest=False).indices, j] = 1
        shared = (matching.sum(1) > 1).nonzero().flatten()
        if len(shared):
            winner = cost[shared].argmin(1)  # over every GT of the image
            if stats is not None:
                stats["shared"] = stats.get("shared", 0) + len(shared)
                stats["won_unselected"] = stats.get("won_unselected", 0) + int((matching[shared, winner] == 0).sum())
            matching[shared] = 0
            matching[shared, winner] = 1
        pos = matching.sum(1) > 0
        anchors = valid.nonzero().flatten()[pos]
        matched = matching[pos].argmax(1)
        foreground[i, anchors] = True
        gt_index[i, anchors] = real[matched]
        target[i, anchors, ys[matched]] = (matching * ious).sum(1)[pos]
    return foreground, gt_index, target


def random_boxes(*shape: int, extent: float, max_size: float, min_size: float = 1.0) -> torch.Tensor:
    xy = torch.rand(*shape, 2) * extent
    return torch.cat([xy, xy + min_size + torch.rand(*shape, 2) * max_size], -1)


def random_case(seed: int, B=2, M=12, C=4, dtype=torch.float64):
    torch.manual_seed(seed)
    points, strides = anchor_points([(16, 16), (8, 8), (4, 4)], (8, 16, 32), dtype=dtype)
    points = points * strides
    boxes = random_boxes(B, M, extent=110, max_size=60).to(dtype)
    boxes[0, 0] = torch.tensor([50.0, 50.0, 53.0, 53.0])  # smaller than every stride
    labels = torch.randint(0, C, (B, M))
    mask = torch.rand(B, M) > 0.25
    mask[1, M // 2:] = False  # padding at the end, as the collate function makes it
    # predictions: around their own anchor point, some of them on a GT (so that IoUs are high)
    half = (2 + torch.rand(B, len(points), 2) * 30).to(dtype)
    pred = torch.cat([points - half, points + half], -1)
    on_gt = torch.randint(0, len(points), (B, 60))
    pred[torch.arange(B)[:, None], on_gt] = boxes[torch.arange(B)[:, None], torch.randint(0, M, (B, 60))] + (torch.rand(B, 60, 4, dtype=dtype) - 0.5) * 0.8
    scores = torch.rand(B, len(points), C, dtype=dtype)
    return scores, pred, points, strides, labels, boxes, mask


def test_matches_dense_reference_on_random_images():
    stats = {}
    for seed in range(5):
        scores, pred, points, strides, labels, boxes, mask = random_case(seed)
        fg, idx, target = dense_reference(scores, pred, points, strides, labels, boxes, mask, stats=stats)
        assert fg.sum() > 20
        for chunk in (1 << 24, 1000, 1):  # one chunk; chunks of 2 GT rows (336 anchors); one row per chunk
            result = SimOTAAssigner(scores.shape[-1], chunk_elements=chunk)(
                inputs(scores, pred, points, strides, labels, boxes, mask))
            assert torch.equal(result.foreground, fg), (seed, chunk)
            assert torch.equal(result.gt_index[fg], idx[fg]), (seed, chunk)
            assert torch.equal(result.labels[fg], labels.gather(1, idx)[fg])
            assert torch.equal(result.boxes[fg], boxes.gather(1, idx[..., None].expand(-1, -1, 4))[fg])
            torch.testing.assert_close(result.scores, target)
    assert stats["shared"] > 0


def test_other_settings_and_float32_match_the_reference():
    settings = dict(center_radius=1.5, candidate_topk=5, iou_weight=2.0, cls_weight=0.5)
    scores, pred, points, strides, labels, boxes, mask = random_case(7, M=20)
    stats = {}
    fg, idx, target = dense_reference(scores, pred, points, strides, labels, boxes, mask, **settings, stats=stats)
    assert stats["won_unselected"] > 0  # this case exercises YOLOX's rule for shared anchors
    result = SimOTAAssigner(scores.shape[-1], **settings)(inputs(scores, pred, points, strides, labels, boxes, mask))
    assert torch.equal(result.foreground, fg) and torch.equal(result.gt_index[fg], idx[fg])
    torch.testing.assert_close(result.scores, target)
    # float32 inputs: float32 targets; the assignment agrees on all but near-ties of the (1e5-offset) costs
    case = [t.float() if t.is_floating_point() else t for t in (scores, pred, points, strides, labels, boxes, mask)]
    result = SimOTAAssigner(scores.shape[-1], **settings)(inputs(*case))
    assert result.scores.dtype == torch.float32 and result.boxes.dtype == torch.float32
    assert (result.foreground != fg).sum() <= 2


@pytest.mark.slow
def test_a_thousand_gt_in_one_640_image():
    torch.manual_seed(3)
    points, strides = anchor_points([(80, 80), (40, 40), (20, 20)], (8, 16, 32))
    points = points * strides
    A, M, C = len(points), 1000, 80
    assert A == 8400
    boxes = random_boxes(1, M, extent=600, max_size=60)
    half = 2 + torch.rand(1, A, 2) * 20
    pred = torch.cat([points - half, points + half], -1)
    scores, labels, mask = torch.rand(1, A, C), torch.randint(0, C, (1, M)), torch.ones(1, M, dtype=torch.bool)
    result = SimOTAAssigner(C)(inputs(scores, pred, points, strides, labels, boxes, mask))  # time, memory: benchmark.py
    assert result.foreground.sum() > 1000 and torch.isfinite(result.scores).all()
    assert len(result.gt_index[result.foreground].unique()) > 500
    # the same assignment in chunks of about 60 GT rows
    chunked = SimOTAAssigner(C, chunk_elements=1 << 19)(inputs(scores, pred, points, strides, labels, boxes, mask))
    assert torch.equal(chunked.foreground, result.foreground) and torch.equal(chunked.gt_index, result.gt_index)
    torch.testing.assert_close(chunked.scores, result.scores)
