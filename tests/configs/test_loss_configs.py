"""Every loss option (loss/box, loss/cls, loss/dfl) and family loss (loss=yolov8, multibox, ...) composes with Hydra,
instantiates, and runs; command-line overrides work."""

from __future__ import annotations

import os
from pathlib import Path

import hydra
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from detector.config import register_resolvers
from detector.losses import classification, dfl, gaussian, iou, regression

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
os.environ.setdefault("PROJECT_ROOT", str(ROOT))
register_resolvers()

# loss/box option -> (box module class, expected attributes)
BOX_OPTIONS = {
    "ciou": (iou.CIoULoss, {}),
    "iou": (iou.IoULoss, {"mode": "linear"}),
    "log_iou": (iou.IoULoss, {"mode": "log"}),
    "giou": (iou.GIoULoss, {}),
    "diou": (iou.DIoULoss, {}),
    "eiou": (iou.EIoULoss, {}),
    "focal_eiou": (iou.FocalEIoULoss, {"gamma": 0.5, "detach_weight": True}),
    "alpha_ciou": (iou.AlphaIoULoss, {"alpha": 3.0, "base": "ciou"}),
    "alpha_iou": (iou.AlphaIoULoss, {"alpha": 3.0, "base": "iou"}),
    "rising_gradient_iou": (iou.RisingGradientIoULoss, {"beta": 0.95}),
    "siou": (iou.SIoULoss, {"theta": 4.0}),
    "wiou": (iou.WIoULoss, {"version": 3, "alpha": 1.9, "delta": 3.0}),
    "wiou_v1": (iou.WIoULoss, {"version": 1}),
    "smooth_l1": (regression.SmoothL1Loss, {"beta": 1.0}),
    "l1": (regression.L1Loss, {}),
    "l2": (regression.L2Loss, {}),
    "balanced_l1": (regression.BalancedL1Loss, {"alpha": 0.5, "gamma": 1.5, "beta": 1.0}),
    "mpdiou": (iou.MPDIoULoss, {"needs_image_size": True}),
    "shape_iou": (iou.ShapeIoULoss, {"scale": 0.0}),
    "nwd": (gaussian.NWDLoss, {"constant": 1.6}),
    "probiou": (gaussian.ProbIoULoss, {"mode": "l1"}),
}
# Inner-IoU and Focaler-IoU over every base of the form 1 - IoU + penalty
WRAPPED_BASES = {
    "iou": iou.IoULoss, "giou": iou.GIoULoss, "diou": iou.DIoULoss, "ciou": iou.CIoULoss, "eiou": iou.EIoULoss,
    "siou": iou.SIoULoss, "mpdiou": iou.MPDIoULoss, "shape_iou": iou.ShapeIoULoss,
}
for _base, _base_class in WRAPPED_BASES.items():
    BOX_OPTIONS[f"inner_{_base}"] = (iou.InnerIoULoss, {"ratio": 0.7})
    BOX_OPTIONS[f"focaler_{_base}"] = (iou.FocalerIoULoss, {"d": 0.0, "u": 0.95})
CLS_OPTIONS = {
    "bce": classification.BCEWithLogits,
    "focal": classification.FocalLoss,
    "qfl": classification.QualityFocalLoss,
    "vfl": classification.VarifocalLoss,
    "ce": classification.CrossEntropy,
    "ce_smooth": classification.CrossEntropy,
    "mal": classification.MatchabilityAwareLoss,
}


@pytest.fixture
def compose_train():
    def _compose(overrides: list[str]):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
            return compose("train", overrides=overrides)

    yield _compose
    GlobalHydra.instance().clear()


def _boxes():
    pred = torch.tensor([[0.0, 0, 2, 2], [1.0, 1, 4, 3], [0.0, 0, 1, 1]])
    target = torch.tensor([[1.0, 1, 3, 3], [1.0, 1, 4, 3], [5.0, 5, 6, 6]])
    return pred, target


def test_every_option_is_listed_and_the_loss_group_holds_only_family_losses():
    assert {p.stem for p in (CONFIGS / "loss" / "box").glob("*.yaml")} == set(BOX_OPTIONS)
    assert {p.stem for p in (CONFIGS / "loss" / "cls").glob("*.yaml")} == set(CLS_OPTIONS)
    # no per-box-loss copies: the family losses and the alias that the design card names (loss=ciou)
    assert {p.stem for p in (CONFIGS / "loss").glob("*.yaml")} == {"yolov8", "ciou", "multibox", "multibox_focal"}


@pytest.mark.parametrize("option", list(BOX_OPTIONS))
def test_box_option_composes_into_the_yolov8_loss(compose_train, option):
    cfg = compose_train([f"loss/box={option}"])
    box_class, attributes = BOX_OPTIONS[option]
    box = hydra.utils.instantiate(cfg.loss.box)
    assert type(box) is box_class
    for name, value in attributes.items():
        assert getattr(box, name) == value
    if option.startswith(("inner_", "focaler_")):
        assert type(box.base) is WRAPPED_BASES[option.split("_", 1)[1]]
    # the rest of the YOLOv8 loss is kept: BCE, DFL, gains 7.5 / 0.5 / 1.5
    assert isinstance(hydra.utils.instantiate(cfg.loss.cls), classification.BCEWithLogits)
    assert isinstance(hydra.utils.instantiate(cfg.loss.dfl), dfl.DFLoss)
    assert dict(cfg.loss.weights) == {"box": 7.5, "cls": 0.5, "dfl": 1.5}
    pred, target = _boxes()
    value = box(pred, target, torch.tensor([8.0, 8.0])) if box.needs_image_size else box(pred, target)
    assert value.shape == (3,) and torch.isfinite(value).all() and value[0] > 0


def test_loss_ciou_is_the_yolov8_loss(compose_train):
    assert compose_train(["loss=ciou"]).loss == compose_train(["loss=yolov8"]).loss == compose_train([]).loss


def test_multibox_family_losses(compose_train):
    multibox = compose_train(["loss=multibox"]).loss
    assert multibox.cls._target_.endswith("CrossEntropy") and multibox.box._target_.endswith("SmoothL1Loss")
    assert multibox.dfl is None and multibox.sampler.neg_pos_ratio == 3.0
    focal = compose_train(["loss=multibox_focal"]).loss
    assert focal.cls._target_.endswith("FocalLoss") and focal.sampler is None and focal.box == multibox.box


@pytest.mark.parametrize("option", list(CLS_OPTIONS))
def test_cls_option_from_the_command_line(compose_train, option):
    cfg = compose_train([f"loss/cls={option}"])
    module = hydra.utils.instantiate(cfg.loss.cls)
    assert type(module) is CLS_OPTIONS[option]
    if option.startswith("ce"):
        assert module.label_smoothing == (0.1 if option == "ce_smooth" else 0.0)
        assert module(torch.randn(5, 4), torch.tensor([0, 1, 2, 3, 0])).shape == (5,)
    else:
        assert module(torch.randn(2, 7, 3), torch.rand(2, 7, 3)).shape == (2, 7, 3)


def test_value_overrides_from_the_command_line(compose_train):
    cfg = compose_train(
        ["loss/box=alpha_ciou", "loss.box.alpha=2", "loss.weights.dfl=0", "loss/cls=focal", "loss.cls.gamma=1.5"],
    )
    box = hydra.utils.instantiate(cfg.loss.box)
    assert box.alpha == 2 and box.base == "ciou"
    assert hydra.utils.instantiate(cfg.loss.cls).gamma == 1.5
    criterion = hydra.utils.instantiate(cfg.module.criterion)
    assert criterion.gains == {"box": 7.5, "cls": 0.5, "dfl": 0.0}
    assert isinstance(criterion.box_loss, iou.AlphaIoULoss) and isinstance(criterion.cls_loss, classification.FocalLoss)
    # alpha-IoU's other bases from the command line
    cfg = compose_train(["loss/box=alpha_iou", "loss.box.base=giou"])
    assert hydra.utils.instantiate(cfg.loss.box).base == "giou"


def test_dfl_can_be_switched_off(compose_train):
    cfg = compose_train(["loss/box=giou", "loss/dfl=none"])
    assert cfg.loss.dfl is None
    assert isinstance(hydra.utils.instantiate(cfg.loss.box), iou.GIoULoss)
    criterion = hydra.utils.instantiate(cfg.module.criterion)
    assert criterion.dfl_loss is None
    assert isinstance(hydra.utils.instantiate(compose_train([]).module.criterion).dfl_loss, dfl.DFLoss)


def test_box_cls_and_dfl_choices_combine(compose_train):
    """`python train.py loss/box=siou loss/dfl=none loss/cls=vfl` composes to those three parts (the run's config)."""
    cfg = compose_train(["loss/box=siou", "loss/dfl=none", "loss/cls=vfl"])
    assert cfg.loss.dfl is None
    assert cfg.loss.box._target_ == "detector.losses.iou.SIoULoss"
    assert cfg.loss.cls._target_ == "detector.losses.classification.VarifocalLoss"
    criterion = hydra.utils.instantiate(cfg.module.criterion)
    assert criterion.dfl_loss is None and isinstance(criterion.box_loss, iou.SIoULoss)
    assert isinstance(criterion.cls_loss, classification.VarifocalLoss)


def test_tal_overlap_option(compose_train):
    """`assigner/overlap=nwd` swaps TAL's CIoU for NWD (C in pixels), also under tal_small; the default stays CIoU."""
    assert hydra.utils.instantiate(compose_train([]).assigner).overlap.func is iou.ciou
    for assigner in ("tal", "tal_small"):
        cfg = compose_train([f"assigner={assigner}", "assigner/overlap=nwd"])
        overlap = hydra.utils.instantiate(cfg.assigner).overlap
        assert overlap.func is gaussian.nwd and overlap.keywords == {"constant": 12.8}
    similarities = {"ciou": iou.ciou, "iou": iou.iou, "giou": iou.giou, "diou": iou.diou, "nwd": gaussian.nwd,
                    "probiou": gaussian.probiou}
    assert {p.stem for p in (CONFIGS / "assigner" / "overlap").glob("*.yaml")} == set(similarities)
    gt, pred = torch.tensor([[0.0, 0, 16, 16]]), torch.tensor([[4.0, 4, 20, 20]])
    for name, function in similarities.items():
        overlap = hydra.utils.instantiate(compose_train([f"assigner/overlap={name}"]).assigner).overlap
        assert overlap.func is function and 0 < overlap(gt, pred).item() < 1, name
