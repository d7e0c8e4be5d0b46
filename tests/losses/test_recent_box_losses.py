"""The box losses after 2022 (MPDIoU, Shape-IoU, Inner-IoU, Focaler-IoU in iou.py; NWD, ProbIoU in gaussian.py):
hand values the shared table cannot hold, agreement with each paper's own formulation written out here (in the
papers' centre-size form), and the behaviour each paper claims. Degenerate boxes in float32/16/bf16 and the
zero-at-target check run for all of them in test_box_losses.py (BOX_MODULES)."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import box_iou

from detector.losses import gaussian as G
from detector.losses import iou as L

A = torch.tensor([[0.0, 0, 2, 2]]), torch.tensor([[1.0, 1, 3, 3]])  # IoU 1/7, centres 1 apart in x and y
B = torch.tensor([[0.0, 0, 2, 2]]), torch.tensor([[-1.0, -1, 3, 3]])  # nested, concentric, sizes 2 and 4
C = torch.tensor([[0.0, 0, 2, 2]]), torch.tensor([[4.0, 0, 6, 2]])  # disjoint, centres 4 apart in x
SQRT_EPS = math.sqrt(1e-7)  # the shift of the Gaussian losses' square roots (module docstring of gaussian.py)


def _random_pairs(n: int = 512, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Overlapping, nested and disjoint pairs, sizes 0.2 to 20 (aspect ratios up to 1:100)."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 20
    wh = torch.exp(torch.rand(n, 2, generator=g) * 4.6) * 0.2
    txy = xy + torch.randn(n, 2, generator=g) * 3
    twh = wh * torch.exp(torch.randn(n, 2, generator=g) * 0.5)
    return torch.cat([xy, xy + wh], -1), torch.cat([txy, txy + twh], -1)


def _cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    return torch.cat([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], -1).double()


# ----------------------------------------------------------------------------------------------------
# Hand values
# ----------------------------------------------------------------------------------------------------


def test_nwd_hand_values():
    # A: centre distance^2 = 2, same sizes: W_2 = sqrt(2). B: same centre, half-size difference 1 on both axes:
    # W_2 = sqrt(2) as well. C: W_2 = 4. With C = 2: L = 1 - exp(-W_2 / 2).
    for (pred, target), w2 in ((A, math.sqrt(2)), (B, math.sqrt(2)), (C, 4.0)):
        assert G.nwd_loss(pred, target, constant=2.0).item() == pytest.approx(1 - math.exp(-w2 / 2), abs=1e-4)


def test_probiou_hand_values():
    # A: variances 4/12 = 1/3 for both boxes: B_D = (1 / (1/3) + 1 / (1/3)) / 8 = 3/4, H_D = sqrt(1 - e^-3/4).
    # B: variances 1/3 and 4/3, mean 5/6, same centre: B_D = 2 * 1/2 ln((5/6) / sqrt(1/3 * 4/3)) = ln(5/4),
    #    H_D = sqrt(1 - 4/5) = sqrt(1/5).
    assert G.probiou_loss(*A, mode="l2").item() == pytest.approx(0.75, abs=1e-5)
    assert G.probiou_loss(*A).item() == pytest.approx(math.sqrt(1 - math.exp(-0.75)), abs=2 * SQRT_EPS)
    assert G.probiou_loss(*B, mode="l2").item() == pytest.approx(math.log(1.25), abs=1e-5)
    assert G.probiou_loss(*B).item() == pytest.approx(math.sqrt(0.2), abs=2 * SQRT_EPS)


def test_inner_and_focaler_hand_values():
    # Inner-CIoU, ratio 0.5, A: 1 - CIoU = 61/63; the auxiliary boxes [.5,.5,1.5,1.5] and [1.5,1.5,2.5,2.5] touch at
    # a corner: IoU_inner = 0, so L = 61/63 + 1/7 - 0 = 10/9.
    assert L.InnerIoULoss(L.CIoULoss(), ratio=0.5)(*A).item() == pytest.approx(10 / 9, rel=1e-5)
    # Inner-IoU, ratio 2, B: auxiliary boxes 4 x 4 inside 8 x 8, concentric: IoU_inner = 1/4 (= the IoU: nested
    # concentric boxes scale together).
    assert L.InnerIoULoss(L.IoULoss(), ratio=2.0)(*B).item() == pytest.approx(3 / 4, rel=1e-5)
    # Focaler over IoU, [d, u] = [0.1, 0.5], A: IoU_focaler = (1/7 - 0.1) / 0.4 = 3/28.
    assert L.FocalerIoULoss(L.IoULoss(), d=0.1, u=0.5)(*A).item() == pytest.approx(25 / 28, rel=1e-5)
    # Focaler over GIoU, default [0, 0.95], B: 1 - GIoU = 3/4, IoU_focaler = 0.25 / 0.95.
    assert L.FocalerIoULoss(L.GIoULoss())(*B).item() == pytest.approx(3 / 4 + 1 / 4 - 0.25 / 0.95, rel=1e-5)


# ----------------------------------------------------------------------------------------------------
# Agreement with the papers' formulations (float64, centre-size boxes, written from the papers' equations)
# ----------------------------------------------------------------------------------------------------


def _iou64(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return box_iou(pred.double(), target.double()).diagonal()


def test_mpdiou_matches_the_paper():
    # Ma & Xu (the paper's definition): d_1^2 = (x1_B - x1_A)^2 + (y1_B - y1_A)^2, d_2^2 likewise for (x2, y2);
    # MPDIoU = IoU - d_1^2 / (w^2 + h^2) - d_2^2 / (w^2 + h^2); L = 1 - MPDIoU, (w, h) the input image.
    pred, target = _random_pairs()
    width, height = 40.0, 30.0
    p, t = pred.double(), target.double()
    d1, d2 = ((p[:, :2] - t[:, :2]) ** 2).sum(-1), ((p[:, 2:] - t[:, 2:]) ** 2).sum(-1)
    reference = 1 - (_iou64(pred, target) - d1 / (width**2 + height**2) - d2 / (width**2 + height**2))
    value = L.MPDIoULoss()(pred, target, torch.tensor([width, height]))
    torch.testing.assert_close(value.double(), reference, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("scale", [0.0, 0.5, 1.0, 1.5])
def test_shape_iou_matches_the_paper(scale):
    # Zhang & Zhang (the paper's definition): ww = 2 w_gt^s / (w_gt^s + h_gt^s), hh = 2 h_gt^s / (...);
    # distance = hh (x_c - x_c^gt)^2 / c^2 + ww (y_c - y_c^gt)^2 / c^2; omega_w = hh |w - w_gt| / max(w, w_gt),
    # omega_h = ww |h - h_gt| / max(h, h_gt); shape = sum (1 - e^-omega)^4; L = 1 - IoU + distance + shape / 2.
    pred, target = _random_pairs()
    (x, y, w, h), (xg, yg, wg, hg) = _cxcywh(pred).unbind(-1), _cxcywh(target).unbind(-1)
    ww, hh = 2 * wg**scale / (wg**scale + hg**scale), 2 * hg**scale / (wg**scale + hg**scale)
    enclose = torch.maximum(pred.double()[:, 2:], target.double()[:, 2:]) - torch.minimum(
        pred.double()[:, :2], target.double()[:, :2])
    c2 = (enclose**2).sum(-1)
    distance = (hh * (x - xg) ** 2 + ww * (y - yg) ** 2) / c2
    omega_w, omega_h = hh * (w - wg).abs() / torch.maximum(w, wg), ww * (h - hg).abs() / torch.maximum(h, hg)
    shape = (1 - torch.exp(-omega_w)) ** 4 + (1 - torch.exp(-omega_h)) ** 4
    reference = 1 - _iou64(pred, target) + distance + shape / 2
    torch.testing.assert_close(L.ShapeIoULoss(scale)(pred, target).double(), reference, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("ratio", [0.5, 0.7, 1.0, 1.3])
def test_inner_iou_matches_the_paper(ratio):
    # Zhang et al. (the paper's definition): the auxiliary box has the box's centre and ratio times its size;
    # L_Inner-IoU = 1 - IoU_inner, and L_Inner-X = L_X + IoU - IoU_inner for the other bases.
    pred, target = _random_pairs()

    def inner(boxes):
        x, y, w, h = _cxcywh(boxes).unbind(-1)
        return torch.stack([x - w * ratio / 2, y - h * ratio / 2, x + w * ratio / 2, y + h * ratio / 2], -1)

    iou_inner = box_iou(inner(pred), inner(target)).diagonal()
    torch.testing.assert_close(L.InnerIoULoss(L.IoULoss(), ratio)(pred, target).double(), 1 - iou_inner,
                               atol=1e-4, rtol=1e-4)
    reference = L.giou_loss(pred, target).double() + _iou64(pred, target) - iou_inner
    torch.testing.assert_close(L.InnerIoULoss(L.GIoULoss(), ratio)(pred, target).double(), reference,
                               atol=1e-4, rtol=1e-4)


def test_focaler_iou_matches_the_paper():
    # Zhang & Zhang (the paper's definition):
    # IoU_focaler = 0 if IoU < d, (IoU - d) / (u - d) if d <= IoU <= u, 1 if IoU > u;
    # L_Focaler-CIoU = L_CIoU + IoU - IoU_focaler.
    pred, target = _random_pairs()
    d, u = 0.2, 0.8
    overlap = _iou64(pred, target)
    focaler = torch.where(overlap < d, 0.0, torch.where(overlap > u, 1.0, (overlap - d) / (u - d)))
    reference = L.ciou_loss(pred, target).double() + overlap - focaler
    torch.testing.assert_close(L.FocalerIoULoss(L.CIoULoss(), d, u)(pred, target).double(), reference,
                               atol=1e-4, rtol=1e-4)


def test_nwd_matches_the_paper():
    # Wang et al. (the paper's definition): W_2^2 = ||[cx_a, cy_a, w_a/2, h_a/2]^T - [cx_b, cy_b, w_b/2, h_b/2]^T||_2^2,
    # NWD = exp(-sqrt(W_2^2) / C).
    pred, target = _random_pairs()
    a, b = _cxcywh(pred), _cxcywh(target)
    half = torch.tensor([1.0, 1.0, 0.5, 0.5], dtype=torch.float64)
    reference = torch.exp(-torch.linalg.vector_norm((a - b) * half, dim=-1) / 12.8)
    torch.testing.assert_close(G.nwd(pred, target).double(), reference, atol=SQRT_EPS / 12.8 + 1e-6, rtol=1e-5)


def test_probiou_matches_the_paper():
    # Llerena et al., the closed form for axis-aligned boxes (theta = 0, so c = 0): a = w^2/12, b = h^2/12,
    # B_D = 1/4 [(a1 + a2)(y1 - y2)^2 + (b1 + b2)(x1 - x2)^2] / [(a1 + a2)(b1 + b2)]
    #       + 1/2 ln[(a1 + a2)(b1 + b2) / (4 sqrt(a1 b1 a2 b2))],
    # H_D = sqrt(1 - exp(-B_D)), ProbIoU = 1 - H_D.
    pred, target = _random_pairs()
    (x1, y1, w1, h1), (x2, y2, w2, h2) = _cxcywh(pred).unbind(-1), _cxcywh(target).unbind(-1)
    a1, b1, a2, b2 = w1**2 / 12, h1**2 / 12, w2**2 / 12, h2**2 / 12
    bd = ((a1 + a2) * (y1 - y2) ** 2 + (b1 + b2) * (x1 - x2) ** 2) / ((a1 + a2) * (b1 + b2)) / 4 + 0.5 * torch.log(
        (a1 + a2) * (b1 + b2) / (4 * torch.sqrt(a1 * b1 * a2 * b2)))
    bd = bd.clamp(max=100)
    torch.testing.assert_close(G.probiou_loss(pred, target, "l2").double(), bd, atol=1e-3, rtol=1e-4)
    hd = torch.sqrt(1 - torch.exp(-bd))
    torch.testing.assert_close(G.probiou(pred, target).double(), 1 - hd, atol=2 * SQRT_EPS, rtol=1e-4)


# ----------------------------------------------------------------------------------------------------
# The papers' claims and the contracts
# ----------------------------------------------------------------------------------------------------


def test_mpdiou_is_scale_invariant_and_needs_the_image_size():
    """Scaling boxes and image together leaves MPDIoU unchanged (grid units and pixels give the same loss);
    without the image size the module refuses to guess."""
    pred, target = _random_pairs(64)
    image = torch.tensor([40.0, 30.0])
    torch.testing.assert_close(L.mpdiou_loss(pred * 8, target * 8, image * 8), L.mpdiou_loss(pred, target, image))
    with pytest.raises(ValueError, match="image size"):
        L.MPDIoULoss()(pred, target)


def test_mpdiou_tells_apart_same_iou_pairs_with_different_corners():
    """The paper's motivating case: same aspect ratio, same IoU and same centre distance, different size; the
    corner distances differ, so MPDIoU does (CIoU cannot tell them apart when they also share c)."""
    target = torch.tensor([[0.0, 0, 4, 4]])
    inside, outside = torch.tensor([[1.0, 1, 3, 3]]), torch.tensor([[-2.0, -2, 6, 6]])  # both IoU 1/4, same centre
    assert L.iou(inside, target).item() == pytest.approx(L.iou(outside, target).item())
    image = torch.tensor([16.0, 16.0])
    assert L.mpdiou_loss(inside, target, image).item() < L.mpdiou_loss(outside, target, image).item()


def test_shape_iou_weights_errors_along_the_gts_short_side_more():
    """For a wide GT (8 x 2) and scale 1, ww = 2 * 8 / 10 = 1.6 weights y-centre errors and hh = 0.4 x-centre errors:
    the ratio (y-shift distance term) / (x-shift distance term) is ww / hh = 4 times its value at scale 0 (same
    sizes, so no shape cost; the enclosing boxes differ between the two shifts, which the ratio cancels)."""
    wide = torch.tensor([[0.0, 0, 8, 2]])
    shift_x, shift_y = wide + torch.tensor([0.5, 0, 0.5, 0]), wide + torch.tensor([0, 0.5, 0, 0.5])

    def distance_ratio(scale):
        loss = L.ShapeIoULoss(scale)
        along_y = loss(shift_y, wide) - L.iou_loss(shift_y, wide)
        return (along_y / (loss(shift_x, wide) - L.iou_loss(shift_x, wide))).item()

    assert distance_ratio(1.0) == pytest.approx(4 * distance_ratio(0.0), rel=1e-4)


def test_inner_ratio_one_and_focaler_full_interval_give_the_base_loss():
    pred, target = _random_pairs(128)
    for base in (L.IoULoss(), L.GIoULoss(), L.DIoULoss(), L.CIoULoss(), L.EIoULoss(), L.SIoULoss(), L.ShapeIoULoss()):
        torch.testing.assert_close(L.InnerIoULoss(base, ratio=1.0)(pred, target), base(pred, target))
        torch.testing.assert_close(L.FocalerIoULoss(base, d=0.0, u=1.0)(pred, target), base(pred, target))
    image = torch.tensor([30.0, 30.0])
    torch.testing.assert_close(L.InnerIoULoss(L.MPDIoULoss(), 1.0)(pred, target, image),
                               L.MPDIoULoss()(pred, target, image))


def test_inner_ratio_steers_the_gradient():
    """ratio < 1 gives a high-IoU pair a larger gradient than the base; ratio > 1 gives a disjoint pair (no IoU
    gradient for 1 - IoU) a gradient."""
    def grad_norm(loss, pred, target):
        pred = pred.clone().requires_grad_()
        loss(pred, target).sum().backward()
        return pred.grad.norm().item()

    target = torch.tensor([[0.0, 0, 4, 4]])
    close = torch.tensor([[0.2, 0.2, 4.2, 4.2]])  # IoU 0.82
    assert grad_norm(L.InnerIoULoss(L.IoULoss(), 0.7), close, target) > 1.2 * grad_norm(L.IoULoss(), close, target)
    apart = torch.tensor([[4.5, 0.0, 8.5, 4]])  # disjoint by 0.5
    assert grad_norm(L.IoULoss(), apart, target) == 0
    assert grad_norm(L.InnerIoULoss(L.IoULoss(), 1.5), apart, target) > 0


def test_focaler_ignores_pairs_outside_the_interval():
    """Below d and above u the IoU term has no gradient: only the base's penalty is left."""
    target = torch.tensor([[0.0, 0, 4, 4]])
    for pred in (torch.tensor([[3.0, 0, 7, 4]]), torch.tensor([[0.05, 0, 4.05, 4]])):  # IoU 0.14 and 0.98
        pred = pred.requires_grad_()
        L.FocalerIoULoss(L.IoULoss(), d=0.2, u=0.95)(pred, target).sum().backward()
        assert pred.grad.abs().max() == 0


def test_wrappers_refuse_bases_that_are_not_linear_in_iou():
    for base in (L.IoULoss(mode="log"), L.AlphaIoULoss(), L.WIoULoss(), G.NWDLoss(), L.InnerIoULoss(L.CIoULoss())):
        with pytest.raises(ValueError, match="1 - IoU \\+ penalty"):
            L.InnerIoULoss(base)
        with pytest.raises(ValueError, match="1 - IoU \\+ penalty"):
            L.FocalerIoULoss(base)
    with pytest.raises(ValueError, match="0 <= d < u <= 1"):
        L.FocalerIoULoss(L.CIoULoss(), d=0.9, u=0.5)
    with pytest.raises(ValueError, match="ratio"):
        L.InnerIoULoss(L.CIoULoss(), ratio=0.0)


def test_nwd_and_probiou_see_disjoint_tiny_boxes():
    """The tiny-object argument of both papers: for 2 x 2 boxes a few pixels apart the IoU is 0 whatever the
    distance, while NWD and ProbIoU keep decreasing with it (and so keep a gradient)."""
    target = torch.tensor([[0.0, 0, 2, 2]])
    shifts = torch.tensor([3.0, 4.0, 6.0])
    preds = target + torch.stack([shifts, torch.zeros(3), shifts, torch.zeros(3)], -1)
    assert (L.iou(preds, target.expand(3, 4)) == 0).all()
    for similarity in (G.nwd, G.probiou):
        values = similarity(preds, target.expand(3, 4))
        assert (values[:-1] > values[1:]).all()
    pred = preds[:1].clone().requires_grad_()
    G.nwd_loss(pred, target).sum().backward()
    assert pred.grad.abs().sum() > 0


def test_nwd_constant_is_in_the_units_of_the_boxes():
    """Boxes in pixels with C = 12.8 and the same boxes in strides of 8 with C = 1.6 give the same NWD."""
    pred, target = _random_pairs(64)
    # up to the sqrt(eps) shift, which is not scaled with the boxes
    torch.testing.assert_close(G.nwd(pred * 8, target * 8, 12.8), G.nwd(pred, target, 1.6), atol=SQRT_EPS / 1.6, rtol=0)
    with pytest.raises(ValueError, match="constant"):
        G.NWDLoss(constant=0.0)


def test_probiou_modes_agree_where_they_should():
    """l2 = -ln(1 - l1^2) (B_D from H_D); an unknown mode is refused."""
    pred, target = _random_pairs(64)
    l1, l2 = G.probiou_loss(pred, target, "l1").double(), G.probiou_loss(pred, target, "l2").double()
    keep = l2 < 10  # -ln(1 - l1^2) loses precision where l1 -> 1
    torch.testing.assert_close(-torch.log1p(-(l1[keep] + SQRT_EPS) ** 2), l2[keep], atol=5e-3, rtol=5e-3)
    with pytest.raises(ValueError, match="mode"):
        G.ProbIoULoss("l3")


def _probiou_authors(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """The authors' form for axis-aligned boxes, with their eps: in the denominators and the logarithm, B_D clamped to
    [eps, 100], l1 = sqrt(1 - exp(-B_D) + eps), l2 = -ln(1 - l1^2 + eps)."""
    (x1, y1, w1, h1), (x2, y2, w2, h2) = _cxcywh(pred).double().unbind(-1), _cxcywh(target).double().unbind(-1)
    a1, b1, a2, b2 = w1**2 / 12, h1**2 / 12, w2**2 / 12, h2**2 / 12
    t1 = ((a1 + a2) * (y1 - y2) ** 2 + (b1 + b2) * (x1 - x2) ** 2) / ((a1 + a2) * (b1 + b2) + eps) / 4
    t3 = 0.5 * torch.log((a1 + a2) * (b1 + b2) / (4 * torch.sqrt(a1 * b1 * a2 * b2) + eps) + eps)
    l1 = torch.sqrt(1 - torch.exp(-(t1 + t3).clamp(eps, 100)) + eps)
    return l1, -torch.log(1 - l1**2 + eps)


def test_probiou_differs_from_the_authors_eps_as_documented():
    """docs/losses.md: at a perfect match the authors' l1 is sqrt(1 - exp(-1e-3) + 1e-3) = 0.0447 and l2 1e-3 (here 0);
    with both boxes' sides >= 2 units l1 differs by at most that; below 1 unit their eps dominates B_D."""
    pred, target = _random_pairs(4096)
    l1, l2 = _probiou_authors(target, target)
    assert float((l1 - G.probiou_loss(target, target, "l1").double()).abs().max()) == pytest.approx(0.04472, abs=1e-5)
    assert float((l2 - G.probiou_loss(target, target, "l2").double()).abs().max()) == pytest.approx(1e-3, abs=1e-6)
    sides = torch.cat([pred[:, 2:] - pred[:, :2], target[:, 2:] - target[:, :2]], 1).min(1).values
    large, small = sides >= 2, sides < 1
    l1, l2 = _probiou_authors(pred[large], target[large])
    assert float((G.probiou_loss(pred[large], target[large], "l1").double() - l1).abs().max()) < 0.0448
    l1, _ = _probiou_authors(pred[small], target[small])
    assert float((G.probiou_loss(pred[small], target[small], "l1").double() - l1).abs().max()) > 0.5


def test_nwd_on_the_yolov8_head_is_12_8_px_only_at_stride_8():
    """docs/losses.md: C = 1.6 grid units is 1.6 x stride px, 12.8 / 25.6 / 51.2 px at strides 8 / 16 / 32. Two 8-px
    boxes 4 px apart: 1 - NWD = 0.268 at stride 8 (the paper's C), 0.145 at 16, 0.075 at 32."""
    pred, target = torch.tensor([[0.0, 0, 8, 8]]), torch.tensor([[4.0, 0, 12, 8]])
    losses = [G.NWDLoss(1.6)(pred / stride, target / stride).item() for stride in (8, 16, 32)]
    expected = [1 - math.exp(-4 / (1.6 * stride)) for stride in (8, 16, 32)]
    assert losses == pytest.approx(expected, abs=SQRT_EPS / 1.6)  # the sqrt(eps) shift, in grid units
    assert [round(v, 3) for v in expected] == [0.268, 0.145, 0.075]
    assert G.nwd_loss(pred, target, constant=12.8).item() == pytest.approx(losses[0], abs=SQRT_EPS / 1.6)
