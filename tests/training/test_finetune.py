"""Fine-tuning on the training side (the model is built with fresh weights, then prepared): matching weights are
loaded, a different class head is re-initialised, freezing works."""

import pytest
import torch

from detector.models import YOLODetector
from detector.models.detectors.ssd import SSDCSP
from detector.training.callbacks import Unfreeze
from detector.training.finetune import load_matching_weights, prepare_model
from detector.training.module import LitDetector


def prepared(*args, init_from=None, freeze=None, **kwargs) -> YOLODetector:
    """A YOLODetector(*args, **kwargs) prepared as the runner prepares a run's model."""
    model = YOLODetector(*args, **kwargs)
    prepare_model(model, init_from=init_from, freeze=freeze)
    return model


@pytest.fixture
def source_checkpoint(tmp_path):
    model = YOLODetector(5, "n")
    for p in model.parameters():
        torch.nn.init.normal_(p)
    path = tmp_path / "source.ckpt"
    # the layout of a Lightning checkpoint of LitDetector: weights under "state_dict" with a "model." prefix
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "epoch": 3}, path)
    return model, path


def test_matching_weights_load_and_class_head_is_reinitialised(source_checkpoint):
    source, path = source_checkpoint
    fresh = YOLODetector(3, "n")
    fresh_head = [b[-1].weight.clone() for b in fresh.head.cls_branches]
    model = prepared(3, "n", init_from=str(path))
    report = load_matching_weights(YOLODetector(3, "n"), path)
    # only the last conv of each class branch (3 levels x weight + bias) differs in shape
    assert sorted(report["shape_mismatch"]) == sorted(f"head.cls_branches.{i}.2.{p}" for i in range(3) for p in ("weight", "bias"))
    assert report["not_in_checkpoint"] == [] and report["unused"] == []
    assert torch.equal(model.backbone.stem[0].weight, source.backbone.stem[0].weight)
    assert torch.equal(model.head.box_branches[0][-1].weight, source.head.box_branches[0][-1].weight)
    # the new class head keeps its own initialisation (same seedless shapes: compare the bias prior)
    assert model.head.cls_branches[0][-1].weight.shape == fresh_head[0].shape
    assert torch.equal(model.head.cls_branches[0][-1].bias, fresh.head.cls_branches[0][-1].bias)


def test_freeze_backbone_then_unfreeze(source_checkpoint):
    _, path = source_checkpoint
    model = prepared(3, "n", init_from=str(path), freeze="backbone")
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.head.parameters())

    class Holder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

    class FakeTrainer:
        current_epoch = 2

    Unfreeze(epoch=2).on_train_epoch_start(FakeTrainer(), Holder())
    assert all(p.requires_grad for p in model.parameters())


def test_freeze_first_stages_and_bad_spec():
    model = prepared(3, "n", freeze=2)
    assert not any(p.requires_grad for p in model.backbone.stem.parameters())
    assert not any(p.requires_grad for p in model.backbone.stage2.parameters())
    assert all(p.requires_grad for p in model.backbone.stage3.parameters())
    with pytest.raises(ValueError, match="freeze must be 'backbone'"):
        prepared(3, "n", freeze="neck")


def test_not_a_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "junk.ckpt"
    torch.save({"state_dict": {"a": "not a tensor"}}, path)
    with pytest.raises(ValueError, match="neither a Lightning checkpoint nor a state dict"):
        prepared(3, "n", init_from=str(path))


def test_frozen_norms_keep_their_statistics_and_a_resumed_run_still_unfreezes():
    model = prepared(3, "n", image_size=64, freeze=2)
    LitDetector(model, None, None, None).train()  # Lightning's train() at each epoch start
    stages = (model.backbone.stem, model.backbone.stage2)
    frozen = [m for s in stages for m in s.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert frozen and not any(m.training for m in frozen)
    assert all(m.training for m in model.backbone.stage3.modules())
    statistics = [m.running_var.clone() for m in frozen]
    model(torch.rand(2, 3, 64, 64))  # a training-mode forward
    assert all(torch.equal(m.running_var, s) for m, s in zip(frozen, statistics))

    holder = LitDetector(model, None, None, None)
    # resumed at epoch 5 with Unfreeze(epoch=3): the model is rebuilt frozen, the first epoch start unfreezes it
    Unfreeze(epoch=3).on_train_epoch_start(type("FakeTrainer", (), {"current_epoch": 5})(), holder)
    assert all(p.requires_grad for p in model.parameters()) and all(m.training for m in model.modules())


def test_end_to_end_model_starts_its_one_to_one_head_from_a_plain_checkpoint(tmp_path):
    torch.manual_seed(0)
    source = YOLODetector(3, "n", image_size=64)
    torch.save({"state_dict": {f"model.{k}": v for k, v in source.state_dict().items()}}, tmp_path / "plain.ckpt")
    model = YOLODetector(3, "n", image_size=64, end2end=True)
    prepare_model(model, init_from=str(tmp_path / "plain.ckpt"))
    for name, value in source.head.state_dict().items():
        assert torch.equal(model.head.state_dict()[name], value) and torch.equal(model.one2one_head.state_dict()[name], value)


def test_ssd_models_fine_tune_too_and_a_model_without_backbone_is_named(source_checkpoint):
    model = SSDCSP(3)
    report = load_matching_weights(model, source_checkpoint[1])  # a YOLO checkpoint: its CSP backbone and PAN fit
    assert {k for k in model.state_dict() if k.startswith(("backbone.", "neck."))} <= set(report["loaded"])
    prepare_model(model, freeze="backbone")
    assert not any(p.requires_grad for p in model.backbone.parameters()) and all(p.requires_grad for p in model.head.parameters())
    with pytest.raises(ValueError, match=r"model.freeze='backbone': Linear has no `backbone` to freeze"):
        prepare_model(torch.nn.Linear(2, 2), freeze="backbone")
