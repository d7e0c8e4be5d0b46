"""YOLOv8 checkpoints of ultralytics, imported without ultralytics (detector.models.yolov8_import): the converted model
computes what ultralytics' model computes.

The reference checkpoints are built by ultralytics itself (optional: `pip install -e .[reference]`; skipped when it is
absent) from the yolov8n/s yaml files it ships, with random weights (no download), and saved the way its trainer saves
them (the model under 'ema', half precision, train_args, metrics as numpy scalars). ultralytics runs in a subprocess:
importing it monkey-patches cv2 and torch.save process-wide."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
import torch

from detector.deploy.load import load_detector
from detector.models.finetune import load_matching_weights, read_state_dict
from detector.models.yolo import YOLODetector
from detector.models.yolov8_import import (
    YOLOv8ImportError,
    convert_checkpoint,
    is_ultralytics_checkpoint,
    read_yolov8,
)
from detector.postprocess.postprocessors import Postprocessor

# argv: yaml name, number of classes, output checkpoint, half|float, input images (.pt), reference outputs (.pt),
# conf, iou. Builds the model with random weights (batch-norm affine parameters and statistics too, so that every
# tensor matters), saves it
# as ultralytics' trainer does, and evaluates the saved weights (after the same precision rounding) in float32.
REFERENCE_SCRIPT = """
import datetime, sys
from copy import deepcopy
import numpy as np
import torch
import ultralytics
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils import IterableSimpleNamespace
from ultralytics.utils.nms import non_max_suppression

yaml_name, nc, out, precision, images, outputs = sys.argv[1], int(sys.argv[2]), *sys.argv[3:7]
conf, iou = float(sys.argv[7]), float(sys.argv[8])
torch.manual_seed(0)
model = DetectionModel(yaml_name, nc=nc, verbose=False)
norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
with torch.no_grad():  # batch-norm statistics of smooth random images, so that features differ across the image
    for m in norms:
        m.weight.uniform_(0.5, 1.5); m.bias.uniform_(-0.2, 0.2); m.reset_running_stats(); m.momentum = None
    model.train()(torch.nn.functional.interpolate(torch.rand(8, 3, 8, 10), size=(256, 320), mode="bilinear"))
    for m in norms:
        m.momentum = 0.03
    for branch in model.model[-1].cv3:  # class scores spread over (0, 1) rather than all near the prior's 1e-4
        branch[-1].bias.uniform_(-3.0, 0.0)
model.names = {i: f"class{i}" for i in range(nc)}
model.args = IterableSimpleNamespace(task=model.task if hasattr(model, "task") else "detect", imgsz=320)
ema = deepcopy(model).half() if precision == "half" else deepcopy(model)
task = {"DetectionModel": "detect", "SegmentationModel": "segment", "PoseModel": "pose"}.get(type(model).__name__, "?")
torch.save({"epoch": 3, "best_fitness": np.float64(0.5), "model": None, "ema": ema, "updates": 10, "optimizer": None,
            "train_args": {"task": task, "imgsz": 320, "model": yaml_name},
            "train_metrics": {"metrics/mAP50(B)": np.float64(0.1), "fitness": np.float64(0.2)},
            "date": datetime.datetime.now().isoformat(), "version": ultralytics.__version__,
            "license": "AGPL-3.0", "docs": "https://docs.ultralytics.com"}, out)
if images != "-":
    reference = deepcopy(ema).float().eval()
    with torch.no_grad():
        decoded, raw = reference(torch.load(images))
    detections = non_max_suppression(decoded, conf, iou, multi_label=True, max_det=300, max_time_img=600.0)
    torch.save({"boxes": raw["boxes"], "scores": raw["scores"], "detections": detections}, outputs)
"""


def ultralytics_checkpoint(tmp_path, yaml_name: str, num_classes: int, precision: str, images=None,
                           conf: float = 0.25, iou: float = 0.7):
    """(checkpoint path, reference outputs or None) made by ultralytics in a subprocess."""
    if importlib.util.find_spec("ultralytics") is None:
        pytest.skip("ultralytics (optional reference, pip install -e .[reference]) not installed")
    name = f"{yaml_name.removesuffix('.yaml')}_{num_classes}_{precision}"
    path, outputs = tmp_path / f"{name}.pt", tmp_path / f"{name}_outputs.pt"
    image_file = "-"
    if images is not None:
        image_file = str(tmp_path / f"{name}_images.pt")
        torch.save(images, image_file)
    run = subprocess.run([sys.executable, "-c", REFERENCE_SCRIPT, yaml_name, str(num_classes), str(path), precision,
                          image_file, str(outputs), str(conf), str(iou)],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    return path, (torch.load(outputs) if images is not None else None)


def assert_same_as_ultralytics(tmp_path, yaml_name: str, num_classes: int, conf: float) -> None:
    torch.manual_seed(1)
    # smooth random images (features that differ across the image), not square (rows and columns must not be swapped)
    images = torch.nn.functional.interpolate(torch.rand(2, 3, 8, 10), size=(256, 320), mode="bilinear")
    path, reference = ultralytics_checkpoint(tmp_path, yaml_name, num_classes, "float", images, conf=conf)
    convert_checkpoint(path, tmp_path / "converted.ckpt")
    model, _, meta = load_detector(tmp_path / "converted.ckpt", "cpu")
    assert meta["class_names"] == [f"class{i}" for i in range(num_classes)] and meta["img_size"] == 320
    with torch.no_grad():
        output = model(images)
    # raw head outputs, every anchor: 4 x 16 box bins and the class logits
    assert output.box_logits.shape == (2, 32 * 40 + 16 * 20 + 8 * 10, 64)
    torch.testing.assert_close(output.box_logits, reference["boxes"].transpose(1, 2), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(output.cls_logits, reference["scores"].transpose(1, 2), rtol=1e-5, atol=1e-5)
    # detections after NMS with the same thresholds (multi-label, class-aware, 300 at most)
    detections = Postprocessor(conf_threshold=conf, iou_threshold=0.7, max_detections=300)(output)
    for ours, theirs in zip(detections, reference["detections"]):
        assert 5 <= len(theirs) == len(ours["scores"])  # the thresholds leave something to compare
        order = ours["scores"].argsort(descending=True)
        torch.testing.assert_close(ours["boxes"][order], theirs[:, :4], rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(ours["scores"][order], theirs[:, 4], rtol=1e-5, atol=1e-6)
        assert torch.equal(ours["labels"][order], theirs[:, 5].long())


def test_yolov8n_outputs_equal_ultralytics(tmp_path):
    assert_same_as_ultralytics(tmp_path, "yolov8n.yaml", 3, conf=0.25)


@pytest.mark.slow
def test_yolov8s_with_80_classes_outputs_equal_ultralytics(tmp_path):
    assert_same_as_ultralytics(tmp_path, "yolov8s.yaml", 80, conf=0.5)


def test_half_precision_checkpoint_round_trip(tmp_path):
    """A checkpoint as ultralytics' trainer writes it (half precision under 'ema'): every one of our 354 tensors is
    the checkpoint's, widened to float32; the converted file loads for evaluation and for init_from."""
    path, _ = ultralytics_checkpoint(tmp_path, "yolov8n.yaml", 3, "half")
    assert is_ultralytics_checkpoint(path) and not is_ultralytics_checkpoint(tmp_path / "missing.pt")
    weights = read_yolov8(path)
    assert (weights.scale, weights.num_classes, weights.img_size, weights.reg_max) == ("n", 3, 320, 16)
    assert weights.source["entry"] == "ema" and weights.source["task"] == "detect"
    model = YOLODetector(3, "n")
    assert set(weights.state_dict) == set(model.state_dict())
    assert all(v.dtype == torch.float32 for k, v in weights.state_dict.items() if "num_batches" not in k)
    # half-precision values, widened exactly
    stem = weights.state_dict["backbone.stem.0.weight"]
    assert torch.equal(stem, stem.half().float())

    converted = tmp_path / "converted.ckpt"
    convert_checkpoint(path, converted)
    assert torch.equal(read_state_dict(converted)["head.cls_branches.0.2.weight"], weights.state_dict["head.cls_branches.0.2.weight"])
    # init_from takes the ultralytics file directly, or the converted one: the same weights
    direct, via_file = YOLODetector(3, "n", init_from=str(path)), YOLODetector(3, "n", init_from=str(converted))
    for key, value in direct.state_dict().items():
        assert torch.equal(value, via_file.state_dict()[key]) and torch.equal(value, weights.state_dict[key])


def test_init_from_with_another_class_count_reinitialises_the_class_branch(tmp_path):
    path, _ = ultralytics_checkpoint(tmp_path, "yolov8n.yaml", 80, "half")
    trainable = read_yolov8(path).state_dict
    # yolov8n's published count: 3,157,200 parameters, 16 of them the fixed DFL projection
    assert sum(v.numel() for k, v in trainable.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))) == 3_157_184
    model = YOLODetector(5, "n")
    report = load_matching_weights(model, path)
    assert report["shape_mismatch"] and all(".cls_branches." in k for k in report["shape_mismatch"])
    assert not report["not_in_checkpoint"] and not report["unused"]
    assert any(k.startswith("backbone.") for k in report["loaded"])
    with pytest.raises(ValueError, match=r"YOLOv8n checkpoint.*model.scale=n"):
        YOLODetector(80, "s", init_from=str(path))


def test_other_tasks_and_architectures_are_refused(tmp_path):
    segment, _ = ultralytics_checkpoint(tmp_path, "yolov8n-seg.yaml", 3, "half")
    with pytest.raises(YOLOv8ImportError, match=r"not a detection checkpoint: task 'segment'.*Segment"):
        read_yolov8(segment)
    yolo11, _ = ultralytics_checkpoint(tmp_path, "yolo11n.yaml", 3, "half")
    with pytest.raises(YOLOv8ImportError, match=r"layer 2 is C3k2.*YOLO11"):
        read_yolov8(yolo11)
