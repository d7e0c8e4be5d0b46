"""IoU family of box similarities and losses, element-wise on matched pairs of xyxy boxes.

All functions take `pred` and `target` of shape (..., 4) (x1, y1, x2, y2), compute in float32 whatever
the input dtype, and return (...,) unreduced. Similarities (`iou`, `giou`, `diou`, `ciou`) lie in
[-1, 1]; every `*_loss` function is 0 for a perfect prediction.

eps placement (kept from the YOLOv8 reference so that CIoU matches it numerically): `eps` is added to
both heights (so w/h never divides by zero), to the union, to the enclosing area and to the enclosing
diagonal. Every extra denominator introduced by the newer losses (EIoU's C_w^2 and C_h^2, SIoU's
centre distance and max(w, w_gt), Wise-IoU's W_g^2 + H_g^2) also gets `+ eps`. With this, value and
gradient stay finite for coincident, nested, disjoint and zero-area boxes.

The geometry of a pair is computed once, in `detector.boxes.pair_terms`; each loss is a few lines on top of it.
"""

from __future__ import annotations

import math

import torch

from detector.boxes import pair_terms
from detector.losses.base import BoxLoss

ALPHA_IOU_BASES = ("iou", "giou", "diou", "ciou")


# ----------------------------------------------------------------------------------------------------
# Similarities and their penalty terms
# ----------------------------------------------------------------------------------------------------


def _giou_penalty(t: dict[str, torch.Tensor], eps: float) -> torch.Tensor:
    """|C \\ (A ∪ B)| / |C|, C the smallest enclosing box."""
    enclose_area = t["enclose_w"] * t["enclose_h"] + eps
    return (enclose_area - t["union"]) / enclose_area


def _diou_penalty(t: dict[str, torch.Tensor]) -> torch.Tensor:
    """rho^2(b, b_gt) / c^2: squared centre distance over the squared enclosing-box diagonal."""
    return t["centre_dist2"] / t["enclose_diag2"]


def _ciou_aspect_term(t: dict[str, torch.Tensor], eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """CIoU's (alpha, v): v = 4/pi^2 (atan(w_gt/h_gt) - atan(w/h))^2, alpha = v / (1 - IoU + v) (no gradient)."""
    v = (4 / math.pi**2) * (torch.atan(t["tw"] / t["th"]) - torch.atan(t["pw"] / t["ph"])) ** 2
    with torch.no_grad():
        alpha = v / (v - t["iou"] + (1 + eps))
    return alpha, v


def iou(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """IoU = |A ∩ B| / |A ∪ B|."""
    return pair_terms(pred, target, eps)["iou"]


def giou(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Generalized IoU (Rezatofighi et al., CVPR 2019): IoU - |C \\ (A ∪ B)| / |C|, C the enclosing box."""
    t = pair_terms(pred, target, eps)
    return t["iou"] - _giou_penalty(t, eps)


def diou(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Distance IoU (Zheng et al., AAAI 2020): IoU - rho^2(b, b_gt) / c^2, c the enclosing box diagonal."""
    t = pair_terms(pred, target, eps)
    return t["iou"] - _diou_penalty(t)


def ciou(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Complete IoU (Zheng et al., AAAI 2020): IoU - rho^2 / c^2 - alpha * v, with
    v = 4 / pi^2 * (atan(w_gt / h_gt) - atan(w / h))^2 and alpha = v / (1 - IoU + v), alpha without gradient."""
    t = pair_terms(pred, target, eps)
    alpha, v = _ciou_aspect_term(t, eps)
    return t["iou"] - (_diou_penalty(t) + alpha * v)


# ----------------------------------------------------------------------------------------------------
# Losses (pure functions)
# ----------------------------------------------------------------------------------------------------


def iou_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Linear IoU loss: L = 1 - IoU. Zero gradient when the boxes do not overlap."""
    return 1.0 - iou(pred, target, eps)


def log_iou_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """UnitBox IoU loss (Yu et al., ACM MM 2016): L = -ln(IoU).

    IoU is clamped to >= eps, so disjoint boxes give the finite value -ln(eps) (16.1 for 1e-7) and zero gradient."""
    return -torch.log(iou(pred, target, eps).clamp(min=eps))


def giou_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """L = 1 - GIoU = 1 - IoU + |C \\ (A ∪ B)| / |C| (Rezatofighi et al., CVPR 2019)."""
    return 1.0 - giou(pred, target, eps)


def diou_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """L = 1 - DIoU = 1 - IoU + rho^2 / c^2 (Zheng et al., AAAI 2020)."""
    return 1.0 - diou(pred, target, eps)


def ciou_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """L = 1 - CIoU = 1 - IoU + rho^2 / c^2 + alpha v (Zheng et al., AAAI 2020)."""
    return 1.0 - ciou(pred, target, eps)


def eiou_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Efficient IoU loss (Zhang et al., "Focal and Efficient IOU Loss for Accurate Bounding Box Regression",
    Neurocomputing 2022, arXiv:2101.08158):

        L = 1 - IoU + rho^2(b, b_gt) / (C_w^2 + C_h^2) + (w - w_gt)^2 / C_w^2 + (h - h_gt)^2 / C_h^2,

    C_w, C_h the width and height of the smallest enclosing box. Unlike CIoU's aspect-ratio term, the last two
    terms penalise width and height differences directly (they are non-zero for same-shape boxes of different size).
    (Not mmdetection's "EIoU", which is the unrelated "Extended IoU" of Peng & Yu.)"""
    return _eiou_loss(pair_terms(pred, target, eps), eps)


def _eiou_loss(t: dict[str, torch.Tensor], eps: float) -> torch.Tensor:
    """The EIoU loss from the pair terms (`eiou_loss`; `focal_eiou_loss` weights it)."""
    return (
        1.0 - t["iou"] + _diou_penalty(t)
        + (t["pw"] - t["tw"]) ** 2 / (t["enclose_w"] ** 2 + eps)
        + (t["ph"] - t["th"]) ** 2 / (t["enclose_h"] ** 2 + eps)
    )


def focal_eiou_loss(
    pred: torch.Tensor, target: torch.Tensor, gamma: float = 0.5, detach_weight: bool = True, eps: float = 1e-7,
) -> torch.Tensor:
    """Focal-EIoU (Zhang et al. 2022, same paper as EIoU): L = IoU^gamma * L_EIoU, gamma = 0.5.

    The IoU^gamma factor down-weights low-IoU (low-quality) pairs. By default it is used as a weight
    (`detach_weight=True`, as the paper's code uses the IoU value): differentiating through it would, for
    IoU < gamma / (1 + gamma), push the IoU *down* (d/dIoU of IoU^gamma (1 - IoU) is > 0 there) and has an
    infinite slope at IoU = 0. With `detach_weight=False` the IoU is clamped to >= eps before the power."""
    t = pair_terms(pred, target, eps)
    weight = t["iou"].detach() if detach_weight else t["iou"].clamp(min=eps)
    return weight.pow(gamma) * _eiou_loss(t, eps)


def _power(x: torch.Tensor, alpha: float, eps: float) -> torch.Tensor:
    """x^alpha for a penalty x >= 0 with a finite gradient: the identity for alpha = 1; the base is clamped to >= 0
    (eps placement can leave values of about -1e-7); for alpha < 1, where x^alpha has an infinite slope at 0, the
    shifted (x + eps)^alpha - eps^alpha is used, which is still exactly 0 at x = 0."""
    if alpha == 1:
        return x
    x = x.clamp(min=0.0)
    if alpha > 1:
        return x.pow(alpha)
    return (x + eps).pow(alpha) - eps**alpha


def alpha_iou_loss(
    pred: torch.Tensor, target: torch.Tensor, alpha: float = 3.0, base: str = "ciou", eps: float = 1e-7,
) -> torch.Tensor:
    """Alpha-IoU (He et al., "Alpha-IoU: A Family of Power Intersection over Union Losses for Bounding Box
    Regression", NeurIPS 2021), the paper's power form with every term raised to alpha:

        iou:  1 - IoU^alpha
        giou: 1 - IoU^alpha + (|C \\ (A ∪ B)| / |C|)^alpha
        diou: 1 - IoU^alpha + rho^(2 alpha) / c^(2 alpha)
        ciou: 1 - IoU^alpha + rho^(2 alpha) / c^(2 alpha) + (beta v)^alpha,  beta = v / (1 - IoU + v) (no gradient)

    alpha = 1 gives back the base loss; alpha > 1 (paper default 3) up-weights the loss and gradient of
    high-IoU pairs."""
    if base not in ALPHA_IOU_BASES:
        raise ValueError(f"base must be one of {ALPHA_IOU_BASES}, got {base!r}")
    t = pair_terms(pred, target, eps)
    iou_power = t["iou"].clamp(min=eps).pow(alpha) if alpha < 1 else _power(t["iou"], alpha, eps)  # exact at IoU = 1
    loss = 1.0 - iou_power
    if base == "giou":
        loss = loss + _power(_giou_penalty(t, eps), alpha, eps)
    elif base in ("diou", "ciou"):
        loss = loss + _power(_diou_penalty(t), alpha, eps)
        if base == "ciou":
            trade_off, v = _ciou_aspect_term(t, eps)
            loss = loss + _power(trade_off * v, alpha, eps)
    return loss


def rising_gradient_iou_loss_from_iou(iou_value: torch.Tensor, beta: float = 0.95) -> torch.Tensor:
    """The rising-gradient IoU curve as a function of IoU (see `rising_gradient_iou_loss`):
    L = 1 - IoU^2 / beta for IoU <= beta, (1 - IoU)^2 / (1 - beta) above."""
    if not 0 < beta < 1:
        raise ValueError(f"beta must be in (0, 1), got {beta}")
    low = 1.0 - iou_value**2 / beta
    high = (1.0 - iou_value) ** 2 / (1.0 - beta)
    return torch.where(iou_value <= beta, low, high)


def rising_gradient_iou_loss(
    pred: torch.Tensor, target: torch.Tensor, beta: float = 0.95, eps: float = 1e-7,
) -> torch.Tensor:
    """An IoU loss whose gradient magnitude *rises* with IoU up to beta and then falls to zero at IoU = 1
    (C1, piecewise quadratic in IoU):

        |dL/dIoU| = 2 IoU / beta                for IoU <= beta
                  = 2 (1 - IoU) / (1 - beta)    for IoU >  beta
        L = 1 - IoU^2 / beta  |  (1 - IoU)^2 / (1 - beta),   so L(0) = 1 and L(1) = 0 like 1 - IoU; beta 0.95.

    NOT the Rectified IoU (RIoU) loss of Wang & Zhang ("Single-Shot Two-Pronged Detector with Rectified IoU Loss",
    ACM MM 2020, arXiv:2008.03511), although it was written from that paper's description ("increases the
    gradients of examples with high IoU while suppressing the gradients of examples with low IoU"): the published
    expression could not be retrieved, so the loss carries a name that says what it does (it was `riou` before;
    docs/losses.md)."""
    return rising_gradient_iou_loss_from_iou(iou(pred, target, eps), beta)


def siou_loss(pred: torch.Tensor, target: torch.Tensor, theta: float = 4.0, eps: float = 1e-7) -> torch.Tensor:
    """SIoU (Gevorgyan, "SIoU Loss: More Powerful Learning for Bounding Box Regression", arXiv:2205.12740, 2022):

        L = 1 - IoU + (Delta + Omega) / 2
        angle cost     Lambda = 1 - 2 sin^2(arcsin(x) - pi/4),  x = |dy| / sigma, sigma the centre distance
        distance cost  Delta  = sum_{t=x,y} (1 - exp(-gamma rho_t)),  rho_x = (dx / C_w)^2, rho_y = (dy / C_h)^2,
                       gamma = 2 - Lambda, C_w, C_h the enclosing box
        shape cost     Omega  = sum_{t=w,h} (1 - exp(-omega_t))^theta,  omega_w = |w - w_gt| / max(w, w_gt), theta = 4

    The paper switches to beta = pi/2 - alpha when alpha > pi/4; both give
    Lambda = sin(2 alpha) = 2 |dx| |dy| / sigma^2, which is what is computed here (no arcsin, so no infinite
    slope at x = 1, and the same value in both branches)."""
    t = pair_terms(pred, target, eps)
    dx, dy = t["dx"], t["dy"]
    angle = 2 * (dx * dy).abs() / (t["centre_dist2"] + eps)
    gamma = 2.0 - angle
    rho_x = dx**2 / (t["enclose_w"] ** 2 + eps)
    rho_y = dy**2 / (t["enclose_h"] ** 2 + eps)
    distance = (1 - torch.exp(-gamma * rho_x)) + (1 - torch.exp(-gamma * rho_y))
    omega_w = (t["pw"] - t["tw"]).abs() / (torch.maximum(t["pw"], t["tw"]) + eps)
    omega_h = (t["ph"] - t["th"]).abs() / (torch.maximum(t["ph"], t["th"]) + eps)
    shape = (1 - torch.exp(-omega_w)).pow(theta) + (1 - torch.exp(-omega_h)).pow(theta)
    return 1.0 - t["iou"] + (distance + shape) / 2


def wise_iou_loss(
    pred: torch.Tensor, target: torch.Tensor, version: int = 3, iou_loss_mean: torch.Tensor | float = 1.0,
    alpha: float = 1.9, delta: float = 3.0, gamma: float = 0.5, eps: float = 1e-7,
) -> torch.Tensor:
    """Wise-IoU (Tong et al., "Wise-IoU: Bounding Box Regression Loss with Dynamic Focusing Mechanism",
    arXiv:2301.10051, 2023). With L_IoU = 1 - IoU and * marking a value detached from the graph:

        v1: L = R L_IoU,  R = exp(rho^2 / (W_g^2 + H_g^2)*),  W_g, H_g the enclosing box
        v2: L = (L_IoU* / mean(L_IoU))^gamma  L_v1                      (monotonic focusing, gamma = 0.5)
        v3: L = r L_v1,  r = beta / (delta alpha^(beta - delta)),  beta = L_IoU* / mean(L_IoU)
                                                                       (non-monotonic focusing, alpha 1.9, delta 3)

    `iou_loss_mean` is the running mean of L_IoU (see `WIoULoss`, which keeps it as a buffer). In v3, r = 1 at
    beta = delta, and r peaks at beta = 1 / ln(alpha): ordinary-quality boxes get the largest gradient gain,
    both very good (small beta) and outlier (large beta) boxes get less."""
    if version not in (1, 2, 3):
        raise ValueError(f"version must be 1, 2 or 3, got {version}")
    t = pair_terms(pred, target, eps)
    loss_iou = 1.0 - t["iou"]
    distance_attention = torch.exp(t["centre_dist2"] / (t["enclose_w"] ** 2 + t["enclose_h"] ** 2 + eps).detach())
    loss = distance_attention * loss_iou
    if version == 1:
        return loss
    outlier_degree = loss_iou.detach() / iou_loss_mean
    if version == 2:
        return outlier_degree.pow(gamma) * loss
    gain = outlier_degree / (delta * alpha ** (outlier_degree - delta))
    return gain * loss


def mpdiou_loss(
    pred: torch.Tensor, target: torch.Tensor, image_size: torch.Tensor, eps: float = 1e-7,
) -> torch.Tensor:
    """MPDIoU (Ma & Xu, "MPDIoU: A Loss for Efficient and Accurate Bounding Box Regression", arXiv:2307.07662, 2023):

        L = 1 - MPDIoU,   MPDIoU = IoU - d_1^2 / (w^2 + h^2) - d_2^2 / (w^2 + h^2),

    d_1 (d_2) the distance between the top-left (bottom-right) corners of the two boxes, w, h the width and height
    of the input image, `image_size` (..., 2) = (w, h) in the units of the boxes (broadcast against them). The
    normaliser is the image's, not the enclosing box's: the penalty does not fade for boxes far apart."""
    t = pair_terms(pred, target, eps)
    pred, target = pred.float(), target.float()
    image_size = torch.as_tensor(image_size, dtype=torch.float32, device=pred.device)
    diag2 = (image_size**2).sum(-1) + eps
    d1 = ((pred[..., :2] - target[..., :2]) ** 2).sum(-1)
    d2 = ((pred[..., 2:] - target[..., 2:]) ** 2).sum(-1)
    return 1.0 - t["iou"] + (d1 + d2) / diag2


def shape_iou_loss(pred: torch.Tensor, target: torch.Tensor, scale: float = 0.0, eps: float = 1e-7) -> torch.Tensor:
    """Shape-IoU (Zhang & Zhang, "Shape-IoU: More Accurate Metric considering Bounding Box Shape and Scale",
    arXiv:2312.17663, 2023): the distance and shape costs weighted by the GT's shape,

        L = 1 - IoU + distance + Omega / 2
        ww = 2 w_gt^scale / (w_gt^scale + h_gt^scale),   hh = 2 h_gt^scale / (w_gt^scale + h_gt^scale)
        distance = hh (x_c - x_c^gt)^2 / c^2 + ww (y_c - y_c^gt)^2 / c^2,      c the enclosing diagonal
        Omega = sum_{t=w,h} (1 - exp(-omega_t))^4,
        omega_w = hh |w - w_gt| / max(w, w_gt),   omega_h = ww |h - h_gt| / max(h, h_gt)

    `scale` is the paper's scale factor (related to the size of the dataset's objects); 0 (the authors' released
    default) gives ww = hh = 1. For a wide GT (w_gt > h_gt, scale > 0) hh < 1 < ww: errors along the GT's short
    side (y centre, height) cost more, as the paper argues they should."""
    t = pair_terms(pred, target, eps)
    gt_w, gt_h = t["tw"].pow(scale), t["th"].pow(scale)
    ww, hh = 2 * gt_w / (gt_w + gt_h), 2 * gt_h / (gt_w + gt_h)
    distance = (hh * t["dx"] ** 2 + ww * t["dy"] ** 2) / t["enclose_diag2"]
    omega_w = hh * (t["pw"] - t["tw"]).abs() / (torch.maximum(t["pw"], t["tw"]) + eps)
    omega_h = ww * (t["ph"] - t["th"]).abs() / (torch.maximum(t["ph"], t["th"]) + eps)
    shape = (1 - torch.exp(-omega_w)).pow(4) + (1 - torch.exp(-omega_h)).pow(4)
    return 1.0 - t["iou"] + distance + shape / 2


def scaled_boxes(boxes: torch.Tensor, ratio: float) -> torch.Tensor:
    """xyxy boxes scaled by `ratio` about their centres (Inner-IoU's auxiliary boxes)."""
    boxes = boxes.float()
    centre, half = (boxes[..., :2] + boxes[..., 2:]) / 2, (boxes[..., 2:] - boxes[..., :2]) * (ratio / 2)
    return torch.cat((centre - half, centre + half), -1)


def inner_iou(pred: torch.Tensor, target: torch.Tensor, ratio: float = 0.7, eps: float = 1e-7) -> torch.Tensor:
    """Inner-IoU (Zhang, Xu & Zhang, arXiv:2311.02877, 2023): the IoU of the auxiliary boxes, each box scaled by
    `ratio` about its centre. ratio 1 is the IoU."""
    return iou(scaled_boxes(pred, ratio), scaled_boxes(target, ratio), eps)


def _check_focaler_interval(d: float, u: float) -> None:
    if not 0 <= d < u <= 1:
        raise ValueError(f"Focaler-IoU needs 0 <= d < u <= 1, got d={d}, u={u}")


def focaler_iou(iou_value: torch.Tensor, d: float = 0.0, u: float = 0.95) -> torch.Tensor:
    """Focaler-IoU (Zhang & Zhang, arXiv:2401.10525, 2024): the IoU linearly remapped from [d, u] to [0, 1],
    clamped: 0 below d, (IoU - d) / (u - d) in between, 1 above u."""
    _check_focaler_interval(d, u)
    return ((iou_value - d) / (u - d)).clamp(0.0, 1.0)


# ----------------------------------------------------------------------------------------------------
# Modules: forward(pred (N, 4) xyxy, target (N, 4) xyxy) -> (N,) unreduced float32 loss
# ----------------------------------------------------------------------------------------------------


class IoULoss(BoxLoss):
    """IoU loss: mode "linear" 1 - IoU, or mode "log" -ln IoU (UnitBox, Yu et al. 2016). Unreduced (...,)."""

    similarity = staticmethod(iou)

    def __init__(self, eps: float = 1e-7, mode: str = "linear") -> None:
        super().__init__()
        if mode not in ("linear", "log"):
            raise ValueError(f"mode must be 'linear' or 'log', got {mode!r}")
        self.eps, self.mode = eps, mode
        self.linear_in_iou = mode == "linear"

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.mode == "log":
            return log_iou_loss(pred, target, self.eps)
        return 1.0 - self.similarity(pred, target, self.eps)


class GIoULoss(IoULoss):
    """1 - GIoU (Rezatofighi et al., CVPR 2019)."""

    similarity = staticmethod(giou)

    def __init__(self, eps: float = 1e-7) -> None:
        super().__init__(eps)


class DIoULoss(GIoULoss):
    """1 - DIoU (Zheng et al., AAAI 2020)."""

    similarity = staticmethod(diou)


class CIoULoss(GIoULoss):
    """1 - CIoU (Zheng et al., AAAI 2020); the YOLOv8 default box loss."""

    similarity = staticmethod(ciou)


class EIoULoss(BoxLoss):
    """EIoU loss (Zhang et al. 2022): 1 - IoU + rho^2/c^2 + (w - w_gt)^2/C_w^2 + (h - h_gt)^2/C_h^2. See `eiou_loss`."""

    linear_in_iou = True

    def __init__(self, eps: float = 1e-7) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return eiou_loss(pred, target, self.eps)


class FocalEIoULoss(BoxLoss):
    """Focal-EIoU (Zhang et al. 2022): IoU^gamma * L_EIoU, gamma 0.5, IoU used as a detached weight by default."""

    def __init__(self, gamma: float = 0.5, detach_weight: bool = True, eps: float = 1e-7) -> None:
        super().__init__()
        self.gamma, self.detach_weight, self.eps = gamma, detach_weight, eps

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return focal_eiou_loss(pred, target, self.gamma, self.detach_weight, self.eps)


class AlphaIoULoss(BoxLoss):
    """Alpha-IoU (He et al., NeurIPS 2021): the power form of `base` in {iou, giou, diou, ciou}, alpha 3 by default."""

    def __init__(self, alpha: float = 3.0, base: str = "ciou", eps: float = 1e-7) -> None:
        super().__init__()
        if base not in ALPHA_IOU_BASES:
            raise ValueError(f"base must be one of {ALPHA_IOU_BASES}, got {base!r}")
        self.alpha, self.base, self.eps = alpha, base, eps

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return alpha_iou_loss(pred, target, self.alpha, self.base, self.eps)


class RisingGradientIoULoss(BoxLoss):
    """IoU loss with |dL/dIoU| rising with IoU up to beta = 0.95, then falling to 0 (not the published RIoU, whose
    formula could not be checked). See `rising_gradient_iou_loss`."""

    def __init__(self, beta: float = 0.95, eps: float = 1e-7) -> None:
        super().__init__()
        if not 0 < beta < 1:
            raise ValueError(f"beta must be in (0, 1), got {beta}")
        self.beta, self.eps = beta, eps

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return rising_gradient_iou_loss(pred, target, self.beta, self.eps)


class SIoULoss(BoxLoss):
    """SIoU (Gevorgyan 2022): 1 - IoU + (distance cost + shape cost) / 2 with the angle cost in the distance cost."""

    linear_in_iou = True

    def __init__(self, theta: float = 4.0, eps: float = 1e-7) -> None:
        super().__init__()
        self.theta, self.eps = theta, eps

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return siou_loss(pred, target, self.theta, self.eps)


class WIoULoss(BoxLoss):
    """Wise-IoU v1/v2/v3 (Tong et al. 2023). See `wise_iou_loss`.

    v2/v3 normalise by the running mean of L_IoU = 1 - IoU, kept in the buffer `iou_loss_mean` (starts at 1,
    saved in checkpoints). In training mode each call first updates it with the batch mean of L_IoU (detached):
    mean <- (1 - momentum) mean + momentum batch_mean, then uses it; in eval mode it is left as it is. The paper
    sets momentum = 1 - 0.05^(1/(t n)) (n batches per epoch, t the epoch at which AP gains slow down); the
    default 0.01 corresponds to t n = 300 batches. The buffer is per process (not synchronised under DDP)."""

    def __init__(
        self, version: int = 3, alpha: float = 1.9, delta: float = 3.0, gamma: float = 0.5,
        momentum: float = 1e-2, eps: float = 1e-7,
    ) -> None:
        super().__init__()
        if version not in (1, 2, 3):
            raise ValueError(f"version must be 1, 2 or 3, got {version}")
        self.version, self.alpha, self.delta, self.gamma = version, alpha, delta, gamma
        self.momentum, self.eps = momentum, eps
        self.register_buffer("iou_loss_mean", torch.tensor(1.0))

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.version > 1 and self.training and pred.numel() > 0:
            with torch.no_grad():
                batch_mean = (1.0 - iou(pred, target, self.eps)).mean()
                self.iou_loss_mean.mul_(1 - self.momentum).add_(self.momentum * batch_mean)
        return wise_iou_loss(
            pred, target, self.version, self.iou_loss_mean.float(), self.alpha, self.delta, self.gamma, self.eps,
        )


class MPDIoULoss(BoxLoss):
    """MPDIoU (Ma & Xu 2023): 1 - IoU + (d_1^2 + d_2^2) / (w^2 + h^2), corner distances over the image diagonal.

    Needs the input image size: `forward(pred, target, image_size)`, image_size (N, 2) (or (2,)) = (width, height)
    in the units of the boxes; the criteria pass it (grid units on the YOLOv8 head: the image size / stride)."""

    needs_image_size = True
    linear_in_iou = True

    def __init__(self, eps: float = 1e-7) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, pred: torch.Tensor, target: torch.Tensor, image_size: torch.Tensor | None = None) -> torch.Tensor:
        if image_size is None:
            raise ValueError("MPDIoULoss needs the input image size (width, height) in the units of the boxes: "
                             "call it as loss(pred, target, image_size)")
        return mpdiou_loss(pred, target, image_size, self.eps)


class ShapeIoULoss(BoxLoss):
    """Shape-IoU (Zhang & Zhang 2023): distance and shape costs weighted by the GT's shape. See `shape_iou_loss`."""

    linear_in_iou = True

    def __init__(self, scale: float = 0.0, eps: float = 1e-7) -> None:
        super().__init__()
        if scale < 0:
            raise ValueError(f"scale must be >= 0, got {scale}")
        self.scale, self.eps = scale, eps

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return shape_iou_loss(pred, target, self.scale, self.eps)


class _IoUReplacement(BoxLoss):
    """A wrapper that replaces the IoU of a loss of the form 1 - IoU + penalty by another overlap:
    L = L_base + IoU - overlap. Shared by Inner-IoU and Focaler-IoU, which both define their variants this way."""

    def __init__(self, base: BoxLoss, eps: float = 1e-7) -> None:
        super().__init__()
        if not getattr(base, "linear_in_iou", False):
            raise ValueError(
                f"{type(self).__name__} wraps a loss of the form 1 - IoU + penalty (iou, giou, diou, ciou, eiou, siou, "
                f"mpdiou, shape_iou), got {type(base).__name__}"
            )
        self.base, self.eps = base, eps
        self.needs_image_size = base.needs_image_size

    def overlap(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, pred: torch.Tensor, target: torch.Tensor, *image_size: torch.Tensor) -> torch.Tensor:
        return self.base(pred, target, *image_size) + iou(pred, target, self.eps) - self.overlap(pred, target)


class InnerIoULoss(_IoUReplacement):
    """Inner-IoU (Zhang, Xu & Zhang, "Inner-IoU: More Effective Intersection over Union Loss with Auxiliary
    Bounding Box", arXiv:2311.02877, 2023): any IoU-family loss with its IoU computed on auxiliary boxes,

        L_Inner-X = L_X + IoU - IoU_inner,   IoU_inner = IoU(inner(pred), inner(target)),

    inner(b) = b's centre with `ratio` times its width and height. ratio < 1 steepens the loss of high-IoU pairs,
    ratio > 1 extends the gradient to low-IoU (e.g. tiny, disjoint) pairs; ratio 1 is the base loss. The paper
    uses ratios in [0.5, 1.5]; default 0.7."""

    def __init__(self, base: BoxLoss, ratio: float = 0.7, eps: float = 1e-7) -> None:
        super().__init__(base, eps)
        if ratio <= 0:
            raise ValueError(f"ratio must be > 0, got {ratio}")
        self.ratio = ratio

    def overlap(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return inner_iou(pred, target, self.ratio, self.eps)


class FocalerIoULoss(_IoUReplacement):
    """Focaler-IoU (Zhang & Zhang, "Focaler-IoU: More Focused Intersection over Union Loss", arXiv:2401.10525, 2024):
    any IoU-family loss with its IoU linearly remapped on [d, u] (clamped to [0, 1]),

        L_Focaler-X = L_X + IoU - IoU_focaler,   IoU_focaler = clamp((IoU - d) / (u - d), 0, 1).

    Raising d ignores the hardest pairs (no IoU gradient below d), lowering u treats pairs above u as done (no IoU
    gradient above u); the remapped range gets a gradient 1 / (u - d) times the IoU's. Defaults d = 0, u = 0.95."""

    def __init__(self, base: BoxLoss, d: float = 0.0, u: float = 0.95, eps: float = 1e-7) -> None:
        super().__init__(base, eps)
        _check_focaler_interval(d, u)
        self.d, self.u = d, u

    def overlap(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return focaler_iou(iou(pred, target, self.eps), self.d, self.u)
