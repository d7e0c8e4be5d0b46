"""Checkpoints are read with weights_only=True and rebuild the model alone, with the EMA weights."""

import pytest
import torch

from detector.deploy.load import load_detector, read_checkpoint
from detector.deploy.predict import detect
from detector.models.safe_pickle import CheckpointError, UnsafePickleError

from ..conftest import TRAINED_IMG_SIZE as IMG_SIZE


def test_checkpoint_holds_plain_types_and_everything_needed(trained):
    checkpoint = torch.load(trained["ckpt"], map_location="cpu", weights_only=True)  # raises on any pickled class
    assert checkpoint["class_names"] == ["circle", "square", "triangle", "star", "cross"]
    assert checkpoint["category_ids"] == [1, 2, 3, 4, 5] and checkpoint["img_size"] == IMG_SIZE
    config = checkpoint["run_config"]
    assert config["model"]["num_classes"] == 5 and config["model"]["image_size"] == IMG_SIZE
    assert config["data"]["img_size"] == IMG_SIZE and config["postprocess"]["nms"] == "class_aware"
    assert "current_model_state" in checkpoint  # the EMA callback was on: state_dict holds the averaged weights


def test_load_detector_uses_the_ema_weights(trained):
    checkpoint = torch.load(trained["ckpt"], map_location="cpu", weights_only=True)
    model, _, meta = load_detector(trained["ckpt"], "cpu")
    assert not model.training and meta["weights"] == "ema" and meta["ema"] and meta["img_size"] == IMG_SIZE
    assert meta["class_names"] == checkpoint["class_names"] and meta["device"] == "cpu"
    loaded = model.state_dict()
    ema = {k[len("model."):]: v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
    raw = {k[len("model."):]: v for k, v in checkpoint["current_model_state"].items() if k.startswith("model.")}
    assert loaded.keys() == ema.keys()
    assert all(torch.equal(loaded[k], ema[k]) for k in ema)
    # two optimizer steps made the raw weights differ from their average
    assert any(not torch.equal(ema[k], raw[k]) for k in ema if ema[k].is_floating_point())
    raw_model, _, raw_meta = load_detector(trained["ckpt"], "cpu", weights="raw")
    assert raw_meta["weights"] == "raw" and all(torch.equal(raw_model.state_dict()[k], raw[k]) for k in raw)


def test_postprocess_settings_come_from_the_checkpoint_unless_overridden(trained):
    _, postprocessor, _ = load_detector(trained["ckpt"], "cpu")
    assert (postprocessor.conf_threshold, postprocessor.iou_threshold, postprocessor.nms) == (0.001, 0.7, "class_aware")
    _, postprocessor, meta = load_detector(trained["ckpt"], "cpu", conf_threshold=0.3, nms="diou", iou_threshold=None)
    assert (postprocessor.conf_threshold, postprocessor.iou_threshold, postprocessor.nms) == (0.3, 0.7, "diou")
    assert meta["postprocess"]["nms"] == "diou" and postprocessor.activation == "sigmoid"
    with pytest.raises(TypeError, match="conf_threshold"):
        load_detector(trained["ckpt"], "cpu", confidence=0.3)


class NotAllowed:
    pass


def test_a_checkpoint_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": NotAllowed()}, path)
    with pytest.raises(UnsafePickleError, match=r"evil.ckpt: refusing to load: its pickle references \S+NotAllowed"):
        read_checkpoint(path)
    with pytest.raises(CheckpointError, match=r"missing.ckpt: no such file"):
        read_checkpoint(tmp_path / "missing.ckpt")


def test_checkpoint_without_config_needs_the_run_config(trained, tmp_path):
    checkpoint = torch.load(trained["ckpt"], map_location="cpu", weights_only=True)
    del checkpoint["run_config"]
    old = tmp_path / "checkpoints" / "old.ckpt"
    old.parent.mkdir()
    torch.save(checkpoint, old)
    with pytest.raises(CheckpointError, match=r"old.ckpt: no run_config"):
        load_detector(old, "cpu")
    model, _, meta = load_detector(old, "cpu", run_config=trained["run"] / "config_resolved.yaml")
    assert meta["num_classes"] == 5 and sum(p.numel() for p in model.parameters()) > 1e6
    # found by itself when the checkpoint is in <run dir>/checkpoints/
    (tmp_path / "config_resolved.yaml").write_text((trained["run"] / "config_resolved.yaml").read_text())
    assert load_detector(old, "cpu")[2]["img_size"] == IMG_SIZE


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_and_cpu_give_the_same_detections(trained):
    images = torch.randint(0, 256, (2, 3, IMG_SIZE, IMG_SIZE), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    results = {}
    for device in ("cpu", "cuda"):
        model, postprocessor, _ = load_detector(trained["ckpt"], device, max_detections=20)
        assert next(model.parameters()).device.type == device
        results[device] = detect(model, postprocessor, images, [(1.0, 1.0)] * 2, [(IMG_SIZE, IMG_SIZE)] * 2)
    for cpu, gpu in zip(results["cpu"], results["cuda"]):
        torch.testing.assert_close(gpu["scores"], cpu["scores"], atol=1e-3, rtol=0)


def test_config_targets_outside_the_project_are_refused(trained, tmp_path):
    # weights_only=True makes unpickling safe; the stored config must not smuggle in a callable either
    checkpoint = torch.load(trained["ckpt"], map_location="cpu", weights_only=True)
    checkpoint["run_config"]["model"]["_target_"] = "os.system"
    path = tmp_path / "checkpoints" / "evil.ckpt"
    path.parent.mkdir()
    torch.save(checkpoint, path)
    with pytest.raises(ValueError, match="refusing to instantiate 'os.system'"):
        load_detector(path, "cpu")
