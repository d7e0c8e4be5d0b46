"""Task-aligned assigner on hand-built cases, and against a straightforward dense reference."""

import pytest
import torch

from detector.assigners.base import AssignerInput
from detector.assigners.tal import TaskAlignedAssigner
from detector.assigners.tal_dense import DenseTaskAlignedAssigner
from detector.losses.iou import iou
from detector.models.priors import Priors, anchor_points

# one 4x4 level at stride 8: anchor points in pixels at 4, 12, 20, 28 (index = row * 4 + col)
POINTS = (lambda p, s: p * s)(*anchor_points([(4, 4)], (8,)))
FAR = torch.tensor([100.0, 100.0, 110.0, 110.0])  # a prediction overlapping nothing


def inputs(scores, pred_boxes, points, gt_labels, gt_boxes, gt_mask):
    """The assigner input for anchor points in pixels (TAL reads only the points of the priors)."""
    priors = Priors(points, torch.ones(len(points), 1), None, (len(points),))
    return AssignerInput(scores, pred_boxes, priors, gt_labels, gt_boxes, gt_mask)


def assign(pred_boxes, gt_boxes, gt_labels, gt_mask=None, scores=None, num_classes=2, **kwargs):
    pred_boxes = pred_boxes.unsqueeze(0)
    if scores is None:
        scores = torch.full((1, 16, num_classes), 0.5)
    gt_mask = torch.ones(gt_labels.shape, dtype=torch.bool) if gt_mask is None else gt_mask
    assigner = TaskAlignedAssigner(num_classes, overlap=kwargs.pop("overlap", iou), **kwargs)
    return assigner(inputs(scores, pred_boxes, POINTS, gt_labels.unsqueeze(0), gt_boxes.unsqueeze(0), gt_mask.unsqueeze(0)))


def test_gt_covering_known_anchors():
    gt = torch.tensor([[0.0, 0.0, 17.0, 17.0]])  # contains the anchors at (4,4) (12,4) (4,12) (12,12): 0, 1, 4, 5
    pred = FAR.repeat(16, 1)
    pred[0] = gt[0]  # IoU 1
    pred[1] = torch.tensor([0.0, 0.0, 17.0, 8.5])  # IoU 0.5
    pred[4] = gt[0]  # IoU 1
    pred[5] = torch.tensor([0.0, 0.0, 17.0, 4.25])  # IoU 0.25
    # (an inside anchor with alignment 0 ties with every outside anchor in the top-k, as in YOLOv8,
    # so its selection is unspecified; this case gives every inside anchor a positive alignment)
    result = assign(pred, gt, torch.tensor([1]))
    assert result.foreground[0].nonzero().flatten().tolist() == [0, 1, 4, 5]
    assert result.labels[0, [0, 1, 4, 5]].tolist() == [1, 1, 1, 1]
    assert (result.boxes[0, [0, 1, 4, 5]] == gt).all()
    # t = s^0.5 * u^6 with s = 0.5 everywhere; max u = 1, so target = t / max t * 1 = u^6
    expected = torch.tensor([1.0, 0.5**6, 1.0, 0.25**6])
    torch.testing.assert_close(result.scores[0, [0, 1, 4, 5], 1], expected)
    assert result.scores[0, :, 0].eq(0).all() and result.scores[0, ~result.foreground[0]].eq(0).all()


def test_topk_keeps_the_best_aligned_anchors():
    gt = torch.tensor([[0.0, 0.0, 17.0, 17.0]])
    pred = FAR.repeat(16, 1)
    pred[1] = torch.tensor([0.0, 0.0, 17.0, 8.5])  # u = 0.5
    pred[5] = gt[0]  # u = 1
    result = assign(pred, gt, torch.tensor([0]), topk=2)
    assert result.foreground[0].nonzero().flatten().tolist() == [1, 5]


def test_class_score_enters_the_alignment():
    gt = torch.tensor([[0.0, 0.0, 17.0, 17.0]])
    pred = gt.repeat(16, 1)  # all u = 1
    scores = torch.full((1, 16, 2), 0.01)
    scores[0, 4, 1] = 0.64  # anchor 4 is confident about class 1
    result = assign(pred, gt, torch.tensor([1]), scores=scores, topk=1)
    assert result.foreground[0].nonzero().flatten().tolist() == [4]
    # with topk=4 all four are positive; targets scale with sqrt(score): (0.01 / 0.64)^0.5 = 0.125
    result = assign(pred, gt, torch.tensor([1]), scores=scores, topk=4)
    torch.testing.assert_close(result.scores[0, [0, 1, 4, 5], 1], torch.tensor([0.125, 0.125, 1.0, 0.125]))


def test_a_candidate_whose_probability_underflows_to_zero_is_not_positive():
    """The documented difference from ultralytics: anchor 0 predicts the GT exactly (u = 1) but its class probability
    is exactly 0, so its alignment is 0 and it is dropped; the GT's max u over its positives is then anchor 1's 0.5,
    and anchor 1's soft target is t * 0.5 / t = 0.5 (keeping anchor 0, as ultralytics may, would make it 1)."""
    gt = torch.tensor([[0.0, 0.0, 17.0, 17.0]])
    pred = FAR.repeat(16, 1)
    pred[0] = gt[0]
    pred[1] = torch.tensor([0.0, 0.0, 17.0, 8.5])  # u = 0.5
    scores = torch.full((1, 16, 2), 0.5)
    scores[0, 0, 1] = 0.0
    result = assign(pred, gt, torch.tensor([1]), scores=scores)
    assert result.foreground[0].nonzero().flatten().tolist() == [1]
    torch.testing.assert_close(result.scores[0, 1, 1], torch.tensor(0.5))

def test_two_overlapping_gts_compete_for_an_anchor():
    gt_a = torch.tensor([0.0, 0.0, 17.0, 17.0])  # anchors 0, 1, 4, 5
    gt_b = torch.tensor([8.0, 0.0, 33.0, 17.0])  # anchors 1, 2, 3, 5, 6, 7
    pred = FAR.repeat(16, 1)
    pred[1] = gt_b  # anchor 1: u_b = 1, u_a = 153 / 561
    pred[5] = gt_a  # anchor 5: u_a = 1, u_b = 153 / 561
    result = assign(pred, torch.stack([gt_a, gt_b]), torch.tensor([0, 1]))
    assert result.gt_index[0, 1] == 1 and result.labels[0, 1] == 1
    assert result.gt_index[0, 5] == 0 and result.labels[0, 5] == 0
    assert (result.boxes[0, 1] == gt_b).all() and (result.boxes[0, 5] == gt_a).all()
    assert result.scores[0, 1].tolist() == [0.0, 1.0] and result.scores[0, 5].tolist() == [1.0, 0.0]


def test_zero_gt_gives_all_background():
    pred = FAR.repeat(16, 1)
    result = assign(pred, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    assert not result.foreground.any() and result.scores.eq(0).all()
    assert result.boxes.shape == (1, 16, 4) and result.scores.shape == (1, 16, 2)


def test_padded_gt_rows_are_ignored():
    gt = torch.tensor([[0.0, 0.0, 17.0, 17.0], [0.0, 0.0, 33.0, 33.0]])
    pred = gt[1].repeat(16, 1)
    mask = torch.tensor([True, False])  # the second row is padding, even though it looks like a box
    result = assign(pred, gt, torch.tensor([0, 1]), gt_mask=mask)
    assert result.foreground[0].nonzero().flatten().tolist() == [0, 1, 4, 5]
    assert result.gt_index[0, result.foreground[0]].eq(0).all() and result.labels[0].eq(0).all()
    # all rows padded: background everywhere
    result = assign(pred, gt, torch.tensor([0, 1]), gt_mask=torch.tensor([False, False]))
    assert not result.foreground.any() and result.scores.eq(0).all()


def dense_reference(scores, pred, points, labels, boxes, mask):
    """The dense reference implementation; returns (foreground, gt_index, target scores)."""
    result = DenseTaskAlignedAssigner(scores.shape[-1])(inputs(scores, pred, points, labels, boxes, mask))
    return result.foreground, result.gt_index, result.scores


def random_boxes(*shape: int, extent: float, max_size: float) -> torch.Tensor:
    """Random xyxy boxes of shape (*shape, 4): corners in [0, extent), sides in [4, 4 + max_size)."""
    xy = torch.rand(*shape, 2) * extent
    return torch.cat([xy, xy + 4 + torch.rand(*shape, 2) * max_size], -1)


def test_matches_dense_reference_on_random_crowded_images():
    torch.manual_seed(0)
    points, strides = anchor_points([(16, 16), (8, 8), (4, 4)], (8, 16, 32))
    points = points * strides
    B, M, C = 3, 40, 5
    boxes = random_boxes(B, M, extent=100, max_size=60)
    labels = torch.randint(0, C, (B, M))
    mask = torch.rand(B, M) > 0.2
    pred = random_boxes(B, len(points), extent=100, max_size=60)
    scores = torch.rand(B, len(points), C)
    boxes[0, 0] = torch.tensor([12.0, 12.0, 44.0, 44.0])  # edges exactly on anchor points: strictly inside only
    fg, idx, target = dense_reference(scores, pred, points, labels, boxes, mask)
    real = target.sum(-1) > 0
    for chunk in (1 << 24, 300):  # one chunk, and many small ones
        result = TaskAlignedAssigner(C, chunk_elements=chunk)(inputs(scores, pred, points, labels, boxes, mask))
        assert result.foreground.sum() > 50
        assert torch.equal(result.foreground, real)
        assert torch.equal(result.gt_index[real], idx[real])
        assert torch.equal(result.labels[real], labels.gather(1, idx)[real])
        torch.testing.assert_close(result.scores, target)


def test_a_thousand_gt_per_image():
    """Crowded images at small scale: 1000 GT per image on 4 images of 2,100 anchor points."""
    torch.manual_seed(1)
    points, strides = anchor_points([(40, 40), (20, 20), (10, 10)], (8, 16, 32))
    points = points * strides
    B, M, C = 4, 1000, 80
    boxes = random_boxes(B, M, extent=300, max_size=40)
    half = 2 + torch.rand(B, len(points), 2) * 20  # predictions around their own anchor point
    pred = torch.cat([points - half, points + half], -1)
    scores, labels, mask = torch.rand(B, len(points), C), torch.randint(0, C, (B, M)), torch.ones(B, M, dtype=torch.bool)
    result = TaskAlignedAssigner(C, chunk_elements=1 << 16)(inputs(scores, pred, points, labels, boxes, mask))
    fg, idx, target = dense_reference(scores, pred, points, labels, boxes, mask)
    real = target.sum(-1) > 0
    assert real.sum() > 2000 and torch.equal(result.foreground, real)
    torch.testing.assert_close(result.scores, target)


# ---- small-object option (ultralytics 8.4's candidate widening) ----

def three_level_priors(size: int = 64) -> Priors:
    """Anchor points of a size x size input at strides 8/16/32, with their real strides and level sizes."""
    sizes = [(size // s, size // s) for s in (8, 16, 32)]
    points, strides = anchor_points(sizes, (8, 16, 32))
    return Priors(points * strides, strides, None, tuple(h * w for h, w in sizes))


def assign_small(gt: torch.Tensor, small_objects: bool, num_classes: int = 2):
    priors = three_level_priors()
    anchors = len(priors.points)
    pred = torch.cat([priors.points - 6, priors.points + 6], -1).unsqueeze(0)  # 12 x 12 px boxes on every point
    scores = torch.full((1, anchors, num_classes), 0.5)
    assigner = TaskAlignedAssigner(num_classes, overlap=iou, small_objects=small_objects)
    return assigner(AssignerInput(scores, pred, priors, torch.tensor([[1]]), gt.view(1, 1, 4), torch.ones(1, 1, dtype=torch.bool)))


def test_small_objects_give_a_tiny_gt_positives():
    # a 4 x 4 px GT centred on (31, 31): between the points of every level (stride 8 at 28 and 36, stride 16 at
    # 24 and 40, stride 32 at 16 and 48), so no point lies inside it
    gt = torch.tensor([29.0, 29.0, 33.0, 33.0])
    assert not assign_small(gt, small_objects=False).foreground.any()
    result = assign_small(gt, small_objects=True)
    # widened to 16 x 16 about its centre, [23, 39]^2 holds the stride-8 points (28|36, 28|36) (rows/cols 3 and 4
    # of the 8 x 8 grid: indices 27, 28, 35, 36) and the stride-16 point (24, 24) (64 + 1 * 4 + 1 = 69)
    assert result.foreground[0].nonzero().flatten().tolist() == [27, 28, 35, 36, 69]
    assert (result.boxes[0, result.foreground[0]] == gt).all()  # targets keep the real box
    assert result.labels[0, result.foreground[0]].eq(1).all()


def test_small_objects_widen_each_short_side_only():
    priors = three_level_priors()
    assigner = TaskAlignedAssigner(2, small_objects=True)
    gts = torch.tensor([[[6.0, 6.0, 10.0, 50.0], [0.0, 0.0, 40.0, 30.0]]])  # 4 x 44 px, and a large box
    widened = assigner.candidate_boxes(gts, priors)
    torch.testing.assert_close(widened, torch.tensor([[[0.0, 6.0, 16.0, 50.0], [0.0, 0.0, 40.0, 30.0]]]))
    assert torch.equal(TaskAlignedAssigner(2).candidate_boxes(gts, priors), gts)  # off: the boxes themselves


def test_small_objects_on_the_dense_reference_too():
    gt = torch.tensor([29.0, 29.0, 33.0, 33.0])
    priors = three_level_priors()
    pred = torch.cat([priors.points - 6, priors.points + 6], -1).unsqueeze(0)
    scores = torch.full((1, len(priors.points), 2), 0.5)
    args = AssignerInput(scores, pred, priors, torch.tensor([[1]]), gt.view(1, 1, 4), torch.ones(1, 1, dtype=torch.bool))
    dense = DenseTaskAlignedAssigner(2, overlap=iou, small_objects=True)(args)
    assert torch.equal(dense.foreground, assign_small(gt, small_objects=True).foreground)


REFERENCE_SCRIPT = """
import sys, torch
from ultralytics.utils import tal
if "stride" not in tal.TaskAlignedAssigner.__init__.__code__.co_varnames:
    sys.exit(3)  # no small-object widening in this version (8.4+ has it)
scores, pred, points, labels, gt, mask, C = torch.load(sys.argv[1])
assigner = tal.TaskAlignedAssigner(topk=10, num_classes=C, alpha=0.5, beta=6.0, stride=[8, 16, 32])
_, _, target_scores, fg, gt_index = assigner(scores, pred, points, labels.unsqueeze(-1), gt, mask.unsqueeze(-1).float())
torch.save((target_scores, fg.bool(), gt_index), sys.argv[2])
"""


def test_small_objects_match_ultralytics_task_aligned_assigner(tmp_path):
    """Optional reference: ultralytics 8.4's TaskAlignedAssigner (stride widening), skipped when not installed. It runs
    in a subprocess: importing ultralytics monkey-patches cv2.imread/imwrite and torch.save process-wide."""
    import importlib.util
    import subprocess
    import sys

    if importlib.util.find_spec("ultralytics") is None:
        pytest.skip("ultralytics (optional reference) not installed")
    torch.manual_seed(3)
    priors = three_level_priors(128)
    anchors = len(priors.points)
    B, M, C = 2, 12, 4
    xy = torch.rand(B, M, 2) * 110
    gt = torch.cat([xy, xy + 1 + torch.rand(B, M, 2) * torch.tensor([[[6.0, 30.0]]])], -1)  # many sides < 16 px
    labels, mask = torch.randint(0, C, (B, M)), torch.rand(B, M) > 0.15
    gt = gt * mask[..., None]
    centres = priors.points + torch.randn(B, anchors, 2) * 3
    half = 2 + torch.rand(B, anchors, 2) * 10
    pred, scores = torch.cat([centres - half, centres + half], -1), torch.rand(B, anchors, C) * 0.9 + 0.05
    torch.save((scores, pred, priors.points, labels, gt, mask, C), tmp_path / "inputs.pt")
    run = subprocess.run([sys.executable, "-c", REFERENCE_SCRIPT, str(tmp_path / "inputs.pt"), str(tmp_path / "out.pt")],
                         capture_output=True, text=True, timeout=300)
    if run.returncode == 3:
        pytest.skip("this ultralytics version's TaskAlignedAssigner has no small-object widening (8.4+ has)")
    assert run.returncode == 0, run.stderr[-3000:]
    their_scores, their_fg, their_idx = torch.load(tmp_path / "out.pt")
    ours = TaskAlignedAssigner(C, small_objects=True)(AssignerInput(scores, pred, priors, labels, gt, mask))
    assert their_fg.sum() > 20
    assert torch.equal(ours.foreground, their_fg)
    assert torch.equal(ours.gt_index[their_fg], their_idx[their_fg])
    torch.testing.assert_close(ours.scores, their_scores, atol=1e-5, rtol=1e-4)


def test_nwd_overlap_matches_the_dense_assigner_and_reaches_tiny_gts():
    """`assigner/overlap=nwd`: the sparse and dense assigners agree with NWD as the overlap, and a tiny GT that no
    prediction overlaps still gets positives (with CIoU, clamped at 0, its alignments are all 0)."""
    import functools

    from detector.assigners.tal_dense import DenseTaskAlignedAssigner
    from detector.losses.gaussian import nwd

    torch.manual_seed(0)
    points, strides = anchor_points([(16, 16), (8, 8)], (8, 16))
    points = points * strides
    B, M, C = 2, 20, 3
    boxes = random_boxes(B, M, extent=100, max_size=40)
    labels, mask = torch.randint(0, C, (B, M)), torch.rand(B, M) > 0.2
    pred = random_boxes(B, len(points), extent=100, max_size=40)
    scores = torch.rand(B, len(points), C)
    overlap = functools.partial(nwd, constant=12.8)
    sparse = TaskAlignedAssigner(C, overlap=overlap)(inputs(scores, pred, points, labels, boxes, mask))
    dense = DenseTaskAlignedAssigner(C, overlap=overlap)(inputs(scores, pred, points, labels, boxes, mask))
    assert sparse.foreground.sum() > 20 and torch.equal(sparse.foreground, dense.foreground)
    torch.testing.assert_close(sparse.scores, dense.scores)

    tiny = torch.tensor([[[9.0, 9.0, 15.0, 15.0]]])  # 6 x 6 px around the anchor point (12, 12)
    far = torch.tensor([60.0, 60.0, 70.0, 70.0]).expand(1, len(points), 4)  # predictions that miss it
    one = (torch.full((1, len(points), C), 0.5), far, points, torch.zeros(1, 1, dtype=torch.long), tiny,
           torch.ones(1, 1, dtype=torch.bool))
    assert TaskAlignedAssigner(C, overlap=overlap)(inputs(*one)).foreground.any()
    assert not TaskAlignedAssigner(C)(inputs(*one)).foreground.any()


DIFFERENCE_SCRIPT = """
import sys, torch
from ultralytics.utils import tal
out = []
for scores, pred, points, labels, gt, mask, C in torch.load(sys.argv[1]):
    assigner = tal.TaskAlignedAssigner(topk=10, num_classes=C, alpha=0.5, beta=6.0)
    _, _, target_scores, fg, gt_index = assigner(scores, pred, points, labels.unsqueeze(-1), gt, mask.unsqueeze(-1).float())
    out.append((target_scores, fg.bool(), gt_index))
torch.save(out, sys.argv[2])
"""


def aligned_or_poor_case(seed: int, well_aligned: bool, points: torch.Tensor, B: int = 8, M: int = 12, C: int = 4):
    """Random images on a 128-px input. Well aligned: 40-60 px GTs, each anchor predicting a copy of one of its image's
    GTs moved by about 2 px (every GT has >= 10 candidates of positive alignment). Poor: 4-44 px GTs and small boxes
    scattered about the anchor points (as early in training: many candidates with CIoU <= 0)."""
    torch.manual_seed(seed)
    lo, hi = (40, 60) if well_aligned else (4, 44)
    xy = torch.rand(B, M, 2) * (128 - hi - lo)
    labels, mask = torch.randint(0, C, (B, M)), torch.rand(B, M) > 0.2
    gt = torch.cat([xy, xy + lo + torch.rand(B, M, 2) * (hi - lo)], -1) * mask[..., None]
    A = len(points)
    if well_aligned:
        pick = torch.multinomial(mask.float() + 1e-6, A, replacement=True)
        pred = torch.gather(gt, 1, pick[..., None].expand(-1, -1, 4)) + torch.randn(B, A, 4) * 2
    else:
        centres, half = points + torch.randn(B, A, 2) * 8, 2 + torch.rand(B, A, 2) * 12
        pred = torch.cat([centres - half, centres + half], -1)
    return torch.rand(B, A, C) * 0.9 + 0.05, pred, points, labels, gt, mask, C


@pytest.mark.slow
def test_where_ultralytics_task_aligned_assigner_differs(tmp_path):
    """Optional reference (ultralytics installed; a subprocess, see above), CIoU overlap: identical where every GT has
    at least top-k candidates of positive alignment; elsewhere ultralytics' top-k also takes anchors of alignment 0,
    so its positives are a superset of ours (docs/assigners.md; `-s` prints the measured difference)."""
    import importlib.util
    import subprocess
    import sys

    if importlib.util.find_spec("ultralytics") is None:
        pytest.skip("ultralytics (optional reference) not installed")
    priors = three_level_priors(128)
    points = priors.points
    cases = [aligned_or_poor_case(seed, well, points) for well in (True, False) for seed in range(10)]
    torch.save(cases, tmp_path / "inputs.pt")
    run = subprocess.run([sys.executable, "-c", DIFFERENCE_SCRIPT, str(tmp_path / "inputs.pt"), str(tmp_path / "out.pt")],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    theirs = torch.load(tmp_path / "out.pt")
    found = {True: [0, 0, 0, 0, 0, 0.0], False: [0, 0, 0, 0, 0, 0.0]}  # images, differing, ours, extra, other GT, max
    for index, (case, (their_scores, their_fg, their_idx)) in enumerate(zip(cases, theirs)):
        scores, pred, _, labels, gt, mask, C = case
        ours = TaskAlignedAssigner(C)(AssignerInput(scores, pred, priors, labels, gt, mask))
        both = ours.foreground & their_fg
        assert not (ours.foreground & ~their_fg).any()  # every positive here is one there
        differing = ((ours.foreground != their_fg).any(1) | ((ours.gt_index != their_idx) & both).any(1)
                     | (ours.scores - their_scores).abs().flatten(1).gt(1e-5).any(1))
        row = found[index < 10]
        row[0] += len(differing)
        row[1] += int(differing.sum())
        row[2] += int(ours.foreground.sum())
        row[3] += int((their_fg & ~ours.foreground).sum())
        row[4] += int(((ours.gt_index != their_idx) & both).sum())
        row[5] = max(row[5], float((ours.scores - their_scores).abs().max()))
    for well, (images, differing, positives, extra, other_gt, largest) in found.items():
        print(f"{'well aligned' if well else 'poor'}: {differing}/{images} images differ; {positives} positives here, "
              f"{extra} more there, {other_gt} of ours with another GT there; soft targets differ by <= {largest:.3f}")
    assert found[True][1] == 0 and found[True][2] > 1000
    assert found[False][1] > 0 and found[False][3] > 0
