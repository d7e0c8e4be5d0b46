"""The criterion's normalisation and gains on a hand-computed case, and its edge cases."""

import math

import pytest
import torch

from detector.assigners.base import Assignment
from detector.assigners.tal import TaskAlignedAssigner
from detector.criteria.yolov8 import YOLOv8Criterion
from detector.losses.classification import BCEWithLogits
from detector.losses.dfl import DFLoss, DistanceL1Loss
from detector.losses.iou import CIoULoss, IoULoss
from detector.models.heads.dfl import DFLHeadOutput
from detector.models.priors import Priors

REG_MAX = 16
POINTS = torch.tensor([[2.5, 2.5], [6.5, 2.5], [2.5, 6.5]])  # grid units, stride 8
STRIDES = torch.full((3, 1), 8.0)
PRIORS = Priors(POINTS * STRIDES, STRIDES, None, (3,))


class FixedAssigner(torch.nn.Module):
    """Returns a fixed assignment, so the loss arithmetic is tested on its own."""

    def __init__(self, assignment):
        super().__init__()
        self.assignment = assignment

    def forward(self, inputs):
        return self.assignment


def head_output():
    # every side: p(bin 0) = 0.25, p(bin 1) = 0.5, p(bin 2) = 0.25, others 0 -> expected distance 1
    side = torch.full((REG_MAX,), -1e9)
    side[:3] = torch.log(torch.tensor([0.25, 0.5, 0.25]))
    box_logits = side.repeat(4).expand(1, 3, -1).clone().requires_grad_()
    cls_logits = torch.zeros(1, 3, 2, requires_grad=True)
    return DFLHeadOutput(box_logits, cls_logits, PRIORS)


def hand_assignment():
    return Assignment(
        labels=torch.tensor([[1, 0, 0]]),
        boxes=torch.tensor([[[12.0, 12, 28, 36], [44, 12, 60, 28], [0, 0, 0, 0]]]),
        scores=torch.tensor([[[0.0, 0.8], [0.5, 0.0], [0.0, 0.0]]]),
        foreground=torch.tensor([[True, True, False]]),
        gt_index=torch.zeros(1, 3, dtype=torch.long),
    )


def test_hand_computed_components():
    # anchor 0: class 1, soft score 0.8, target [1.5, 1.5, 3.5, 4.5] grid = [12, 12, 28, 36] px
    #           prediction = point +- 1 = [1.5, 1.5, 3.5, 3.5] -> IoU 4 / 6; DFL targets (1, 1, 1, 2)
    # anchor 1: class 0, soft score 0.5, target = its prediction [5.5, 1.5, 7.5, 3.5] -> IoU 1; targets (1, 1, 1, 1)
    # anchor 2: background
    criterion = YOLOv8Criterion(FixedAssigner(hand_assignment()), BCEWithLogits(), IoULoss(), DFLoss())
    out = head_output()
    losses = criterion(out, torch.zeros(1, 0, dtype=torch.long), torch.zeros(1, 0, 4), torch.zeros(1, 0, dtype=torch.bool)).losses
    tss = 1.3
    # BCE with logit 0 is log 2 whatever the target: 3 anchors x 2 classes
    assert math.isclose(losses["cls"].item(), 0.5 * 6 * math.log(2) / tss, rel_tol=1e-6)
    assert math.isclose(losses["box"].item(), 7.5 * ((1 - 4 / 6) * 0.8 + 0.0 * 0.5) / tss, rel_tol=1e-5)
    # DFL of an integer target k is -log p(k): anchor 0 -> (3 log 2 + log 4) / 4, anchor 1 -> log 2
    dfl = (1.25 * math.log(2) * 0.8 + math.log(2) * 0.5) / tss
    assert math.isclose(losses["dfl"].item(), 1.5 * dfl, rel_tol=1e-5)
    assert math.isclose(losses["loss"].item(), sum(losses[k].item() for k in ("box", "cls", "dfl")), rel_tol=1e-6)


def make_criterion(num_classes=3):
    return YOLOv8Criterion(TaskAlignedAssigner(num_classes), BCEWithLogits(), CIoULoss(), DFLoss())


def random_output(batch, anchors_side=8, num_classes=3, seed=0):
    from detector.models.priors import anchor_points

    g = torch.Generator().manual_seed(seed)
    points, strides = anchor_points([(anchors_side, anchors_side)], (8,))
    box_logits = torch.randn(batch, len(points), 4 * REG_MAX, generator=g, requires_grad=True)
    cls_logits = torch.randn(batch, len(points), num_classes, generator=g, requires_grad=True)
    return DFLHeadOutput(box_logits, cls_logits, Priors(points * strides, strides, None, (len(points),)))


def test_zero_gt_batch_trains_classification_only_and_keeps_the_graph():
    out = random_output(2)
    losses = make_criterion()(out, torch.zeros(2, 0, dtype=torch.long), torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.bool)).losses
    assert losses["box"].item() == 0 and losses["dfl"].item() == 0
    expected_cls = torch.nn.functional.binary_cross_entropy_with_logits(out.cls_logits, torch.zeros_like(out.cls_logits), reduction="sum")
    torch.testing.assert_close(losses["cls"], 0.5 * expected_cls)  # tss clamps to 1
    losses["loss"].backward()
    assert out.box_logits.grad is not None and out.box_logits.grad.eq(0).all()
    assert out.cls_logits.grad.abs().sum() > 0


def test_loss_does_not_scale_with_batch_size():
    # the hand case above, once and as two identical images: sums and tss both double
    one = head_output()
    two = DFLHeadOutput(one.box_logits.repeat(2, 1, 1), one.cls_logits.repeat(2, 1, 1), one.priors)
    one_assignment = hand_assignment()
    two_assignment = Assignment(*(t.repeat(2, *[1] * (t.dim() - 1)) for t in one_assignment))
    empty = (torch.zeros(1, 0, dtype=torch.long), torch.zeros(1, 0, 4), torch.zeros(1, 0, dtype=torch.bool))
    single = YOLOv8Criterion(FixedAssigner(one_assignment), BCEWithLogits(), CIoULoss(), DFLoss())(one, *empty).losses
    double = YOLOv8Criterion(FixedAssigner(two_assignment), BCEWithLogits(), CIoULoss(), DFLoss())(two, *empty).losses
    for key in ("box", "cls", "dfl", "loss"):
        torch.testing.assert_close(single[key], double[key])


def test_gradients_are_finite_with_degenerate_gt():
    out = random_output(1)
    boxes = torch.tensor([[[10.0, 10.0, 10.0, 10.0], [0.0, 0.0, 64.0, 64.0], [5.0, 5.0, 5.5, 40.0]]])
    losses = make_criterion()(out, torch.tensor([[0, 1, 2]]), boxes, torch.ones(1, 3, dtype=torch.bool)).losses
    losses["loss"].backward()
    assert torch.isfinite(losses["loss"]) and torch.isfinite(out.box_logits.grad).all()


# ---- DFL-free heads (reg_max = 1) and end-to-end heads (one-to-one branch) ----

def direct_output(distances: float = 1.0):
    """A reg_max = 1 head output: every ltrb distance `distances` grid units, class logits 0."""
    box_logits = torch.full((1, 3, 4), distances, requires_grad=True)
    return DFLHeadOutput(box_logits, torch.zeros(1, 3, 2, requires_grad=True), PRIORS)


NO_GT = (torch.zeros(1, 0, dtype=torch.long), torch.zeros(1, 0, 4), torch.zeros(1, 0, dtype=torch.bool))


def test_dfl_free_head_gets_an_l1_distance_term_instead_of_dfl():
    # same assignment as test_hand_computed_components; predicted distances 1 on every side (point +- 1)
    # anchor 0: targets (1, 1, 1, 2) grid -> mean |d - y| = 0.25, weight 0.8; anchor 1: targets (1, 1, 1, 1) -> 0
    criterion = YOLOv8Criterion(FixedAssigner(hand_assignment()), BCEWithLogits(), IoULoss(), DistanceL1Loss())
    losses = criterion(direct_output(), *NO_GT).losses
    assert "dfl" not in losses and set(losses) == {"box", "cls", "l1", "loss"}
    assert math.isclose(losses["l1"].item(), 1.5 * 0.25 * 0.8 / 1.3, rel_tol=1e-6)
    assert math.isclose(losses["box"].item(), 7.5 * (1 - 4 / 6) * 0.8 / 1.3, rel_tol=1e-5)  # decoding as with bins
    losses["loss"].backward()


def test_distance_loss_that_does_not_fit_the_head_is_refused():
    """DFL on a head without bins (reg_max = 1), the L1 distance loss on a head with bins: one line naming the choice."""
    for output, loss, choice in ((direct_output(), DFLoss(), "l1"), (head_output(), DistanceL1Loss(), "dfl")):
        criterion = YOLOv8Criterion(FixedAssigner(hand_assignment()), BCEWithLogits(), IoULoss(), loss)
        with pytest.raises(ValueError, match=f"^{type(loss).__name__} .*: choose loss/dfl={choice} or loss/dfl=none$"):
            criterion(output, *NO_GT)


def test_dfl_free_head_with_the_distance_term_off():
    criterion = YOLOv8Criterion(FixedAssigner(hand_assignment()), BCEWithLogits(), IoULoss(), None)
    losses = criterion(direct_output(), *NO_GT).losses
    assert losses["l1"].item() == 0
    assert math.isclose(losses["loss"].item(), losses["box"].item() + losses["cls"].item(), rel_tol=1e-6)


def test_end_to_end_total_weights_the_two_branches():
    main = head_output()
    output = main._replace(one2one=head_output())
    one_assignment = hand_assignment()._replace(foreground=torch.tensor([[True, False, False]]),
                                                scores=torch.tensor([[[0.0, 0.8], [0.0, 0.0], [0.0, 0.0]]]))
    criterion = YOLOv8Criterion(FixedAssigner(hand_assignment()), BCEWithLogits(), IoULoss(), DFLoss(),
                                   one2one_assigner=FixedAssigner(one_assignment),
                                   one2many_weight=(0.8, 0.1), one2one_weight=(0.2, 0.9))
    many = YOLOv8Criterion(FixedAssigner(hand_assignment()), BCEWithLogits(), IoULoss(), DFLoss())(main, *NO_GT).losses
    single = YOLOv8Criterion(FixedAssigner(one_assignment), BCEWithLogits(), IoULoss(), DFLoss())(output.one2one, *NO_GT).losses
    for epoch, (w_many, w_one) in ((0, (0.8, 0.2)), (5, (0.45, 0.55)), (10, (0.1, 0.9))):
        criterion.set_epoch(epoch, max_epochs=11)
        losses = criterion(output, *NO_GT).losses
        assert math.isclose(losses["loss"].item(), w_many * many["loss"].item() + w_one * single["loss"].item(), rel_tol=1e-6)
        assert math.isclose(losses["box"].item(), w_many * many["box"].item() + w_one * single["box"].item(), rel_tol=1e-6)
        assert math.isclose(losses["one2one"].item(), single["loss"].item(), rel_tol=1e-6)
    assert math.isclose(losses["dfl"].item(), 0.1 * many["dfl"].item() + 0.9 * single["dfl"].item(), rel_tol=1e-6)


def test_one_to_one_branch_without_its_assigner_is_refused():
    output = head_output()._replace(one2one=head_output())
    criterion = YOLOv8Criterion(FixedAssigner(hand_assignment()), BCEWithLogits(), IoULoss(), DFLoss())
    try:
        criterion(output, *NO_GT)
    except ValueError as error:
        assert "one2one_assigner" in str(error)
    else:
        raise AssertionError("no error")


def test_mpdiou_gets_the_image_size_in_grid_units():
    """A box loss that needs the image size gets the input's (width, height) / stride, in the units of its boxes:
    the hand case with MPDIoU in a 64 x 48 px input (8 x 6 cells of stride 8, w^2 + h^2 = 100 grid units^2).
    Anchor 0: pred [1.5, 1.5, 3.5, 3.5], target [1.5, 1.5, 3.5, 4.5]: d_1 = 0, d_2^2 = 1 -> 1 - 4/6 + 1/100."""
    from detector.losses.iou import MPDIoULoss

    criterion = YOLOv8Criterion(FixedAssigner(hand_assignment()), BCEWithLogits(), MPDIoULoss(), DFLoss())
    empty = (torch.zeros(1, 0, dtype=torch.long), torch.zeros(1, 0, 4), torch.zeros(1, 0, dtype=torch.bool))
    losses = criterion(head_output(), *empty, image_size=(48, 64)).losses
    assert math.isclose(losses["box"].item(), 7.5 * (1 - 4 / 6 + 1 / 100) * 0.8 / 1.3, rel_tol=1e-5)
    try:
        criterion(head_output(), *empty)
    except ValueError as error:
        assert "image_size" in str(error)
    else:
        raise AssertionError("MPDIoU without the image size must be refused")


def test_tal_with_nwd_overlap_trains():
    """`assigner/overlap=nwd`: the assigner's overlap is NWD (C in pixels); the criterion runs and back-propagates."""
    import functools

    from detector.losses.gaussian import nwd

    assigner = TaskAlignedAssigner(3, overlap=functools.partial(nwd, constant=12.8))
    criterion = YOLOv8Criterion(assigner, BCEWithLogits(), CIoULoss(), DFLoss())
    out = random_output(2)
    gt_boxes = torch.tensor([[[8.0, 8, 40, 40], [30, 30, 34, 34]], [[10.0, 20, 60, 50], [0, 0, 0, 0]]])
    losses = criterion(out, torch.tensor([[0, 2], [1, 0]]), gt_boxes, torch.tensor([[True, True], [True, False]])).losses
    assert losses["box"] > 0 and torch.isfinite(losses["loss"])
    losses["loss"].backward()
    assert torch.isfinite(out.box_logits.grad).all() and out.box_logits.grad.abs().sum() > 0
