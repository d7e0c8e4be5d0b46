"""Every loss option (loss/box, loss/cls, loss/dfl) and family loss (loss=yolov8, multibox, ...) composes with Hydra,
instantiates to its declared base type, and runs; command-line overrides work. The options are the files of
configs/loss/<group>/: a new config is tested by existing, no list here names it."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
import torch
from omegaconf import DictConfig

from detector.losses import classification, dfl, gaussian, iou
from detector.losses.base import BoxLoss, ClassificationLoss, DistanceLoss

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


def _boxes():
    """Three pairs: overlapping, identical, disjoint (xyxy)."""
    pred = torch.tensor([[0.0, 0, 2, 2], [1.0, 1, 4, 3], [0.0, 0, 1, 1]], requires_grad=True)
    target = torch.tensor([[1.0, 1, 3, 3], [1.0, 1, 4, 3], [5.0, 5, 6, 6]])
    return pred, target


def _declared_class(node) -> type:
    return hydra.utils.get_class(node._target_)


@pytest.mark.parametrize("option", options("loss"))
def test_family_loss_is_a_whole_combination(compose_config, option):
    """configs/loss/*.yaml hold combinations (cls + box + DFL + gains); single parts are the subgroups' options."""
    loss = compose_config([f"loss={option}"]).loss
    assert {"cls", "box", "dfl", "weights"} <= set(loss) and set(loss.weights) >= {"box", "cls"}
    assert issubclass(_declared_class(loss.cls), ClassificationLoss) and issubclass(_declared_class(loss.box), BoxLoss)


@pytest.mark.parametrize("option", options("loss/box"))
def test_box_option_builds_its_class_and_gives_finite_losses_and_gradients(compose_config, option):
    cfg = compose_config([f"loss/box={option}"])
    box = hydra.utils.instantiate(cfg.loss.box)
    assert isinstance(box, BoxLoss) and type(box) is _declared_class(cfg.loss.box)
    if isinstance(cfg.loss.box.get("base"), DictConfig):  # a wrapper (Inner-, Focaler-IoU): its base as configured
        assert type(box.base) is _declared_class(cfg.loss.box.base) and box.base.linear_in_iou
    # the rest of the YOLOv8 loss is kept: BCE, DFL, gains 7.5 / 0.5 / 1.5
    assert isinstance(hydra.utils.instantiate(cfg.loss.cls), classification.BCEWithLogits)
    assert isinstance(hydra.utils.instantiate(cfg.loss.dfl), dfl.DFLoss)
    assert dict(cfg.loss.weights) == {"box": 7.5, "cls": 0.5, "dfl": 1.5}
    pred, target = _boxes()
    value = box(pred, target, torch.tensor([8.0, 8.0])) if box.needs_image_size else box(pred, target)
    assert value.shape == (3,) and torch.isfinite(value).all()
    # a mismatched pair costs more than an identical one (a disjoint pair may cost nothing more: Focal-EIoU)
    assert value[0] > value[1] and value[2] >= value[1]
    value.sum().backward()
    assert torch.isfinite(pred.grad).all() and pred.grad[0].abs().sum() > 0


def test_loss_ciou_is_the_yolov8_loss(compose_config):
    assert compose_config(["loss=ciou"]).loss == compose_config(["loss=yolov8"]).loss == compose_config([]).loss


def test_multibox_family_losses(compose_config):
    multibox = compose_config(["loss=multibox"]).loss
    assert multibox.cls._target_.endswith("CrossEntropy") and multibox.box._target_.endswith("SmoothL1Loss")
    assert multibox.dfl is None and multibox.sampler.neg_pos_ratio == 3.0
    focal = compose_config(["loss=multibox_focal"]).loss
    assert focal.cls._target_.endswith("FocalLoss") and focal.sampler is None and focal.box == multibox.box


@pytest.mark.parametrize("option", options("loss/cls"))
def test_cls_option_builds_its_class_and_trains_by_its_activation(compose_config, option):
    cfg = compose_config([f"loss/cls={option}"])
    module = hydra.utils.instantiate(cfg.loss.cls)
    assert isinstance(module, ClassificationLoss) and type(module) is _declared_class(cfg.loss.cls)
    generator = torch.Generator().manual_seed(0)
    if module.activation == "softmax":  # C + 1 logits against integer labels, background 0
        logits, targets = torch.randn(5, 4, generator=generator), torch.tensor([0, 1, 2, 3, 0])
        shape = (5,)
    else:  # C logits against soft targets in [0, 1]
        logits, targets = torch.randn(2, 7, 3, generator=generator), torch.rand(2, 7, 3, generator=generator)
        shape = (2, 7, 3)
    logits.requires_grad_(True)
    value = module(logits, targets)
    assert module.activation in ("sigmoid", "softmax") and value.shape == shape and torch.isfinite(value).all()
    value.sum().backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


@pytest.mark.parametrize("option", options("loss/dfl"))
def test_distance_option_trains_the_head_it_declares(compose_config, option):
    node = compose_config([f"loss/dfl={option}"]).loss.dfl
    if node is None:  # the term switched off
        return
    module = hydra.utils.instantiate(node)
    assert isinstance(module, DistanceLoss) and type(module) is _declared_class(node)
    reg_max = 16 if module.needs_bins else 1
    logits = torch.randn(3, 4 * reg_max, generator=torch.Generator().manual_seed(0), requires_grad=True)
    value = module(logits, torch.tensor([[0.5, 1.0, 2.0, 3.5]]).expand(3, -1))
    assert value.shape == (3,) and torch.isfinite(value).all() and (value > 0).all()
    value.sum().backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_value_overrides_from_the_command_line(compose_config):
    cfg = compose_config(
        ["loss/box=alpha_ciou", "loss.box.alpha=2", "loss.weights.dfl=0", "loss/cls=focal", "loss.cls.gamma=1.5"],
    )
    box = hydra.utils.instantiate(cfg.loss.box)
    assert box.alpha == 2 and box.base == "ciou"
    assert hydra.utils.instantiate(cfg.loss.cls).gamma == 1.5
    criterion = hydra.utils.instantiate(cfg.module.criterion)
    assert criterion.gains == {"box": 7.5, "cls": 0.5, "dfl": 0.0}
    assert isinstance(criterion.box_loss, iou.AlphaIoULoss) and isinstance(criterion.cls_loss, classification.FocalLoss)
    # alpha-IoU's other bases from the command line
    cfg = compose_config(["loss/box=alpha_iou", "loss.box.base=giou"])
    assert hydra.utils.instantiate(cfg.loss.box).base == "giou"


def test_dfl_can_be_switched_off(compose_config):
    cfg = compose_config(["loss/box=giou", "loss/dfl=none"])
    assert cfg.loss.dfl is None
    assert isinstance(hydra.utils.instantiate(cfg.loss.box), iou.GIoULoss)
    criterion = hydra.utils.instantiate(cfg.module.criterion)
    assert criterion.dfl_loss is None
    assert isinstance(hydra.utils.instantiate(compose_config([]).module.criterion).dfl_loss, dfl.DFLoss)


def test_box_cls_and_dfl_choices_combine(compose_config):
    """`python train.py loss/box=siou loss/dfl=none loss/cls=vfl` composes to those three parts (the run's config)."""
    cfg = compose_config(["loss/box=siou", "loss/dfl=none", "loss/cls=vfl"])
    assert cfg.loss.dfl is None
    assert cfg.loss.box._target_ == "detector.losses.iou.SIoULoss"
    assert cfg.loss.cls._target_ == "detector.losses.classification.VarifocalLoss"
    criterion = hydra.utils.instantiate(cfg.module.criterion)
    assert criterion.dfl_loss is None and isinstance(criterion.box_loss, iou.SIoULoss)
    assert isinstance(criterion.cls_loss, classification.VarifocalLoss)


def test_tal_overlap_option(compose_config):
    """`assigner/overlap=nwd` swaps TAL's CIoU for NWD (C in pixels), also under tal_small; the default stays CIoU."""
    assert hydra.utils.instantiate(compose_config([]).assigner).overlap.func is iou.ciou
    for assigner in ("tal", "tal_small"):
        cfg = compose_config([f"assigner={assigner}", "assigner/overlap=nwd"])
        overlap = hydra.utils.instantiate(cfg.assigner).overlap
        assert overlap.func is gaussian.nwd and overlap.keywords == {"constant": 12.8}


@pytest.mark.parametrize("option", options("assigner/overlap"))
def test_overlap_option_is_a_similarity_in_0_1(compose_config, option):
    cfg = compose_config([f"assigner/overlap={option}"])
    overlap = hydra.utils.instantiate(cfg.assigner).overlap
    assert overlap.func is hydra.utils.get_method(cfg.assigner.overlap._target_)
    gt, pred = torch.tensor([[0.0, 0, 16, 16]]), torch.tensor([[4.0, 4, 20, 20]])
    assert 0 < overlap(gt, pred).item() < 1 and overlap(gt, gt).item() > overlap(gt, pred).item()
