"""Classification losses.

Sigmoid family (YOLOv8-style heads, one independent sigmoid per class, no background class):
`forward(logits (..., C), targets (..., C) soft in [0, 1]) -> (..., C)` unreduced float32. Everything is
computed from logits with `binary_cross_entropy_with_logits` (log-sum-exp safe), never log(sigmoid) + clamps.

Softmax family (SSD-style heads, K = num_classes + 1 outputs with the background as an ordinary class index,
0 by the SSD convention): `softmax_cross_entropy(logits (N, K), labels (N,) long) -> (N,)`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from detector.losses.base import ClassificationLoss

SMOOTHING_CONVENTIONS = ("eps_over_k_minus_1", "eps_over_k")


# ----------------------------------------------------------------------------------------------------
# Sigmoid family: element-wise on (..., C)
# ----------------------------------------------------------------------------------------------------


def binary_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """BCE with soft targets t: L = -[t log sigma(x) + (1 - t) log(1 - sigma(x))], element-wise."""
    return F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none")


def sigmoid_focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, alpha: float | None = 0.25, gamma: float = 2.0,
) -> torch.Tensor:
    """Focal loss (Lin et al., "Focal Loss for Dense Object Detection" (RetinaNet), ICCV 2017):

        FL = alpha_t (1 - p_t)^gamma CE,   p_t = p t + (1 - p)(1 - t),   alpha_t = alpha t + (1 - alpha)(1 - t),

    p = sigma(x), CE the BCE above. Paper defaults alpha 0.25, gamma 2. gamma = 0 gives the alpha-weighted CE;
    alpha = None (or < 0) drops the alpha weighting. Same values as `torchvision.ops.sigmoid_focal_loss`
    (reduction "none"); with soft targets t the formula is used as written."""
    logits, targets = logits.float(), targets.float()
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha is not None and alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss


def quality_focal_loss(logits: torch.Tensor, targets: torch.Tensor, beta: float = 2.0) -> torch.Tensor:
    """Quality focal loss (Li et al., "Generalized Focal Loss", NeurIPS 2020), soft IoU targets y in [0, 1]:

        QFL = |y - sigma|^beta * BCE(sigma, y),   beta = 2.

    Negatives (y = 0) get sigma^beta * -log(1 - sigma). Use beta >= 1 (for beta < 1 the factor has an infinite
    slope at sigma = y)."""
    logits, targets = logits.float(), targets.float()
    scale = (targets - torch.sigmoid(logits)).abs().pow(beta)
    return scale * F.binary_cross_entropy_with_logits(logits, targets, reduction="none")


def varifocal_loss(
    logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.75, gamma: float = 2.0,
) -> torch.Tensor:
    """Varifocal loss (Zhang et al., "VarifocalNet: An IoU-aware Dense Object Detector", CVPR 2021), targets q in [0, 1]
    (the IoU-aware classification score of positives, 0 for negatives):

        VFL = -q (q log p + (1 - q) log(1 - p))   if q > 0   (positives weighted by their own target q)
            = -alpha p^gamma log(1 - p)           if q = 0   (negatives down-weighted focal-style),

    p = sigma(x), alpha 0.75, gamma 2. Computed as weight * BCE-with-logits; the weight is not detached.
    A positive whose IoU target is exactly 0 is treated as a negative (the soft targets carry no separate label);
    ultralytics' VFL, which takes the labels separately, weights by the label instead (alpha p^gamma (1 - label)
    + q label), which gives such an anchor weight 0 where this function gives alpha p^gamma."""
    logits, targets = logits.float(), targets.float()
    p = torch.sigmoid(logits)
    weight = torch.where(targets > 0, targets, alpha * p.pow(gamma))
    return weight * F.binary_cross_entropy_with_logits(logits, targets, reduction="none")


def matchability_aware_loss(
    logits: torch.Tensor, targets: torch.Tensor, gamma: float = 1.5, alpha: float = 1.0,
) -> torch.Tensor:
    """Matchability-aware loss, MAL (Huang et al., "DEIM: DETR with Improved Matching for Fast Convergence",
    CVPR 2025), targets q in [0, 1]: the soft class targets the assigner gives (0 for negatives; TAL's
    t * max u / max t, the prediction's IoU for ATSS and SimOTA, 1 for one-hot matchers), where DEIM uses the IoU
    of the matched query:

        MAL = -(q^gamma log p + (1 - q^gamma) log(1 - p))   if q > 0   (weight 1: a low-IoU match keeps its loss)
            = -alpha p^gamma log(1 - p)                     if q = 0,

    p = sigma(x), gamma 1.5 (the published default; alpha 1, the authors' code without `mal_alpha`). Unlike VFL the
    positive target is q^gamma and the positive is not down-weighted by q, so a confident low-IoU match is penalised
    (the paper's point); the negative weight p^gamma is detached, as in the authors' code. A positive whose target is
    exactly 0 is indistinguishable from a negative here (soft targets carry no separate label) and is treated as one.
    Unreduced: the YOLOv8 criterion divides the sum by max(sum of soft targets, 1), DEIM by the number of GT boxes
    (docs/losses.md, "MAL")."""
    logits, targets = logits.float(), targets.float()
    positive = targets > 0
    soft = torch.where(positive, targets.clamp(min=0).pow(gamma), 0.0)
    weight = torch.where(positive, 1.0, alpha * torch.sigmoid(logits).detach().pow(gamma))
    return weight * F.binary_cross_entropy_with_logits(logits, soft, reduction="none")


class BCEWithLogits(ClassificationLoss):
    """Sigmoid binary cross-entropy with soft targets t (YOLOv8 default):
    L = -[t log sigma(x) + (1 - t) log(1 - sigma(x))], per anchor and class, unreduced."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return binary_cross_entropy(logits, targets)


class FocalLoss(ClassificationLoss):
    """Sigmoid focal loss (RetinaNet), alpha 0.25, gamma 2. See `sigmoid_focal_loss`."""

    def __init__(self, alpha: float | None = 0.25, gamma: float = 2.0) -> None:
        super().__init__()
        self.alpha, self.gamma = alpha, gamma

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return sigmoid_focal_loss(logits, targets, self.alpha, self.gamma)


class QualityFocalLoss(ClassificationLoss):
    """Quality focal loss (GFL), beta 2. See `quality_focal_loss`."""

    def __init__(self, beta: float = 2.0) -> None:
        super().__init__()
        self.beta = beta

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return quality_focal_loss(logits, targets, self.beta)


class VarifocalLoss(ClassificationLoss):
    """Varifocal loss (VarifocalNet), alpha 0.75, gamma 2. See `varifocal_loss`."""

    def __init__(self, alpha: float = 0.75, gamma: float = 2.0) -> None:
        super().__init__()
        self.alpha, self.gamma = alpha, gamma

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return varifocal_loss(logits, targets, self.alpha, self.gamma)


class MatchabilityAwareLoss(ClassificationLoss):
    """Matchability-aware loss (DEIM, CVPR 2025), gamma 1.5, alpha 1. See `matchability_aware_loss`."""

    def __init__(self, gamma: float = 1.5, alpha: float = 1.0) -> None:
        super().__init__()
        self.gamma, self.alpha = gamma, alpha

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return matchability_aware_loss(logits, targets, self.gamma, self.alpha)


# ----------------------------------------------------------------------------------------------------
# Softmax family: (N, K) logits, (N,) integer labels
# ----------------------------------------------------------------------------------------------------


def smoothed_targets(
    labels: torch.Tensor, num_classes: int, label_smoothing: float = 0.0, convention: str = "eps_over_k_minus_1",
) -> torch.Tensor:
    """Label-smoothed target distributions (..., K) for integer labels (...,), eps = label_smoothing:

    - "eps_over_k_minus_1" (default): true class 1 - eps, every other class eps / (K - 1). The eps mass goes
      only to the wrong classes, so the true class keeps exactly 1 - eps (Szegedy et al. 2016 describe the
      mixing with a uniform prior; this variant is the common "confidence = 1 - eps" reading).
    - "eps_over_k": true class 1 - eps + eps / K, others eps / K: (1 - eps) one-hot + eps uniform, the
      convention of `torch.nn.functional.cross_entropy(label_smoothing=eps)` (and of Szegedy et al.'s formula).

    Labels outside [0, K) (e.g. an ignore index) give an all-zero row."""
    if convention not in SMOOTHING_CONVENTIONS:
        raise ValueError(f"convention must be one of {SMOOTHING_CONVENTIONS}, got {convention!r}")
    if not 0 <= label_smoothing <= 1:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    valid = (labels >= 0) & (labels < num_classes)
    one_hot = F.one_hot(labels.clamp(0, num_classes - 1).long(), num_classes).float()
    if convention == "eps_over_k":
        dist = (1 - label_smoothing) * one_hot + label_smoothing / num_classes
    else:
        if num_classes < 2 and label_smoothing > 0:
            raise ValueError("the eps/(K-1) convention needs at least 2 classes")
        off = label_smoothing / (num_classes - 1) if num_classes > 1 else 0.0
        dist = (1 - label_smoothing) * one_hot + off * (1 - one_hot)
    return dist * valid.unsqueeze(-1)


def softmax_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0,
    convention: str = "eps_over_k_minus_1", ignore_index: int = -100,
) -> torch.Tensor:
    """Softmax cross-entropy over K classes (background included as a class, SSD-style), with label smoothing:

        L = -sum_k q_k log softmax(x)_k,   q = `smoothed_targets(labels, K, label_smoothing, convention)`

    logits (..., K), labels (...,) integer class indices; returns (...,) unreduced float32. Entries whose label
    is `ignore_index` give 0. With eps = 0 this is the ordinary cross-entropy; with convention "eps_over_k" it
    equals `F.cross_entropy(logits, labels, label_smoothing=eps, reduction="none")`."""
    if labels.is_floating_point():
        raise TypeError(
            "softmax_cross_entropy expects integer class labels (an SSD-style head with a background class); "
            "for soft per-class targets use the sigmoid losses (bce, focal, qfl, vfl)"
        )
    num_classes = logits.shape[-1]
    log_probs = F.log_softmax(logits.float(), dim=-1)
    targets = smoothed_targets(labels.masked_fill(labels == ignore_index, -1), num_classes, label_smoothing, convention)
    return -(targets * log_probs).sum(-1)


class CrossEntropy(ClassificationLoss):
    """Softmax cross-entropy with label smoothing, for heads with a background class (SSD). See `softmax_cross_entropy`.

    forward(logits (N, K), labels (N,) long) -> (N,). convention: "eps_over_k_minus_1" (default: 1 - eps / eps/(K-1))
    or "eps_over_k" (torch's: 1 - eps + eps/K / eps/K)."""

    activation = "softmax"

    def __init__(
        self, label_smoothing: float = 0.0, convention: str = "eps_over_k_minus_1", ignore_index: int = -100,
    ) -> None:
        super().__init__()
        if convention not in SMOOTHING_CONVENTIONS:
            raise ValueError(f"convention must be one of {SMOOTHING_CONVENTIONS}, got {convention!r}")
        self.label_smoothing, self.convention, self.ignore_index = label_smoothing, convention, ignore_index

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return softmax_cross_entropy(logits, labels, self.label_smoothing, self.convention, self.ignore_index)
