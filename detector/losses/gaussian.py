"""Box similarities and losses that model an axis-aligned box as a 2-D Gaussian, element-wise on matched pairs of
xyxy boxes (..., 4) -> (...,), in float32 whatever the input dtype.

Unlike the IoU family, these stay informative for disjoint boxes and are smooth in the box sizes, which the papers
argue matters most for tiny objects, where a pixel of error changes the IoU a lot.

Square roots of quantities that are 0 at a perfect prediction are taken as sqrt(x + eps) - sqrt(eps): exactly 0 at
x = 0 with a finite gradient there (sqrt has an infinite slope at 0); this shifts values by at most sqrt(eps)
(3.2e-4 for eps 1e-7) from the papers' sqrt(x).
"""

from __future__ import annotations

import math

import torch

from detector.losses.base import BoxLoss

PROBIOU_MODES = ("l1", "l2")


def _safe_sqrt(x: torch.Tensor, eps: float) -> torch.Tensor:
    """sqrt(x + eps) - sqrt(eps) for x >= 0: 0 at 0, finite gradient everywhere."""
    return (x.clamp(min=0) + eps).sqrt() - math.sqrt(eps)


def _centres_and_sizes(boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    boxes = boxes.float()
    return (boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2]


def nwd(pred: torch.Tensor, target: torch.Tensor, constant: float = 12.8, eps: float = 1e-7) -> torch.Tensor:
    """Normalized Gaussian Wasserstein Distance (Wang et al., "A Normalized Gaussian Wasserstein Distance for Tiny
    Object Detection", arXiv:2110.13389, 2021). A box is the Gaussian N((c_x, c_y), diag(w^2/4, h^2/4)); between two
    such Gaussians the 2-Wasserstein distance is

        W_2^2 = ||(c_x, c_y, w/2, h/2) - (c_x', c_y', w'/2, h'/2)||^2,    NWD = exp(-W_2 / C),

    C a dataset constant in the units of the boxes (the paper: 12.8 px, the average object size of AI-TOD). NWD is
    1 for identical boxes, in (0, 1] always, and decreases smoothly with distance even for disjoint boxes."""
    if constant <= 0:
        raise ValueError(f"the NWD constant C must be > 0, got {constant}")
    (pc, ps), (tc, ts) = _centres_and_sizes(pred), _centres_and_sizes(target)
    w2 = ((pc - tc) ** 2).sum(-1) + (((ps - ts) / 2) ** 2).sum(-1)
    return torch.exp(-_safe_sqrt(w2, eps) / constant)


def nwd_loss(pred: torch.Tensor, target: torch.Tensor, constant: float = 12.8, eps: float = 1e-7) -> torch.Tensor:
    """L = 1 - NWD (Wang et al. 2021), see `nwd`."""
    return 1.0 - nwd(pred, target, constant, eps)


def bhattacharyya_distance(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """ProbIoU's B_D between the Gaussians N((c_x, c_y), diag(w^2/12, h^2/12)) of two boxes (the moments of a
    uniform distribution over the box), Sigma = (Sigma_1 + Sigma_2) / 2:

        B_D = 1/8 (mu_1 - mu_2)^T Sigma^-1 (mu_1 - mu_2) + 1/2 ln(det Sigma / sqrt(det Sigma_1 det Sigma_2)),

    with `eps` added to every variance (zero-area boxes stay finite) and B_D clamped to [0, 100] (exp(-100) is 0 in
    float32). The authors' code clamps to [eps, 100] with eps = 1e-3, also inside B_D's fractions and logarithm; the
    difference is measured in docs/losses.md ("ProbIoU's eps and clamp")."""
    (pc, ps), (tc, ts) = _centres_and_sizes(pred), _centres_and_sizes(target)
    var_p, var_t = ps**2 / 12 + eps, ts**2 / 12 + eps
    var = (var_p + var_t) / 2
    mahalanobis = ((pc - tc) ** 2 / var).sum(-1) / 8
    log_ratio = (torch.log(var) - (torch.log(var_p) + torch.log(var_t)) / 2).sum(-1) / 2
    return (mahalanobis + log_ratio).clamp(0.0, 100.0)


def probiou(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """ProbIoU (Llerena et al., "Gaussian Bounding Boxes and Probabilistic Intersection-over-Union for Object
    Detection", arXiv:2106.06072, 2021): 1 - H_D, H_D = sqrt(1 - exp(-B_D)) the Hellinger distance between the
    boxes' Gaussians (`bhattacharyya_distance`). 1 for identical boxes, in [0, 1]."""
    return 1.0 - _safe_sqrt(1.0 - torch.exp(-bhattacharyya_distance(pred, target, eps)), eps)


def probiou_loss(pred: torch.Tensor, target: torch.Tensor, mode: str = "l1", eps: float = 1e-7) -> torch.Tensor:
    """The ProbIoU losses of Llerena et al. 2021: "l1" L = H_D = 1 - ProbIoU (bounded by 1, the paper's first
    choice), "l2" L = -ln(1 - H_D^2) = B_D (unbounded, stronger gradient far from the target)."""
    if mode not in PROBIOU_MODES:
        raise ValueError(f"mode must be one of {PROBIOU_MODES}, got {mode!r}")
    if mode == "l2":
        return bhattacharyya_distance(pred, target, eps)
    return 1.0 - probiou(pred, target, eps)


class NWDLoss(BoxLoss):
    """1 - NWD (Wang et al. 2021), C = `constant` in the units of the boxes the loss sees. See `nwd`.

    The YOLOv8 criterion gives box losses boxes in grid units (pixels / stride), so C there is in strides: C = 1.6 is
    1.6 x stride px, the paper's 12.8 px at stride 8 only (25.6 px at 16, 51.2 px at 32). The SSD criterion gives
    pixels."""

    def __init__(self, constant: float = 12.8, eps: float = 1e-7) -> None:
        super().__init__()
        if constant <= 0:
            raise ValueError(f"the NWD constant C must be > 0, got {constant}")
        self.constant, self.eps = constant, eps

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return nwd_loss(pred, target, self.constant, self.eps)


class ProbIoULoss(BoxLoss):
    """ProbIoU loss (Llerena et al. 2021): mode "l1" 1 - ProbIoU (Hellinger distance), "l2" the Bhattacharyya
    distance. See `probiou_loss`."""

    def __init__(self, mode: str = "l1", eps: float = 1e-7) -> None:
        super().__init__()
        if mode not in PROBIOU_MODES:
            raise ValueError(f"mode must be one of {PROBIOU_MODES}, got {mode!r}")
        self.mode, self.eps = mode, eps

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return probiou_loss(pred, target, self.mode, self.eps)
