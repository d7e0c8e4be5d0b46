"""Checkpoints written before the package was grouped by stage (their run configs name the old module paths and
settings) still load in evaluate.py / predict.py / export.py, with the same detections."""

import torch

from detector.deploy.load import load_detector, upgrade_run_config
from detector.models.ssd import SSDCSP
from detector.models.yolo import YOLODetector

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
