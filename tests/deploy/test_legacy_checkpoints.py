"""Checkpoints written before the package was grouped by stage (their run configs name the old module paths and
settings) still load in evaluate.py / predict.py / export.py, with the same detections."""

import copy

import pytest
import torch
import torchvision.models._api as torchvision_api

from detector.deploy.load import load_detector, upgrade_run_config
from detector.models.backbones.torchvision import ResNet
from detector.models.detectors.ssd import SSD300VGG16, SSDCSP
from detector.models.detectors.yolo import YOLODetector

# what train.py stored in a checkpoint's run_config before December 2026 (the parts load_detector reads)
OLD_YOLO = {
    "model": {"_target_": "detector.models.YOLODetector", "num_classes": 2, "scale": "n", "reg_max": 16,
              "image_size": 64, "init_from": None, "freeze": None, "compile": False,
              "backbone": {"_target_": "detector.models.backbones.CSPDarknet", "scale": "n"}},
    "postprocess": {"_target_": "detector.postprocess.Postprocessor", "reg_max": 16, "conf_threshold": 0.001,
                    "iou_threshold": 0.7, "max_detections": 300, "max_candidates": 30000, "nms": "class_aware"},
    "loss": {"cls": {"_target_": "detector.losses.classification.BCEWithLogits"}},
    "data": {"img_size": 64},
}
OLD_SSD = {
    "model": {"_target_": "detector.models.ssd.SSDCSP", "num_classes": 2, "scale": "n", "extra_levels": 2,
              "head_channels": None, "aspect_ratios": None, "scales": None, "min_scale": 0.2, "max_scale": 0.9,
              "first_scale": 0.1, "steps": None, "clip": True, "variances": [0.1, 0.2], "reg_max": None, "compile": False},
    "postprocess": {"_target_": "detector.postprocess.SSDPostprocessor", "variances": [0.1, 0.2], "activation": "auto",
                    "cls_loss": "detector.losses.classification.CrossEntropy", "conf_threshold": 0.01,
                    "iou_threshold": 0.45, "top_k": 400, "max_detections": 200},
    "loss": {"cls": {"_target_": "detector.losses.classification.CrossEntropy"}},
    "data": {"img_size": 64},
}


def save_old_checkpoint(path, model, run_config):
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "run_config": run_config, "class_names": ["a", "b"], "category_ids": [1, 2],
                "img_size": 64, "epoch": 3, "global_step": 12}, path)


def test_old_run_configs_are_upgraded_to_todays_targets_and_settings():
    yolo, ssd = upgrade_run_config(OLD_YOLO), upgrade_run_config(OLD_SSD)
    assert yolo["model"]["backbone"]["_target_"] == "detector.models.backbones.csp.CSPDarknet"
    assert yolo["model"]["reg_max"] == 16  # a real setting of the YOLOv8 model stays
    assert yolo["postprocess"] == {
        "_target_": "detector.postprocess.postprocessors.Postprocessor", "conf_threshold": 0.001, "iou_threshold": 0.7,
        "max_detections": 300, "max_candidates": 30000, "nms": "class_aware", "activation": "sigmoid"}
    assert "reg_max" not in ssd["model"] and ssd["postprocess"]["activation"] == "softmax"
    assert ssd["model"]["_target_"] == "detector.models.detectors.ssd.SSDCSP"  # models/ssd.py until December 2026
    assert upgrade_run_config({"_target_": "detector.models.yolo.YOLODetector"}) == {
        "_target_": "detector.models.detectors.yolo.YOLODetector"}
    assert ssd["postprocess"]["_target_"] == "detector.postprocess.postprocessors.SSDPostprocessor"
    assert not {"variances", "cls_loss"} & set(ssd["postprocess"])
    assert upgrade_run_config(yolo) == yolo  # today's configs pass through unchanged
    renamed = upgrade_run_config({"loss": {"box": {"_target_": "detector.losses.iou.RIoULoss", "beta": 0.95}}})
    assert renamed["loss"]["box"]["_target_"] == "detector.losses.iou.RisingGradientIoULoss"


def test_old_checkpoints_load_and_detect_as_the_model_they_hold(tmp_path):
    torch.manual_seed(0)
    images = torch.rand(2, 3, 64, 64)
    for name, model, config in (("yolo", YOLODetector(2, "n", image_size=64), OLD_YOLO), ("ssd", SSDCSP(2), OLD_SSD)):
        path = tmp_path / f"{name}.ckpt"
        save_old_checkpoint(path, model.eval(), config)
        loaded, postprocessor, meta = load_detector(path, "cpu")
        assert meta["class_names"] == ["a", "b"] and meta["img_size"] == 64
        with torch.no_grad():
            expected, actual = model(images), loaded(images)
        torch.testing.assert_close(actual.decode_boxes(), expected.decode_boxes(), rtol=0, atol=0)
        torch.testing.assert_close(postprocessor(actual)[0]["scores"], postprocessor(expected)[0]["scores"], rtol=0, atol=0)



# the weight options that model configs passed to the constructors before December 2026 (the fine-tuning source, the
# ImageNet weights of a torchvision backbone or of SSD300's VGG16), pointing at files that no longer exist
OLD_WEIGHT_OPTIONS = {
    "yolo": {"init_from": "/gone/source.ckpt", "freeze": "backbone"},
    "resnet": {"init_from": "/gone/source.ckpt", "freeze": 2,
               "backbone": {"_target_": "detector.models.backbones.torchvision.ResNet", "depth": 18, "pretrained": True,
                            "weights": "/gone/resnet18-f37072fd.pth"}},
    "ssd300": {"_target_": "detector.models.ssd.SSD300VGG16", "num_classes": 2, "pretrained_backbone": True,
               "backbone_weights": "/gone/vgg16_features-amdegroot-88682ab5.pth", "compile": False},
}
BUILT = {"yolo": lambda: YOLODetector(2, "n", image_size=64),
         "resnet": lambda: YOLODetector(2, "n", image_size=64, backbone=ResNet(18)),
         "ssd300": lambda: SSD300VGG16(2)}


@pytest.mark.parametrize("name", sorted(OLD_WEIGHT_OPTIONS))
def test_old_checkpoints_with_weight_options_load_the_same_weights_reading_nothing_else(tmp_path, monkeypatch, name):
    """Checkpoints whose model config holds the weight options of the old layout (constructor arguments then): the model
    is rebuilt without downloading or reading the files they name, with exactly the checkpoint's tensors."""
    monkeypatch.setattr(torchvision_api, "load_state_dict_from_url", lambda *a, **k: pytest.fail("no download"))
    config = copy.deepcopy(OLD_YOLO)
    if name == "ssd300":
        config["model"] = dict(OLD_WEIGHT_OPTIONS[name])
    else:
        config["model"].update(copy.deepcopy(OLD_WEIGHT_OPTIONS[name]))
    torch.manual_seed(0)
    model = BUILT[name]()
    save_old_checkpoint(tmp_path / "old.ckpt", model, config)
    loaded, _, _ = load_detector(tmp_path / "old.ckpt", "cpu")
    expected = model.state_dict()
    assert type(loaded) is type(model) and loaded.state_dict().keys() == expected.keys()
    assert all(torch.equal(value, expected[key]) for key, value in loaded.state_dict().items())
    assert all(p.requires_grad for p in loaded.parameters())  # `freeze` is not applied to a loaded model
