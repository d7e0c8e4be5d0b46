"""Every supported model x assigner x loss combination, assembled from the Hydra configs as `train.py` does,
runs a training step; the combinations that make no sense fail with a reason."""

from __future__ import annotations

import os
from pathlib import Path

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from detector.assigners.statistics import summarize
from detector.config import ConfigError, check_combination, compose
from detector.criteria.base import CriterionOutput

ROOT = Path(__file__).resolve().parents[2]
os.environ.setdefault("PROJECT_ROOT", str(ROOT))


def build(overrides: list[str], tmp_path: Path, img_size: int = 64):
    """Compose the config as train.py does, pass the combination check, check that the whole config resolves
    (train.py saves it resolved), and instantiate the LitDetector."""
    from hydra.core.hydra_config import HydraConfig

    cfg = compose("train", [*overrides, f"paths.data_dir={tmp_path}", f"data.img_size={img_size}"], return_hydra_config=True)
    check_combination(cfg)
    HydraConfig.instance().set_config(cfg)
    OmegaConf.to_container(cfg.module, resolve=True)
    OmegaConf.to_container(cfg.loss, resolve=True)
    return cfg, hydra.utils.instantiate(cfg.module)


def batch(img_size: int = 64):
    torch.manual_seed(0)
    images = torch.rand(2, 3, img_size, img_size)
    s = img_size / 64
    boxes = torch.tensor([[[4.0, 6, 30, 40], [34, 30, 60, 58]], [[10, 10, 22, 20], [0, 0, 0, 0]]]) * s
    labels, mask = torch.tensor([[0, 3], [1, -1]]), torch.tensor([[True, True], [True, False]])
    return images, labels, boxes, mask


def one_step(module, img_size: int = 64) -> CriterionOutput:
    images, labels, boxes, mask = batch(img_size)
    optimizer = torch.optim.SGD(module.model.parameters(), lr=1e-3)
    module.train()
    output = module.criterion(module.model(images), labels, boxes, mask, image_size=tuple(images.shape[-2:]))
    output.losses["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in module.model.parameters() if p.grad is not None)
    optimizer.step()
    module.eval()
    with torch.no_grad():
        detections = module.postprocess(module.model(images))
    assert len(detections) == 2 and all(d["boxes"].shape[-1] == 4 and len(d["scores"]) == len(d["labels"]) for d in detections)
    assert all(d["labels"].min() >= 0 and d["labels"].max() < 5 for d in detections if len(d["labels"]))
    return output


@pytest.mark.parametrize(
    "overrides, components",
    [
        (["model=ssd_csp_n"], ("MultiBoxCriterion", "SSDMatcher", "CrossEntropy", "SmoothL1Loss", "softmax")),
        (["experiment=ssd"], ("MultiBoxCriterion", "SSDMatcher", "CrossEntropy", "SmoothL1Loss", "softmax")),
        (["model=ssd_csp_n", "assigner=tal"], ("MultiBoxCriterion", "TaskAlignedAssigner", "CrossEntropy", "SmoothL1Loss", "softmax")),
        (["model=ssd_csp_n", "loss/cls=bce", "loss/box=giou"], ("MultiBoxCriterion", "SSDMatcher", "BCEWithLogits", "GIoULoss", "sigmoid")),
        (["model=ssd_csp_n", "loss/box=giou"], ("MultiBoxCriterion", "SSDMatcher", "CrossEntropy", "GIoULoss", "softmax")),
        (["model=ssd_csp_n", "loss=multibox_focal"], ("MultiBoxCriterion", "SSDMatcher", "FocalLoss", "SmoothL1Loss", "sigmoid")),
        (["model=ssd_csp_n", "assigner=tal", "loss/cls=bce", "loss/box=ciou"], ("MultiBoxCriterion", "TaskAlignedAssigner", "BCEWithLogits", "CIoULoss", "sigmoid")),
        (["model=ssd_csp_n", "postprocess=nms"], ("MultiBoxCriterion", "SSDMatcher", "CrossEntropy", "SmoothL1Loss", "softmax")),
        (["assigner=ssd"], ("YOLOv8Criterion", "SSDMatcher", "BCEWithLogits", "CIoULoss", "sigmoid")),
        (["postprocess=ssd"], ("YOLOv8Criterion", "TaskAlignedAssigner", "BCEWithLogits", "CIoULoss", "sigmoid")),
    ],
)
def test_combination_runs_a_training_step(tmp_path, overrides, components):
    cfg, module = build(overrides, tmp_path)
    criterion = module.criterion
    names = (type(criterion).__name__, type(criterion.assigner).__name__, type(criterion.cls_loss).__name__,
             type(criterion.box_loss).__name__, getattr(module.postprocess, "activation", None))
    assert names == components
    losses = one_step(module).losses
    assert torch.isfinite(losses["loss"]) and losses["loss"] > 0
    if "MultiBoxCriterion" in names:
        assert set(losses) == {"box", "cls", "loss"} and cfg.loss.dfl is None
        assert (criterion.sampler is None) == ("loss=multibox_focal" in overrides)  # hard negative mining


def test_ssd300_model_alone_runs_a_training_step_at_its_input_size(compose_config, tmp_path):
    cfg = compose_config(["model=ssd300_vgg16"])
    assert cfg.data.img_size == 300 and cfg.criterion._target_.endswith("MultiBoxCriterion")
    cfg, module = build(["model=ssd300_vgg16"], tmp_path, img_size=300)
    assert type(module.model).__name__ == "SSD300VGG16" and cfg.data.img_size == 300
    one_step(module, img_size=300)


@pytest.mark.parametrize(
    "overrides, error",
    [
        (["model=ssd_csp_n", "criterion=yolov8"], "choose criterion=multibox"),
        (["criterion=multibox"], "choose criterion=yolov8 "),
        (["loss=multibox"], "CrossEntropy needs softmax class logits.*choose loss/cls=(.*,)?bce(,|$)"),
        (["model=ssd_csp_n", "loss/dfl=dfl"], "choose loss/dfl=none"),
        (["model=ssd_csp_n", "+model.end2end=true"], "SSDCSP has no one-to-one branch"),
        (["model.reg_max=1"], r"^DFLoss needs distribution bins, .*: choose loss/dfl=l1 \(or loss/dfl=none\)$"),
        (["loss/dfl=l1"], r"^DistanceL1Loss regresses distances directly, .*: choose loss/dfl=dfl \(or loss/dfl=none\)$"),
    ],
)
def test_meaningless_combinations_are_refused_when_composed(compose_config, overrides, error):
    with pytest.raises(ConfigError, match=error):
        check_combination(compose_config(overrides))


def test_default_run_is_unchanged_by_the_criterion_group(tmp_path):
    cfg, module = build([], tmp_path)
    assert cfg.criterion._target_ == "detector.criteria.yolov8.YOLOv8Criterion"
    assert type(module.criterion.assigner).__name__ == "TaskAlignedAssigner"
    assert module.criterion.gains == {"box": 7.5, "cls": 0.5, "dfl": 1.5}


def test_train_refuses_a_combination_before_reading_any_data(compose_config, tmp_path):
    from detector.training.runner import train

    cfg = compose_config(["model=ssd_csp_n", "loss/cls=bce", "criterion=yolov8", f"paths.data_dir={tmp_path / 'data'}"],
                         return_hydra_config=True)
    with pytest.raises(ConfigError, match="choose criterion=multibox"):
        train(cfg)
    assert not (tmp_path / "data").exists()  # the synthetic data was not even generated


# every assigner config x every head family (YOLOv8 head, SSD head, the one-to-one branch of an end-to-end head, a
# DFL-free head); the fast tier runs each assigner on the YOLOv8 head and each head with ATSS and SimOTA, the rest is slow
ASSIGNERS = sorted(p.stem for p in (ROOT / "configs" / "assigner").glob("*.yaml"))
HEADS = {"yolov8": [], "ssd": ["model=ssd_csp_n"], "end2end": ["model.end2end=true"], "dfl_free": ["model.reg_max=1", "loss/dfl=l1"]}


def assigner_head_grid():
    for head, head_overrides in HEADS.items():
        for assigner in ASSIGNERS:
            fast = head == "yolov8" or assigner in ("atss", "simota")
            yield pytest.param([f"assigner={assigner}", *head_overrides], id=f"{assigner}-{head}",
                               marks=() if fast else pytest.mark.slow)


@pytest.mark.parametrize("overrides", assigner_head_grid())
def test_every_assigner_trains_every_head(tmp_path, overrides):
    cfg, module = build(overrides, tmp_path)
    losses, stats = one_step(module)
    assert torch.isfinite(losses["loss"]) and losses["loss"] > 0
    # the training step returned its assignment statistics: the batch's 3 GT boxes, each with positives
    stats = summarize(stats)
    assert stats["gt_count"] == 3 and stats["gt_without_pos"] == 0 and 0 < stats["pos_iou"] <= 1
    if "model.end2end=true" in overrides:
        assert "one2one" in losses and type(module.criterion.one2one_assigner).__name__ == "TaskAlignedAssigner"
        assert module.criterion.one2one_assigner.topk == 1
    if "model.reg_max=1" in overrides:
        assert "l1" in losses and "dfl" not in losses


@pytest.mark.parametrize("overrides", [
    pytest.param(["assigner=simota", "loss/cls=vfl", "loss/box=giou"], id="simota-vfl-giou"),
    pytest.param(["assigner=atss", "loss/cls=focal", "loss/box=siou", "model.end2end=true"], id="atss-focal-siou-end2end",
                 marks=pytest.mark.slow),
    pytest.param(["assigner=atss", "model=ssd_csp_n", "loss/cls=qfl", "loss/box=diou"], id="atss-ssd-qfl-diou",
                 marks=pytest.mark.slow),
    pytest.param(["assigner=simota", "model.reg_max=1", "loss/dfl=l1", "loss/cls=qfl", "loss/box=eiou"], id="simota-dfl_free-qfl-eiou",
                 marks=pytest.mark.slow),
])
def test_new_assigners_and_heads_with_other_losses(tmp_path, overrides):
    _, module = build(overrides, tmp_path)
    assert torch.isfinite(one_step(module).losses["loss"])


@pytest.mark.parametrize("overrides", [
    pytest.param(["loss/box=inner_mpdiou", "loss/cls=mal", "assigner/overlap=nwd"], id="nwd_tal-mal-inner_mpdiou",
                 marks=pytest.mark.slow),
    pytest.param(["model=ssd_csp_n", "loss/cls=bce", "loss/box=mpdiou", "loss.box.eps=1e-7"], id="ssd-bce-mpdiou",
                 marks=pytest.mark.slow),
    pytest.param(["loss/box=focaler_shape_iou", "loss/cls=vfl"], id="focaler_shape_iou", marks=pytest.mark.slow),
    pytest.param(["loss/box=probiou", "model.end2end=true"], id="probiou-end2end", marks=pytest.mark.slow),
])
def test_losses_after_2022_train(tmp_path, overrides):
    """The new options from the command line, with the image size reaching MPDIoU on both heads."""
    _, module = build(overrides, tmp_path)
    losses = one_step(module).losses
    assert torch.isfinite(losses["loss"]) and losses["box"] > 0
