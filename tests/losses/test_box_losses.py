"""IoU-family box losses (detector/losses/iou.py): hand values, torchvision agreement, the papers' claims,
finite gradients in degenerate cases and in half precision."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import complete_box_iou_loss, distance_box_iou_loss, generalized_box_iou_loss

from detector.boxes import pair_terms
from detector.losses import gaussian as G
from detector.losses import iou as L

EPS = 1e-7

# Three reference pairs (pred, target), xyxy:
# A: overlapping, same size, offset (1, 1):  [0,0,2,2] vs [1,1,3,3]
#    inter 1, union 4 + 4 - 1 = 7, IoU = 1/7; enclosing [0,0,3,3]: C_w = C_h = 3, area 9, c^2 = 18;
#    centres (1,1), (2,2): rho^2 = 2, dx = dy = 1.
# B: nested, concentric: [0,0,2,2] inside [-1,-1,3,3]
#    inter 4, union 16, IoU = 1/4; enclosing = target: C_w = C_h = 4, area 16; rho = 0; w - w_gt = h - h_gt = -2.
# C: disjoint, same row: [0,0,2,2] vs [4,0,6,2]
#    IoU = 0, union 8; enclosing [0,0,6,2]: area 12, C_w = 6, C_h = 2, c^2 = 40; rho^2 = 16, dx = 4, dy = 0.
# D: overlapping, transposed shapes: [0,0,4,2] vs [0,0,2,4]
#    inter 4, union 12, IoU = 1/3; enclosing [0,0,4,4]: area 16, c^2 = 32; centres (2,1), (1,2): rho^2 = 2.
A = ([0.0, 0, 2, 2], [1.0, 1, 3, 3])
B = ([0.0, 0, 2, 2], [-1.0, -1, 3, 3])
C = ([0.0, 0, 2, 2], [4.0, 0, 6, 2])
D = ([0.0, 0, 4, 2], [0.0, 0, 2, 4])

# CIoU's aspect term for D: v = 4/pi^2 (atan(2/4) - atan(4/2))^2, alpha = v / (1 - 1/3 + v)
V_D = 4 / math.pi**2 * (math.atan(0.5) - math.atan(2.0)) ** 2
ALPHA_D = V_D / (1 - 1 / 3 + V_D)

HAND_VALUES = [
    # linear IoU: 1 - IoU
    ("iou", L.iou_loss, {}, A, 6 / 7),
    ("iou", L.iou_loss, {}, C, 1.0),
    # UnitBox: -ln IoU; disjoint -> -ln(eps)
    ("log_iou", L.log_iou_loss, {}, A, math.log(7)),
    ("log_iou", L.log_iou_loss, {}, C, -math.log(EPS)),
    # GIoU: 1 - IoU + (|C| - |U|) / |C|
    ("giou", L.giou_loss, {}, A, 1 - 1 / 7 + 2 / 9),  # = 68/63
    ("giou", L.giou_loss, {}, B, 3 / 4),  # enclosing box = target: no penalty
    ("giou", L.giou_loss, {}, C, 1 + 4 / 12),
    ("giou", L.giou_loss, {}, D, 2 / 3 + 4 / 16),
    # DIoU: 1 - IoU + rho^2 / c^2
    ("diou", L.diou_loss, {}, A, 1 - 1 / 7 + 2 / 18),  # = 61/63
    ("diou", L.diou_loss, {}, B, 3 / 4),
    ("diou", L.diou_loss, {}, C, 1 + 16 / 40),
    ("diou", L.diou_loss, {}, D, 2 / 3 + 2 / 32),
    # CIoU: DIoU + alpha v; v = 0 for A, B, C (same aspect ratios)
    ("ciou", L.ciou_loss, {}, A, 61 / 63),
    ("ciou", L.ciou_loss, {}, D, 2 / 3 + 2 / 32 + ALPHA_D * V_D),
    # EIoU: 1 - IoU + rho^2/c^2 + (w - w_gt)^2 / C_w^2 + (h - h_gt)^2 / C_h^2
    ("eiou", L.eiou_loss, {}, A, 61 / 63),  # same sizes: = DIoU
    ("eiou", L.eiou_loss, {}, B, 3 / 4 + 4 / 16 + 4 / 16),  # = 5/4
    ("eiou", L.eiou_loss, {}, C, 1.4),
    ("eiou", L.eiou_loss, {}, D, 2 / 3 + 2 / 32 + 4 / 16 + 4 / 16),
    # Focal-EIoU: IoU^0.5 * EIoU
    ("focal_eiou", L.focal_eiou_loss, {}, A, (1 / 7) ** 0.5 * 61 / 63),
    ("focal_eiou", L.focal_eiou_loss, {}, B, 0.5 * 5 / 4),
    ("focal_eiou", L.focal_eiou_loss, {}, C, 0.0),
    # alpha-IoU, alpha 3: 1 - IoU^3 + penalty^3
    ("alpha_iou", L.alpha_iou_loss, {"base": "iou"}, A, 1 - 1 / 343),
    ("alpha_giou", L.alpha_iou_loss, {"base": "giou"}, A, 1 - 1 / 343 + (2 / 9) ** 3),
    ("alpha_diou", L.alpha_iou_loss, {"base": "diou"}, A, 1 - 1 / 343 + (1 / 9) ** 3),
    ("alpha_ciou", L.alpha_iou_loss, {"base": "ciou"}, D, 1 - 1 / 27 + (1 / 16) ** 3 + (ALPHA_D * V_D) ** 3),
    ("alpha_ciou_a2", L.alpha_iou_loss, {"base": "ciou", "alpha": 2.0}, C, 1 + 0.4**2),
    # rising-gradient IoU (beta 0.95): 1 - IoU^2 / beta below beta
    ("rising_gradient_iou", L.rising_gradient_iou_loss, {}, A, 1 - (1 / 49) / 0.95),
    ("rising_gradient_iou", L.rising_gradient_iou_loss, {}, B, 1 - (1 / 16) / 0.95),
    ("rising_gradient_iou", L.rising_gradient_iou_loss, {}, C, 1.0),
    # SIoU = 1 - IoU + (Delta + Omega) / 2
    # A: 45 degrees: Lambda = 1, gamma = 1, rho_x = rho_y = 1/9, Delta = 2 (1 - e^-1/9), Omega = 0
    ("siou", L.siou_loss, {}, A, 6 / 7 + (1 - math.exp(-1 / 9))),
    # B: rho = 0 -> Delta = 0; omega_w = omega_h = |2 - 4| / 4 = 1/2, Omega = 2 (1 - e^-1/2)^4
    ("siou", L.siou_loss, {}, B, 3 / 4 + (1 - math.exp(-0.5)) ** 4),
    # C: on the x axis: Lambda = 0, gamma = 2, rho_x = 16/36, rho_y = 0: Delta = 1 - e^(-8/9)
    ("siou", L.siou_loss, {}, C, 1 + (1 - math.exp(-8 / 9)) / 2),
    # Wise-IoU v1: exp(rho^2 / (W_g^2 + H_g^2)) (1 - IoU)
    ("wiou_v1", L.wise_iou_loss, {"version": 1}, A, math.exp(2 / 18) * 6 / 7),
    ("wiou_v1", L.wise_iou_loss, {"version": 1}, C, math.exp(16 / 40)),
    # Wise-IoU v3 with running mean 6/7 (= L_IoU): beta = 1, r = 1 / (3 * 1.9^-2) = 1.9^2 / 3
    ("wiou_v3", L.wise_iou_loss, {"version": 3, "iou_loss_mean": 6 / 7}, A, 1.9**2 / 3 * math.exp(2 / 18) * 6 / 7),
    # MPDIoU in a 10 x 10 image (w^2 + h^2 = 200): 1 - IoU + (d_1^2 + d_2^2) / 200
    ("mpdiou", L.mpdiou_loss, {"image_size": torch.tensor([10.0, 10.0])}, A, 6 / 7 + (2 + 2) / 200),
    ("mpdiou", L.mpdiou_loss, {"image_size": torch.tensor([10.0, 10.0])}, C, 1 + (16 + 16) / 200),
    # Shape-IoU, scale 0 (ww = hh = 1): A: distance (1 + 1) / 18, same sizes; B: no distance, omega = 1/2 on both axes
    ("shape_iou", L.shape_iou_loss, {}, A, 6 / 7 + 2 / 18),
    ("shape_iou", L.shape_iou_loss, {}, B, 3 / 4 + (1 - math.exp(-0.5)) ** 4),
    # scale 1 on D (GT 2 x 4): ww = 4/6, hh = 8/6; distance (hh 1 + ww 1) / 32 = 1/16;
    # omega_w = hh |4 - 2| / 4 = 2/3, omega_h = ww |2 - 4| / 4 = 1/3
    ("shape_iou", L.shape_iou_loss, {"scale": 1.0}, D,
     2 / 3 + 1 / 16 + ((1 - math.exp(-2 / 3)) ** 4 + (1 - math.exp(-1 / 3)) ** 4) / 2),
]


def _pair(case):
    return torch.tensor([case[0]]), torch.tensor([case[1]])


@pytest.mark.parametrize(
    "name,fn,kwargs,case,expected", HAND_VALUES, ids=[f"{h[0]}-{i}" for i, h in enumerate(HAND_VALUES)],
)
def test_hand_values(name, fn, kwargs, case, expected):
    pred, target = _pair(case)
    value = fn(pred, target, **kwargs)
    assert value.shape == (1,) and value.dtype == torch.float32
    assert value.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def _random_pairs(n: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Overlapping, nested and disjoint pairs of boxes with positive sizes."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 10
    wh = torch.rand(n, 2, generator=g) * 5 + 0.2
    pred = torch.cat([xy, xy + wh], -1)
    shift = torch.randn(n, 2, generator=g) * 2
    scale = torch.rand(n, 2, generator=g) * 2 + 0.3
    txy = xy + shift
    target = torch.cat([txy, txy + wh * scale], -1)
    return pred, target


@pytest.mark.parametrize(
    "ours,theirs",
    [
        (L.giou_loss, generalized_box_iou_loss),
        (L.diou_loss, distance_box_iou_loss),
        (L.ciou_loss, complete_box_iou_loss),
    ],
)
def test_agrees_with_torchvision(ours, theirs):
    pred, target = _random_pairs()
    assert (L.iou(pred, target) == 0).any() and (L.iou(pred, target) > 0.5).any()  # the sample covers both regimes
    ours_pred = pred.clone().requires_grad_()
    theirs_pred = pred.clone().requires_grad_()
    value, reference = ours(ours_pred, target), theirs(theirs_pred, target, reduction="none")
    torch.testing.assert_close(value, reference, atol=1e-4, rtol=1e-4)
    value.sum().backward()
    reference.sum().backward()
    torch.testing.assert_close(ours_pred.grad, theirs_pred.grad, atol=1e-4, rtol=1e-3)


def _grad(fn, pred, target, **kwargs) -> torch.Tensor:
    pred = pred.clone().float().requires_grad_()
    fn(pred, target, **kwargs).sum().backward()
    return pred.grad


def test_iou_loss_has_no_gradient_for_disjoint_boxes_but_giou_and_diou_do():
    pred, target = _pair(C)
    for fn in (L.iou_loss, L.log_iou_loss, L.rising_gradient_iou_loss):
        assert torch.count_nonzero(_grad(fn, pred, target)) == 0
    for fn in (L.giou_loss, L.diou_loss, L.ciou_loss, L.eiou_loss, L.siou_loss):
        grad = _grad(fn, pred, target)
        assert grad.abs().sum() > 1e-3
        # translating the predicted box towards the target (to +x) lowers the loss
        assert grad[0, 0] + grad[0, 2] < 0


def test_giou_equals_iou_loss_for_nested_boxes_while_diou_sees_the_centre():
    target = torch.tensor([[0.0, 0, 10, 10], [0.0, 0, 10, 10]])
    pred = torch.tensor([[4.0, 4, 6, 6], [0.0, 0, 2, 2]])  # same size, centred vs in the corner
    giou, iou_loss, diou = L.giou_loss(pred, target), L.iou_loss(pred, target), L.diou_loss(pred, target)
    torch.testing.assert_close(giou, iou_loss, atol=1e-6, rtol=0)
    assert giou[0] == pytest.approx(giou[1].item(), abs=1e-6)  # GIoU cannot tell the two apart
    assert diou[1] > diou[0] + 0.1  # DIoU: rho^2/c^2 = 32/200 for the corner box, 0 for the centred one
    assert diou[1].item() == pytest.approx(1 - 4 / 100 + 32 / 200, rel=1e-5)


def test_ciou_equals_diou_when_aspect_ratios_match():
    pred, target = _random_pairs(64, seed=1)
    # rescale the target to the predicted box's aspect ratio
    pw, ph = pred[:, 2] - pred[:, 0], pred[:, 3] - pred[:, 1]
    tw = target[:, 2] - target[:, 0]
    same_aspect = torch.stack([target[:, 0], target[:, 1], target[:, 2], target[:, 1] + tw * ph / pw], -1)
    torch.testing.assert_close(L.ciou_loss(pred, same_aspect), L.diou_loss(pred, same_aspect), atol=1e-5, rtol=0)
    # ... and not when they differ (pair D: 2:1 vs 1:2)
    pred_d, target_d = _pair(D)
    assert L.ciou_loss(pred_d, target_d) > L.diou_loss(pred_d, target_d) + 0.03  # alpha v = 0.034


def test_eiou_penalises_width_and_height_differences_directly():
    # concentric boxes of the same aspect ratio: CIoU's v and rho vanish, EIoU still sees dw, dh
    target = torch.tensor([[0.0, 0, 8, 4]])
    smaller = torch.tensor([[2.0, 1, 6, 3]])  # 4 x 2, centred
    base = L.iou_loss(smaller, target)
    torch.testing.assert_close(L.ciou_loss(smaller, target), base, atol=1e-6, rtol=0)
    # (4 - 8)^2 / 8^2 + (2 - 4)^2 / 4^2 = 1/4 + 1/4
    assert (L.eiou_loss(smaller, target) - base).item() == pytest.approx(0.5, rel=1e-5)
    # and its gradient pulls the width outwards harder than CIoU's
    g_eiou, g_ciou = _grad(L.eiou_loss, smaller, target), _grad(L.ciou_loss, smaller, target)
    assert g_eiou[0, 2] < g_ciou[0, 2] < 0 and g_eiou[0, 0] > g_ciou[0, 0] > 0


@pytest.mark.parametrize(
    "base,reference", [("iou", L.iou_loss), ("giou", L.giou_loss), ("diou", L.diou_loss), ("ciou", L.ciou_loss)],
)
def test_alpha_iou_with_alpha_one_is_its_base(base, reference):
    pred, target = _random_pairs(64, seed=2)
    torch.testing.assert_close(L.alpha_iou_loss(pred, target, alpha=1.0, base=base), reference(pred, target))
    torch.testing.assert_close(
        _grad(L.alpha_iou_loss, pred, target, alpha=1.0, base=base), _grad(reference, pred, target),
    )


def test_alpha_iou_upweights_high_iou_pairs():
    # relative weight L_alpha / L_1 = (1 - IoU^3) / (1 - IoU) = 1 + IoU + IoU^2 grows with IoU
    target = torch.tensor([[0.0, 0, 10, 10]] * 2)
    pred = torch.tensor([[1.0, 0, 11, 10], [6.0, 0, 16, 10]])  # IoU 9/11 and 4/16
    ratio = L.alpha_iou_loss(pred, target, 3.0, "iou") / L.iou_loss(pred, target)
    for r, value in zip(ratio.tolist(), [9 / 11, 4 / 16]):
        assert r == pytest.approx(1 + value + value**2, rel=1e-5)
    assert ratio[0] > ratio[1]


def test_focal_eiou_downweights_low_iou_pairs():
    target = torch.tensor([[0.0, 0, 10, 10]] * 2)
    pred = torch.tensor([[1.0, 0, 11, 10], [6.0, 0, 16, 10]])  # IoU 9/11 and 1/4
    ratio = L.focal_eiou_loss(pred, target) / L.eiou_loss(pred, target)
    torch.testing.assert_close(ratio, torch.tensor([(9 / 11) ** 0.5, 0.5]), atol=1e-5, rtol=0)
    # detached weight (default): the gradient is IoU^0.5 times EIoU's
    torch.testing.assert_close(
        _grad(L.focal_eiou_loss, pred, target), _grad(L.eiou_loss, pred, target) * ratio.detach()[:, None],
    )
    # x-translation gradient (dL/dx1 + dL/dx2): the predictions sit to the right of the target, so descending
    # must move them left (> 0). Detached: true for both. Through the weight: for the IoU = 1/4 < 1/3 pair the
    # gradient pushes the box away from the target, the reason the weight is detached by default.
    detached = _grad(L.focal_eiou_loss, pred, target)
    through = _grad(L.focal_eiou_loss, pred, target, detach_weight=False)
    assert (detached[:, 0] + detached[:, 2] > 0).all()
    assert through[0, 0] + through[0, 2] > 0 and through[1, 0] + through[1, 2] < 0


def test_rising_gradient_iou_peaks_at_beta():
    beta = 0.95
    iou_values = torch.linspace(0.0, 1.0, 1001, requires_grad=True)
    L.rising_gradient_iou_loss_from_iou(iou_values, beta).sum().backward()
    magnitude = iou_values.grad.abs()
    peak = iou_values[magnitude.argmax()].item()
    assert abs(peak - beta) <= 0.002
    below, above = magnitude[iou_values.detach() <= beta], magnitude[iou_values.detach() > beta]
    assert (below.diff() >= 0).all() and (above.diff() <= 0).all()  # rising, then falling
    assert magnitude[-1] == 0 and magnitude[0] == 0
    # continuous at beta, L(0) = 1 and L(1) = 0 like 1 - IoU
    values = L.rising_gradient_iou_loss_from_iou(torch.tensor([0.0, beta - 1e-6, beta + 1e-6, 1.0]), beta)
    assert values[0] == 1 and values[-1] == 0 and values[1].item() == pytest.approx(values[2].item(), abs=1e-5)
    # on boxes: relative to 1 - IoU, the rising-gradient loss gives a high-IoU pair more gradient than a low-IoU one
    target = torch.tensor([[0.0, 0, 10, 10]] * 2)
    pred = torch.tensor([[0.5, 0, 10.5, 10], [6.0, 0, 16, 10]])  # IoU 0.905, 0.25
    gain = _grad(L.rising_gradient_iou_loss, pred, target).norm(dim=-1) / _grad(L.iou_loss, pred, target).norm(dim=-1)
    assert gain[0] > 1.5 and gain[1] < 0.6


def _paper_angle_cost(dx: float, dy: float) -> float:
    """SIoU's angle cost as written in the paper: Lambda = 1 - 2 sin^2(arcsin(x) - pi/4), x = sin(alpha) = |dy|/sigma,
    switching to beta = pi/2 - alpha (x = |dx|/sigma) when alpha > pi/4."""
    sigma = math.hypot(dx, dy)
    alpha = math.asin(abs(dy) / sigma)
    x = math.sin(alpha) if alpha <= math.pi / 4 else math.sin(math.pi / 2 - alpha)
    return 1 - 2 * math.sin(math.asin(x) - math.pi / 4) ** 2


@pytest.mark.parametrize("dx,dy", [(3.0, 0.5), (1.0, 1.0), (0.3, 2.0), (-2.0, 1.5), (2.5, 0.0)])
def test_siou_matches_the_papers_angle_cost(dx, dy):
    target = torch.tensor([[0.0, 0, 4, 3]])
    pred = target - torch.tensor([dx, dy, dx, dy])  # same size: shape cost 0; target centre - pred centre = (dx, dy)
    t = pair_terms(pred, target, EPS)
    gamma = 2 - _paper_angle_cost(dx, dy)
    rho_x, rho_y = dx**2 / t["enclose_w"].item() ** 2, dy**2 / t["enclose_h"].item() ** 2
    expected = 1 - t["iou"].item() + ((1 - math.exp(-gamma * rho_x)) + (1 - math.exp(-gamma * rho_y))) / 2
    assert L.siou_loss(pred, target).item() == pytest.approx(expected, rel=1e-5)


def test_wiou_v1_detaches_the_enclosing_box_denominator():
    pred, target = _pair(A)
    pred = pred.requires_grad_()
    L.wise_iou_loss(pred, target, version=1).sum().backward()
    # the same expression with W_g^2 + H_g^2 frozen at its value (18) by hand
    frozen = pred.detach().clone().requires_grad_()
    centre = (frozen[:, :2] + frozen[:, 2:]) / 2 - (target[:, :2] + target[:, 2:]) / 2
    (torch.exp((centre**2).sum(-1) / 18.0) * (1 - L.iou(frozen, target))).sum().backward()
    torch.testing.assert_close(pred.grad, frozen.grad)
    # ... which is not the full derivative (the enclosing box does depend on the prediction)
    full = pred.detach().clone().requires_grad_()
    t = pair_terms(full, target, EPS)
    (torch.exp(t["centre_dist2"] / (t["enclose_w"] ** 2 + t["enclose_h"] ** 2)) * (1 - t["iou"])).sum().backward()
    assert not torch.allclose(pred.grad, full.grad)


def test_wiou_v3_focusing_is_non_monotonic_and_one_at_delta():
    alpha, delta = 1.9, 3.0
    pred, target = _pair(A)
    loss_iou = L.iou_loss(pred, target).item()
    v1 = L.wise_iou_loss(pred, target, version=1)
    gains = []
    for beta in (0.25, 1.0, 1 / math.log(alpha), 3.0, 6.0):
        v3 = L.wise_iou_loss(pred, target, version=3, iou_loss_mean=loss_iou / beta, alpha=alpha, delta=delta)
        gains.append((v3 / v1).item())
        assert gains[-1] == pytest.approx(beta / (delta * alpha ** (beta - delta)), rel=1e-5)
    assert gains[3] == pytest.approx(1.0, rel=1e-5)  # r(beta = delta) = 1
    peak = gains.index(max(gains))
    assert peak == 2 and gains[0] < gains[1] < gains[2] and gains[2] > gains[3] > gains[4]


def test_wiou_running_mean_updates_only_in_training():
    module = L.WIoULoss(version=3, momentum=0.1)
    pred = torch.tensor([A[0], B[0]])
    target = torch.tensor([A[1], B[1]])
    batch_mean = L.iou_loss(pred, target).mean().item()  # (6/7 + 3/4) / 2
    module.train()
    loss = module(pred, target)
    assert module.iou_loss_mean.item() == pytest.approx(0.9 * 1.0 + 0.1 * batch_mean, rel=1e-6)
    expected = L.wise_iou_loss(pred, target, version=3, iou_loss_mean=0.9 + 0.1 * batch_mean)
    torch.testing.assert_close(loss, expected)
    module.eval()
    before = module.iou_loss_mean.clone()
    module(pred, target)
    module.train()
    module(pred[:0], target[:0])  # empty batch: no update, no NaN
    assert module.iou_loss_mean == before and torch.isfinite(module.iou_loss_mean)
    assert "iou_loss_mean" in module.state_dict()


BOX_MODULES = {
    "iou": L.IoULoss(), "log_iou": L.IoULoss(mode="log"), "giou": L.GIoULoss(), "diou": L.DIoULoss(),
    "ciou": L.CIoULoss(), "eiou": L.EIoULoss(), "focal_eiou": L.FocalEIoULoss(),
    "focal_eiou_through": L.FocalEIoULoss(detach_weight=False),
    "alpha_iou": L.AlphaIoULoss(base="iou"), "alpha_giou": L.AlphaIoULoss(base="giou"),
    "alpha_diou": L.AlphaIoULoss(base="diou"), "alpha_ciou": L.AlphaIoULoss(), "alpha_ciou_half": L.AlphaIoULoss(0.5),
    "rising_gradient_iou": L.RisingGradientIoULoss(), "siou": L.SIoULoss(), "wiou_v1": L.WIoULoss(version=1),
    "wiou_v2": L.WIoULoss(version=2),
    "wiou_v3": L.WIoULoss(version=3),
    "mpdiou": L.MPDIoULoss(), "shape_iou": L.ShapeIoULoss(), "shape_iou_scale1": L.ShapeIoULoss(scale=1.0),
    "inner_ciou": L.InnerIoULoss(L.CIoULoss()), "inner_iou_large": L.InnerIoULoss(L.IoULoss(), ratio=1.3),
    "inner_mpdiou": L.InnerIoULoss(L.MPDIoULoss()), "focaler_ciou": L.FocalerIoULoss(L.CIoULoss()),
    "focaler_siou": L.FocalerIoULoss(L.SIoULoss(), d=0.1, u=0.9),
    "nwd": G.NWDLoss(), "nwd_small": G.NWDLoss(constant=1.0),
    "probiou": G.ProbIoULoss(), "probiou_l2": G.ProbIoULoss("l2"),
}


def _call(module, pred, target):
    """A box module on (pred, target), with a 10 x 10 image for the losses that need the image size."""
    if module.needs_image_size:
        return module(pred, target, torch.tensor([10.0, 10.0]))
    return module(pred, target)

DEGENERATE = torch.tensor([
    # pred, target
    [[1.0, 1, 3, 3], [1.0, 1, 3, 3]],  # coincident
    [[1.0, 1, 2, 2], [0.0, 0, 3, 3]],  # nested
    [[0.0, 0, 3, 3], [1.0, 1, 2, 2]],  # nested the other way
    [[0.0, 0, 1, 1], [5.0, 5, 6, 7]],  # disjoint
    [[2.0, 2, 2, 2], [1.0, 1, 3, 3]],  # zero-area prediction inside the target
    [[1.0, 1, 3, 3], [2.0, 2, 2, 2]],  # zero-area target
    [[2.0, 2, 2, 2], [2.0, 2, 2, 2]],  # both zero-area and coincident
    [[1.0, 1, 1, 4], [0.0, 0, 3, 3]],  # zero width
    [[0.0, 0, 1, 1], [1.0, 0, 2, 1]],  # touching edges
]).unbind(1)


@pytest.mark.parametrize("name", list(BOX_MODULES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_finite_value_and_gradient_in_degenerate_cases(name, dtype):
    module = BOX_MODULES[name].train()
    pred, target = DEGENERATE[0].clone(), DEGENERATE[1].clone()
    if dtype == torch.float16 and "ciou" in name:
        # CIoU's aspect term (YOLOv8's eps placement, kept on purpose) has d atan(w / (h + eps)) / dw = 1 / eps at a
        # point box w = h = 0: a finite 1.3e6 in float32 (checked by the float32 case), beyond float16's range.
        keep = torch.ones(len(pred), dtype=torch.bool)
        keep[4] = False
        pred, target = pred[keep], target[keep]
    pred = pred.to(dtype).requires_grad_()
    target = target.to(dtype)
    loss = _call(module, pred, target)
    assert loss.shape == (len(pred),) and loss.dtype == torch.float32
    assert torch.isfinite(loss).all(), loss
    loss.sum().backward()
    assert pred.grad.dtype == dtype and torch.isfinite(pred.grad.float()).all(), pred.grad
    # a perfect prediction (coincident, non-degenerate) costs ~nothing
    assert loss[0].abs() < 1e-5


@pytest.mark.parametrize("name", list(BOX_MODULES))
def test_loss_is_zero_at_the_target_and_positive_elsewhere(name):
    module = BOX_MODULES[name].eval()
    pred, target = _random_pairs(32, seed=3)
    value, overlapping = _call(module, pred, target), L.iou(pred, target) > 0
    assert overlapping.any() and not overlapping.all()
    assert (value[overlapping] > 0).all() and (value >= 0).all()
    if not name.startswith("focal_eiou"):  # Focal-EIoU's IoU^gamma weight is 0 for disjoint boxes
        assert (value > 0).all()
    assert _call(module, target, target).abs().max() < 1e-5
