"""MultiBox criterion against hand computations on a tiny case; outputs of the wrong family are refused."""

import math

import torch

from detector.assigners.ssd_matcher import SSDMatcher
from detector.criteria.hard_negative_mining import HardNegativeMiner
from detector.criteria.multibox import MultiBoxCriterion
from detector.losses.classification import CrossEntropy, FocalLoss
from detector.losses.iou import GIoULoss
from detector.losses.regression import SmoothL1Loss
from detector.models.heads.ssd import SSDHeadOutput
from detector.models.priors import Priors, box_centres

# five 10 x 10 priors; image 0 has one GT (class 1) that matches prior 0 only, image 1 has none
PRIORS = torch.tensor([[0.0, 0, 10, 10], [20, 0, 30, 10], [0, 20, 10, 30], [20, 20, 30, 30], [40, 40, 50, 50]])


def priors_of(boxes):
    return Priors(box_centres(boxes), torch.full((len(boxes), 1), 10.0), boxes, (len(boxes),))

GT_BOXES = torch.tensor([[[0.0, 0, 10, 12]], [[0.0, 0, 0, 0]]])  # IoU 100 / 120 with prior 0
GT_LABELS = torch.tensor([[1], [-1]])
GT_MASK = torch.tensor([[True], [False]])


def tiny_output():
    # image 0: prior 0 (positive) logits 0 -> CE log 3; negatives: background logit 0, one class logit 1, 2, 3, 0
    logits = torch.zeros(2, 5, 3)
    logits[0, 1, 1], logits[0, 2, 1], logits[0, 3, 2] = 1.0, 2.0, 3.0
    logits[1, :, 1] = 5.0  # image 1 (no GT): large losses that mining must ignore
    deltas = torch.zeros(2, 5, 4)
    deltas[0, 0] = torch.tensor([0.1, -0.2, 2.0, 0.3])
    return SSDHeadOutput(deltas.requires_grad_(), logits.requires_grad_(), priors_of(PRIORS))


def criterion(**kwargs):
    kwargs.setdefault("cls_loss", CrossEntropy())
    kwargs.setdefault("box_loss", SmoothL1Loss())
    kwargs.setdefault("sampler", HardNegativeMiner(3.0))
    return MultiBoxCriterion(SSDMatcher(2), **kwargs)


def test_multibox_loss_by_hand():
    losses = criterion()(tiny_output(), GT_LABELS, GT_BOXES, GT_MASK).losses
    # 1 positive (target class 2) -> 3 negatives, the largest of log(2 + e^k) over priors 1..4 (k = 1, 2, 3, 0)
    cls = math.log(3) + math.log(2 + math.e) + math.log(2 + math.e**2) + math.log(2 + math.e**3)
    # target offsets of GT (centre (5, 6), 10 x 12) against prior 0: (0, 1 / (0.1 * 10), 0, log(1.2) / 0.2)
    target = [0.0, 1.0, 0.0, math.log(1.2) / 0.2]
    diffs = [abs(p - t) for p, t in zip([0.1, -0.2, 2.0, 0.3], target)]
    box = sum(0.5 * d * d if d < 1 else d - 0.5 for d in diffs)  # smooth L1, beta 1
    assert math.isclose(losses["cls"].item(), cls, rel_tol=1e-5)
    assert math.isclose(losses["box"].item(), box, rel_tol=1e-5)
    assert math.isclose(losses["loss"].item(), cls + box, rel_tol=1e-5)


def test_alpha_weighting_label_smoothing_and_mining_ratio():
    base = criterion()(tiny_output(), GT_LABELS, GT_BOXES, GT_MASK).losses
    weighted = criterion(box_gain=2.0, cls_gain=0.5)(tiny_output(), GT_LABELS, GT_BOXES, GT_MASK).losses
    assert math.isclose(weighted["box"].item(), 2 * base["box"].item(), rel_tol=1e-6)
    assert math.isclose(weighted["cls"].item(), 0.5 * base["cls"].item(), rel_tol=1e-6)
    # ratio 1: the positive and the hardest negative (prior 3) only
    one = criterion(sampler=HardNegativeMiner(1.0))(tiny_output(), GT_LABELS, GT_BOXES, GT_MASK).losses
    assert math.isclose(one["cls"].item(), math.log(3) + math.log(2 + math.e**3), rel_tol=1e-5)
    # label smoothing eps over the K - 1 other classes: -(1 - eps) log p_true - eps / 2 * sum log p_other
    eps = 0.1
    smooth = criterion(cls_loss=CrossEntropy(eps), sampler=HardNegativeMiner(1.0))(tiny_output(), GT_LABELS, GT_BOXES, GT_MASK).losses
    log_z = math.log(2 + math.e**3)
    expected = math.log(3) + ((1 - eps) * log_z + eps / 2 * (log_z + log_z - 3))
    assert math.isclose(smooth["cls"].item(), expected, rel_tol=1e-5)


def test_no_mining_with_focal_loss_uses_every_anchor_and_the_foreground_logits():
    out = tiny_output()
    losses = criterion(cls_loss=FocalLoss(), sampler=None)(out, GT_LABELS, GT_BOXES, GT_MASK).losses
    targets = torch.zeros(2, 5, 2)
    targets[0, 0, 1] = 1.0
    expected = FocalLoss()(out.cls_logits[..., 1:], targets).sum() / 1  # N = 1 positive
    assert math.isclose(losses["cls"].item(), expected.item(), rel_tol=1e-6)


def test_iou_family_box_loss_compares_decoded_boxes():
    out = tiny_output()
    losses = criterion(box_loss=GIoULoss())(out, GT_LABELS, GT_BOXES, GT_MASK).losses
    # decoded prior 0: centre (5 + 0.1 * 0.1 * 10, 5 - 0.2 * 0.1 * 10), size 10 e^(2 * 0.2) x 10 e^(0.3 * 0.2)
    cx, cy, w, h = 5.1, 4.8, 10 * math.exp(0.4), 10 * math.exp(0.06)
    pred = torch.tensor([[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]])
    expected = GIoULoss()(pred, GT_BOXES[0])
    assert math.isclose(losses["box"].item(), expected.item(), rel_tol=1e-5)
    # what each loss consumes is declared on its class, and the criterion follows it
    assert GIoULoss.input == "boxes" and SmoothL1Loss.input == "coordinates"


def test_gradients_flow_and_an_empty_batch_gives_zero_box_loss():
    out = tiny_output()
    criterion()(out, GT_LABELS, GT_BOXES, GT_MASK).losses["loss"].backward()
    assert out.box_deltas.grad[0, 0].abs().sum() > 0 and out.box_deltas.grad[0, 1:].eq(0).all()
    assert out.cls_logits.grad[1].eq(0).all()  # image 1 has no positives, hence no mined negatives
    empty = criterion()(tiny_output(), torch.zeros(2, 0, dtype=torch.long), torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.bool)).losses
    assert empty["box"].item() == 0 and empty["cls"].item() == 0 and torch.isfinite(empty["loss"])


def test_mpdiou_gets_the_image_size_in_pixels():
    """On decoded boxes (pixels) MPDIoU gets the input's (width, height) in pixels: its box term is MPDIoU of the
    decoded positive against its GT with that image."""
    from detector.losses.iou import MPDIoULoss, mpdiou_loss

    output = tiny_output()
    losses = criterion(box_loss=MPDIoULoss())(output, GT_LABELS, GT_BOXES, GT_MASK, image_size=(60, 80)).losses
    decoded = output.decode_boxes()[0, :1].detach()
    expected = mpdiou_loss(decoded, GT_BOXES[0], torch.tensor([80.0, 60.0]))
    assert math.isclose(losses["box"].item(), expected.item(), rel_tol=1e-5)
