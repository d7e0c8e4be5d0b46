"""Classification losses (detector/losses/classification.py): hand values, torchvision agreement, paper claims."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss as tv_focal

from detector.losses import classification as C

LN2 = math.log(2)


def test_bce_hand_value():
    # sigma(0) = 0.5: -(t ln 0.5 + (1 - t) ln 0.5) = ln 2 for any t
    assert C.BCEWithLogits()(torch.zeros(1, 1), torch.tensor([[0.3]])).item() == pytest.approx(LN2)
    # x = ln 3 -> p = 0.75, t = 1: -ln 0.75
    assert C.binary_cross_entropy(torch.tensor([math.log(3)]), torch.ones(1)).item() == pytest.approx(-math.log(0.75))


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (0.5, 1.0), (None, 2.0), (0.25, 0.0)])
def test_focal_matches_torchvision_on_hard_targets(alpha, gamma):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 20, 5, generator=g) * 3
    targets = (torch.rand(8, 20, 5, generator=g) > 0.8).float()
    reference = tv_focal(logits, targets, alpha=-1 if alpha is None else alpha, gamma=gamma, reduction="none")
    torch.testing.assert_close(C.FocalLoss(alpha, gamma)(logits, targets), reference)


def test_focal_hand_value_and_gamma_zero_is_alpha_weighted_ce():
    # x = 0, t = 1: p_t = 0.5, CE = ln 2, FL = 0.25 * 0.5^2 * ln 2; t = 0: alpha_t = 0.75
    value = C.sigmoid_focal_loss(torch.zeros(2), torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(value, torch.tensor([0.25 * 0.25 * LN2, 0.75 * 0.25 * LN2]))
    logits, targets = torch.linspace(-5, 5, 11), torch.tensor([1.0, 0] * 5 + [1.0])
    alpha_t = 0.25 * targets + 0.75 * (1 - targets)
    torch.testing.assert_close(
        C.sigmoid_focal_loss(logits, targets, gamma=0.0), alpha_t * C.binary_cross_entropy(logits, targets),
    )


def test_focal_downweights_easy_examples():
    # easy positive: x = 4 (p_t = 0.982); hard positive: x = -4 (p_t = 0.018); ratio FL / CE = alpha (1 - p_t)^2
    logits, targets = torch.tensor([4.0, -4.0]), torch.ones(2)
    ratio = C.sigmoid_focal_loss(logits, targets, alpha=None) / C.binary_cross_entropy(logits, targets)
    p_easy = 1 / (1 + math.exp(-4))
    torch.testing.assert_close(ratio, torch.tensor([(1 - p_easy) ** 2, p_easy**2]))
    assert ratio[0] < 1e-3 and ratio[1] > 0.9


def test_quality_focal_loss_hand_values():
    # x = 0 (sigma = 0.5): BCE = ln 2; y = 0.8: |0.8 - 0.5|^2 = 0.09; y = 0: 0.5^2 = 0.25
    value = C.QualityFocalLoss()(torch.zeros(2), torch.tensor([0.8, 0.0]))
    torch.testing.assert_close(value, torch.tensor([0.09 * LN2, 0.25 * LN2]))
    # no loss (and no gradient) when the prediction equals the soft target
    x = torch.tensor([math.log(0.8 / 0.2)], requires_grad=True)
    loss = C.quality_focal_loss(x, torch.tensor([0.8]))
    loss.backward()
    assert loss.item() == pytest.approx(0, abs=1e-10) and x.grad.abs().item() < 1e-6
    # beta = 0 is plain BCE
    torch.testing.assert_close(C.quality_focal_loss(torch.tensor([1.3]), torch.tensor([0.4]), beta=0.0),
                               C.binary_cross_entropy(torch.tensor([1.3]), torch.tensor([0.4])))


def test_varifocal_loss_hand_values():
    # x = 0 (p = 0.5): positive q = 0.8: q * BCE = 0.8 ln 2; negative: alpha p^2 (-ln(1 - p)) = 0.75 * 0.25 * ln 2
    value = C.VarifocalLoss()(torch.zeros(2), torch.tensor([0.8, 0.0]))
    torch.testing.assert_close(value, torch.tensor([0.8 * LN2, 0.75 * 0.25 * LN2]))
    # x = ln 3 (p = 0.75), q = 0.5: -0.5 (0.5 ln 0.75 + 0.5 ln 0.25)
    value = C.varifocal_loss(torch.tensor([math.log(3)]), torch.tensor([0.5]))
    assert value.item() == pytest.approx(-0.5 * (0.5 * math.log(0.75) + 0.5 * math.log(0.25)), rel=1e-6)
    # positives are weighted by q (not down-weighted by p), negatives focal-style by p^gamma
    logits = torch.tensor([2.0, 2.0, -2.0, 2.0])
    targets = torch.tensor([0.9, 0.3, 0.0, 0.0])
    ratio = C.varifocal_loss(logits, targets) / C.binary_cross_entropy(logits, targets)
    p = torch.sigmoid(torch.tensor(2.0)).item()
    torch.testing.assert_close(ratio, torch.tensor([0.9, 0.3, 0.75 * (1 - p) ** 2, 0.75 * p**2]))


def test_matchability_aware_loss_hand_values():
    # x = 0 (p = 0.5): BCE against any target is ln 2. Positive q = 0.64: target 0.64^1.5 = 0.512, weight 1 -> ln 2
    # (VFL would weight it by 0.64); negative: p^1.5 ln 2 = 0.5^1.5 ln 2.
    value = C.MatchabilityAwareLoss()(torch.zeros(2), torch.tensor([0.64, 0.0]))
    torch.testing.assert_close(value, torch.tensor([LN2, 0.5**1.5 * LN2]))
    # x = ln 3 (p = 0.75), q = 0.64: -(0.512 ln 0.75 + 0.488 ln 0.25)
    value = C.matchability_aware_loss(torch.tensor([math.log(3)]), torch.tensor([0.64]))
    assert value.item() == pytest.approx(-(0.512 * math.log(0.75) + 0.488 * math.log(0.25)), rel=1e-5)
    # alpha scales the negatives only
    logits, targets = torch.tensor([1.0, 1.0]), torch.tensor([0.5, 0.0])
    ratio = C.matchability_aware_loss(logits, targets, alpha=0.5) / C.matchability_aware_loss(logits, targets)
    torch.testing.assert_close(ratio, torch.tensor([1.0, 0.5]))


def test_matchability_aware_loss_matches_deim():
    """DEIM's formulation with one-hot labels y and the IoU of the matched box (Huang et al. 2025):
    y = 1: -(IoU^gamma log p + (1 - IoU^gamma) log(1 - p)); y = 0: -p^gamma log(1 - p), gamma 1.5."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 5, generator=g) * 3
    labels = torch.rand(64, 5, generator=g) < 0.2
    ious = torch.rand(64, 5, generator=g) * 0.99 + 0.01
    p = torch.sigmoid(logits.double())
    q = ious.double() ** 1.5
    reference = torch.where(labels, -(q * torch.log(p) + (1 - q) * torch.log(1 - p)), -(p**1.5) * torch.log(1 - p))
    value = C.matchability_aware_loss(logits, torch.where(labels, ious, 0.0))
    torch.testing.assert_close(value.double(), reference, atol=1e-5, rtol=1e-4)


def test_matchability_aware_loss_keeps_a_confident_low_iou_match_costly():
    """The paper's point against VFL: a confident (p = 0.95) positive with a poor box (IoU 0.1) gets a much larger
    loss from MAL than from VFL, which scales it by the IoU."""
    logit, target = torch.tensor([math.log(19.0)]), torch.tensor([0.1])
    assert C.matchability_aware_loss(logit, target).item() > 5 * C.varifocal_loss(logit, target).item()
    # the negative weight is detached: its gradient is p^gamma times BCE's
    x = torch.tensor([0.3], requires_grad=True)
    C.matchability_aware_loss(x, torch.zeros(1)).sum().backward()
    p = torch.sigmoid(torch.tensor([0.3]))
    torch.testing.assert_close(x.grad, p**1.5 * p)

def test_label_smoothing_targets_both_conventions():
    labels = torch.tensor([0, 3])
    # K = 4, eps = 0.1. eps/(K-1): true 0.9, others 0.1/3
    k1 = C.smoothed_targets(labels, 4, 0.1, "eps_over_k_minus_1")
    torch.testing.assert_close(k1[0], torch.tensor([0.9, 0.1 / 3, 0.1 / 3, 0.1 / 3]))
    torch.testing.assert_close(k1[1], torch.tensor([0.1 / 3, 0.1 / 3, 0.1 / 3, 0.9]))
    # eps/K: true 1 - 0.1 + 0.025 = 0.925, others 0.025
    k = C.smoothed_targets(labels, 4, 0.1, "eps_over_k")
    torch.testing.assert_close(k[0], torch.tensor([0.925, 0.025, 0.025, 0.025]))
    torch.testing.assert_close(k1.sum(-1), torch.ones(2))
    torch.testing.assert_close(k.sum(-1), torch.ones(2))
    with pytest.raises(ValueError):
        C.smoothed_targets(labels, 4, 0.1, "uniform")


def test_softmax_cross_entropy_values():
    # logits [ln 2, 0, 0, 0]: softmax = [2/5, 1/5, 1/5, 1/5]
    logits = torch.tensor([[math.log(2), 0.0, 0.0, 0.0]])
    label = torch.tensor([0])
    assert C.softmax_cross_entropy(logits, label).item() == pytest.approx(-math.log(0.4))
    # eps/(K-1), eps = 0.3: -(0.7 ln 0.4 + 3 * 0.1 ln 0.2)
    expected = -(0.7 * math.log(0.4) + 0.3 * math.log(0.2))
    assert C.CrossEntropy(0.3)(logits, label).item() == pytest.approx(expected, rel=1e-6)
    # eps/K, eps = 0.3: -(0.775 ln 0.4 + 3 * 0.075 ln 0.2)
    expected = -(0.775 * math.log(0.4) + 0.225 * math.log(0.2))
    assert C.CrossEntropy(0.3, "eps_over_k")(logits, label).item() == pytest.approx(expected, rel=1e-6)


def test_softmax_cross_entropy_matches_torch_and_ignores():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(32, 6, generator=g) * 3
    labels = torch.randint(0, 6, (32,), generator=g)
    torch.testing.assert_close(
        C.softmax_cross_entropy(logits, labels), F.cross_entropy(logits, labels, reduction="none"),
    )
    torch.testing.assert_close(
        C.softmax_cross_entropy(logits, labels, 0.1, "eps_over_k"),
        F.cross_entropy(logits, labels, label_smoothing=0.1, reduction="none"),
    )
    # the default convention differs from torch's
    assert not torch.allclose(C.softmax_cross_entropy(logits, labels, 0.1),
                              F.cross_entropy(logits, labels, label_smoothing=0.1, reduction="none"))
    labels[:4] = -100
    loss = C.softmax_cross_entropy(logits, labels, 0.1)
    assert (loss[:4] == 0).all() and (loss[4:] > 0).all()
    with pytest.raises(TypeError):
        C.CrossEntropy()(logits, torch.rand(32, 6))  # soft per-class targets belong to the sigmoid losses


SIGMOID = [C.BCEWithLogits(), C.FocalLoss(), C.QualityFocalLoss(), C.VarifocalLoss(), C.MatchabilityAwareLoss()]


@pytest.mark.parametrize("module", SIGMOID, ids=lambda m: type(m).__name__)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_sigmoid_losses_are_finite_for_extreme_logits(module, dtype):
    logits = torch.tensor([[-100.0, -20.0, 0.0, 20.0, 100.0]] * 3).to(dtype).requires_grad_()
    targets = torch.tensor([[0.0] * 5, [1.0] * 5, [0.7] * 5]).to(dtype)
    loss = module(logits, targets)
    assert loss.shape == (3, 5) and loss.dtype == torch.float32
    assert torch.isfinite(loss).all() and (loss >= 0).all()
    loss.sum().backward()
    assert torch.isfinite(logits.grad.float()).all()
    # confident and right -> ~0; confident and wrong -> large
    assert loss[0, 0] < 1e-6 and loss[1, 4] < 1e-6 and loss[0, 4] > 1 and loss[1, 0] > 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cross_entropy_is_finite_for_extreme_logits(dtype):
    logits = torch.tensor([[100.0, -100.0, 0.0], [-100.0, 100.0, 0.0]]).to(dtype).requires_grad_()
    loss = C.CrossEntropy(0.1)(logits, torch.tensor([0, 0]))
    assert loss.dtype == torch.float32 and torch.isfinite(loss).all() and loss[1] > loss[0]
    loss.sum().backward()
    assert torch.isfinite(logits.grad.float()).all()
