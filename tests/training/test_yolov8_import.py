"""YOLOv8 checkpoints of ultralytics, imported without ultralytics (detector.training.yolov8_import): the converted model
computes what ultralytics' model computes.

The reference checkpoints are built by ultralytics itself (optional: `pip install -e .[reference]`; skipped when it is
absent) from the yolov8n/s yaml files it ships, with random weights (no download), and saved the way its trainer saves
them (the model under 'ema', half precision, train_args, metrics as numpy scalars). ultralytics runs in a subprocess:
importing it monkey-patches cv2 and torch.save process-wide."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from detector.deploy.load import load_detector
from detector.models.detectors.yolo import YOLODetector
from detector.models.safe_pickle import UnsafePickleError, load_without_code
from detector.postprocess.postprocessors import Postprocessor
from detector.training.finetune import load_matching_weights, prepare_model, read_state_dict
from detector.training.yolov8_import import (
    STAND_IN_PREFIXES,
    YOLOv8ImportError,
    convert_checkpoint,
    is_ultralytics_checkpoint,
    read_yolov8,
    yolov8_weights,
)

from .fake_ultralytics import fuse, save_ultralytics_checkpoint, ultralytics_layout

# argv: a json list of checkpoints to make, each {yaml, nc, out, precision: half|float, images: .pt or null, outputs,
# conf, iou}. Builds each model with random weights (batch-norm affine parameters and statistics too, so that every
# tensor matters), saves it as ultralytics' trainer does, and evaluates the saved weights (after the same precision
# rounding) in float32 on `images`: raw head outputs, and detections after its NMS.
REFERENCE_SCRIPT = """
import datetime, json, sys
from copy import deepcopy
import numpy as np
import torch
import ultralytics
from ultralytics.nn.tasks import DetectionModel, SegmentationModel
from ultralytics.utils import IterableSimpleNamespace
from ultralytics.utils.nms import non_max_suppression

for spec in json.loads(sys.argv[1]):
    nc = spec["nc"]
    torch.manual_seed(0)
    builder = SegmentationModel if "-seg" in spec["yaml"] else DetectionModel
    model = builder(spec["yaml"], nc=nc, verbose=False)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():  # batch-norm statistics of smooth random images, so that features differ across the image
        for m in norms:
            m.weight.uniform_(0.5, 1.5); m.bias.uniform_(-0.2, 0.2); m.reset_running_stats(); m.momentum = None
        if spec["images"]:
            model.train()(torch.nn.functional.interpolate(torch.rand(4, 3, 4, 5), size=(128, 160), mode="bilinear"))
        else:  # weights to read, not to run
            for m in norms:
                m.running_mean.uniform_(-0.2, 0.2); m.running_var.uniform_(0.5, 1.5)
        for m in norms:
            m.momentum = 0.03
        for branch in model.model[-1].cv3:  # class scores spread over (0.05, 0.5), not near the prior's 1e-4 nor 1
            branch[-1].weight.mul_(0.1); branch[-1].bias.uniform_(-3.0, 0.0)
    task = "segment" if builder is SegmentationModel else "detect"
    model.names = {i: f"class{i}" for i in range(nc)}
    model.args = IterableSimpleNamespace(task=task, imgsz=320)
    ema = deepcopy(model).half() if spec["precision"] == "half" else deepcopy(model)
    torch.save({"epoch": 3, "best_fitness": np.float64(0.5), "model": None, "ema": ema, "updates": 10,
                "optimizer": None, "train_args": {"task": task, "imgsz": 320, "model": spec["yaml"]},
                "train_metrics": {"metrics/mAP50(B)": np.float64(0.1), "fitness": np.float64(0.2)},
                "date": datetime.datetime.now().isoformat(), "version": ultralytics.__version__,
                "license": "AGPL-3.0", "docs": "https://docs.ultralytics.com"}, spec["out"])
    if spec["images"]:
        reference = deepcopy(ema).float().eval()
        with torch.no_grad():
            decoded, raw = reference(torch.load(spec["images"]))
        # its NMS gives up after max_time_img per image: more than enough here
        detections = non_max_suppression(decoded, spec["conf"], spec["iou"], multi_label=True, max_det=300,
                                         max_time_img=600.0)
        torch.save({"boxes": raw["boxes"], "scores": raw["scores"], "detections": detections}, spec["outputs"])
"""


def ultralytics_checkpoints(folder, *specs: tuple) -> list:
    """[(checkpoint path, reference outputs or None)] for specs (yaml, classes, precision[, images, conf, iou]),
    made by ultralytics in one subprocess."""
    if importlib.util.find_spec("ultralytics") is None:
        pytest.skip("ultralytics (optional reference, pip install -e .[reference]) not installed")
    runs = []
    for yaml_name, num_classes, precision, *evaluate in specs:
        name = f"{yaml_name.removesuffix('.yaml')}_{num_classes}_{precision}"
        run = {"yaml": yaml_name, "nc": num_classes, "precision": precision, "out": str(folder / f"{name}.pt"),
               "images": None, "outputs": str(folder / f"{name}_outputs.pt"), "conf": 0.25, "iou": 0.7}
        if evaluate:
            images, run["conf"], run["iou"] = evaluate
            run["images"] = str(folder / f"{name}_images.pt")
            torch.save(images, run["images"])
        runs.append(run)
    result = subprocess.run([sys.executable, "-c", REFERENCE_SCRIPT, json.dumps(runs)], capture_output=True, text=True,
                            timeout=600, cwd=folder)
    assert result.returncode == 0, result.stderr[-3000:]
    return [(Path(run["out"]), torch.load(run["outputs"]) if run["images"] else None) for run in runs]


def smooth_images() -> torch.Tensor:
    """Smooth random images (features that differ across the image), not square (rows and columns must not be
    swapped)."""
    torch.manual_seed(1)
    return torch.nn.functional.interpolate(torch.rand(2, 3, 8, 10), size=(256, 320), mode="bilinear")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict:
    """ultralytics checkpoints saved as its trainer saves them: yolov8n with 3 classes in float32 (+ its outputs on
    `smooth_images()`, conf 0.25, IoU 0.7) and in half precision, a yolov8n segmentation model and a YOLO11n
    detection model (half precision)."""
    folder = tmp_path_factory.mktemp("ultralytics")
    made = ultralytics_checkpoints(folder, ("yolov8n.yaml", 3, "float", smooth_images(), 0.25, 0.7),
                                   ("yolov8n.yaml", 3, "half"), ("yolov8n-seg.yaml", 3, "half"),
                                   ("yolo11n.yaml", 3, "half"))
    return dict(zip(("n3_float", "n3", "segment", "yolo11"), made))


def assert_same_as_ultralytics(path: Path, reference: dict, num_classes: int, conf: float, tmp_path) -> None:
    images = smooth_images()
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
        # the same (box, score, class) rows, in any order (scores equal to float rounding may swap places)
        same = ((ours["boxes"][:, None] - theirs[None, :, :4]).abs().amax(-1) < 1e-3) \
            & ((ours["scores"][:, None] - theirs[None, :, 4]).abs() < 1e-5) & (ours["labels"][:, None] == theirs[None, :, 5])
        assert same.any(1).all() and same.any(0).all()


def test_yolov8n_outputs_equal_ultralytics(checkpoints, tmp_path):
    assert_same_as_ultralytics(*checkpoints["n3_float"], 3, 0.25, tmp_path)


@pytest.mark.slow
def test_yolov8s_with_80_classes_outputs_equal_ultralytics(tmp_path):
    [(path, reference)] = ultralytics_checkpoints(tmp_path, ("yolov8s.yaml", 80, "float", smooth_images(), 0.45, 0.7))
    assert_same_as_ultralytics(path, reference, 80, 0.45, tmp_path)


def test_half_precision_checkpoint_round_trip(checkpoints, tmp_path):
    """A checkpoint as ultralytics' trainer writes it (half precision under 'ema'): every one of our 354 tensors is
    the checkpoint's, widened to float32; the converted file loads for evaluation and for init_from."""
    path = checkpoints["n3"][0]
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
    direct, via_file = YOLODetector(3, "n"), YOLODetector(3, "n")
    prepare_model(direct, init_from=str(path))
    prepare_model(via_file, init_from=str(converted))
    for key, value in direct.state_dict().items():
        assert torch.equal(value, via_file.state_dict()[key]) and torch.equal(value, weights.state_dict[key])


def test_init_from_with_another_class_count_reinitialises_the_class_branch(checkpoints):
    path = checkpoints["n3"][0]
    model = YOLODetector(5, "n")
    report = load_matching_weights(model, path)
    assert report["shape_mismatch"] == [f"head.cls_branches.{level}.2.{name}" for level in range(3) for name in ("weight", "bias")]
    assert not report["not_in_checkpoint"] and not report["unused"] and len(report["loaded"]) == 354 - 6
    with pytest.raises(ValueError, match=r"YOLOv8n checkpoint.*model.scale=n"):
        prepare_model(YOLODetector(3, "s"), init_from=str(path))


@pytest.mark.parametrize("scale", ["n", "s", "m", "l", "x"])
def test_the_key_map_covers_every_tensor_of_our_model_once_at_every_scale(scale):
    from detector.models.scales import SCALES
    from detector.training.yolov8_import import _module_pairs

    with torch.device("meta"):
        ours = YOLODetector(80, scale).state_dict()
    pairs, _ = _module_pairs(SCALES[scale])
    sources = [src for src, _ in pairs]
    assert len(set(sources)) == len(sources) and all(src.startswith("model.") for src in sources)
    targets = [f"{dst}.{name}" for _, dst in pairs for name in ("weight", "bias", "running_mean", "running_var",
                                                                "num_batches_tracked") if f"{dst}.{name}" in ours]
    assert sorted(targets) == sorted(ours)


@pytest.mark.slow
@pytest.mark.parametrize("yaml_name", ["yolov8m.yaml", "yolov8l.yaml", "yolov8x.yaml"])
def test_m_l_x_checkpoints_convert(yaml_name, tmp_path):
    [(path, _)] = ultralytics_checkpoints(tmp_path, (yaml_name, 80, "half"))
    weights = read_yolov8(path)
    assert weights.scale == yaml_name[6] and weights.num_classes == 80
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in YOLODetector(80, weights.scale).state_dict().items()}
    assert {k: v.shape for k, v in weights.state_dict.items()} == shapes


def test_the_n_model_has_yolov8n_published_parameter_count():
    """ultralytics' yolov8.yaml: yolov8n has 3,157,200 parameters with 80 classes, 16 of them the fixed DFL
    projection that our decoding computes without weights."""
    assert sum(p.numel() for p in YOLODetector(80, "n").parameters()) == 3_157_200 - 16


def test_other_tasks_and_architectures_are_refused(checkpoints):
    with pytest.raises(YOLOv8ImportError, match=r"not a detection checkpoint: task 'segment'.*Segment"):
        read_yolov8(checkpoints["segment"][0])
    with pytest.raises(YOLOv8ImportError, match=r"layer 2 is C3k2.*YOLO11"):
        read_yolov8(checkpoints["yolo11"][0])


def layer(checkpoint: dict, path: str):
    """The pickled record at `path` (e.g. 'model.9.cv1') of a checkpoint read by load_without_code."""
    record = checkpoint["ema"]
    for name in path.split("."):
        record = record.state["_modules"][name]
    return record


@pytest.mark.parametrize("change, message", [
    (lambda c: layer(c, "model.0").state["_modules"].update(act=layer(c, "model.10")), r"model.0 activation is Upsample, YOLOv8 uses SiLU"),
    (lambda c: layer(c, "model.3.bn").state.update(eps=1e-5), r"model.3.bn: BatchNorm2d eps 1e-05, expected BatchNorm2d eps 0.001"),
    (lambda c: layer(c, "model.16.conv").state.update(stride=(1, 1)), r"model.16.conv: Conv2d \{'stride': \(1, 1\)"),
    (lambda c: layer(c, "model.12.m.0").state.update(add=True), r"layer 12 \(C2f\): bottleneck shortcuts \[True\], YOLOv8 has False"),
    (lambda c: layer(c, "model.9").state.update(n=4), r"layer 9 \(SPPF\) is not three chained 5x5 max-pools"),
    (lambda c: layer(c, "model.11").state.update(f=[-1, 4]), r"layer 11 is Concat from \[-1, 4\], the YOLOv8 layout has Concat from \[-1, 6\]"),
    (lambda c: c["ema"].state.update(names={0: "a", 1: "b"}), r"class count mismatch: the head predicts 3 classes, the checkpoint names 2"),
    (lambda c: c["ema"].state["yaml"].update(scale="s"), r"model.0.conv.weight has shape \(16, 3, 3, 3\), backbone.stem.0.weight of the YOLOv8s model \(32, 3, 3, 3\)"),
    (lambda c: c["train_args"].update(task="pose"), r"not a detection checkpoint: task 'pose'"),
    (lambda c: layer(c, "model.22").state["_modules"].update(extra=layer(c, "model.0")), r"tensors without a counterpart: theirs \['model.22.extra.bn.bias'"),
    (lambda c: c.update(ema=None, model=None), r"no pickled model under 'ema' or 'model'"),
])
def test_what_cannot_be_mapped_is_refused_with_the_reason(checkpoints, change, message):
    checkpoint = load_without_code(checkpoints["n3"][0], STAND_IN_PREFIXES)
    assert yolov8_weights(checkpoint, "n3.pt").scale == "n"
    change(checkpoint)
    with pytest.raises(YOLOv8ImportError, match=message):
        yolov8_weights(checkpoint, "n3.pt")


def test_an_ultralytics_file_that_names_os_system_is_refused_before_it_runs(tmp_path, monkeypatch):
    """A pickle that names an ultralytics class and os.system: refused by name, by the check that tells an ultralytics
    file from others as by init_from, and nothing runs. The class comes from stand-in modules registered for the save
    only (ultralytics itself is not imported)."""

    class DetectionModel:
        def __init__(self, marker: Path) -> None:
            self.marker = marker

        def __reduce__(self):
            return os.system, (f"touch {self.marker}",)

    DetectionModel.__module__, DetectionModel.__qualname__ = "ultralytics.nn.tasks", "DetectionModel"
    for name in ("ultralytics", "ultralytics.nn"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "ultralytics.nn.tasks", types.SimpleNamespace(DetectionModel=DetectionModel))
    marker = tmp_path / "ran"
    torch.save({"model": DetectionModel(marker), "kind": DetectionModel}, tmp_path / "evil.pt")
    monkeypatch.undo()
    for read in (is_ultralytics_checkpoint, lambda path: prepare_model(YOLODetector(3, "n"), init_from=str(path))):
        with pytest.raises(UnsafePickleError, match=r"evil.pt: refusing to load: .*references (posix|nt)\.system"):
            read(tmp_path / "evil.pt")
    assert not marker.exists()


@pytest.mark.slow
def test_a_converted_checkpoint_goes_through_evaluate_predict_export_and_fine_tuning(trained, tmp_path):
    """The round trip of docs/finetune.md on the `trained` fixture's data (5 shapes classes, 64 px): convert with the
    script, evaluate, predict and export the converted checkpoint, and fine-tune from it (every tensor loads)."""
    root = Path(__file__).resolve().parents[2]

    def run(script: str, *args) -> str:
        result = subprocess.run([sys.executable, str(root / script), *map(str, args)], capture_output=True, text=True,
                                timeout=600, cwd=root, check=False)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result.stdout + result.stderr

    [(path, _)] = ultralytics_checkpoints(tmp_path, ("yolov8n.yaml", 5, "half"))
    converted = tmp_path / "yolov8n.ckpt"
    assert "YOLOv8n, 5 classes" in run("scripts/convert_ultralytics.py", path, converted)
    from ..conftest import TRAINED_IMG_SIZE, TRAINED_NUM_VAL

    # the fixture's dataset as it was generated (other prepare settings would regenerate it under the other tests)
    data = [f"paths.data_dir={trained['data'].parent}", "data.num_workers=0", "data.prepare.num_train=12",
            f"data.prepare.num_val={TRAINED_NUM_VAL}", f"data.prepare.image_size={TRAINED_IMG_SIZE}"]
    run("scripts/evaluate.py", f"ckpt_path={converted}", "data=shapes", *data, "img_size=64", "device=cpu",
        f"hydra.run.dir={tmp_path / 'evaluate'}")
    assert json.loads((tmp_path / "evaluate" / "evaluation.json").read_text())["coco"]
    run("scripts/predict.py", f"ckpt_path={converted}", f"source={trained['data'] / 'images' / 'val'}", "img_size=64",
        "device=cpu", "save_images=false", f"hydra.run.dir={tmp_path / 'predict'}")
    assert (tmp_path / "predict" / "predictions.json").is_file()
    if importlib.util.find_spec("onnx") is not None:
        run("scripts/export.py", f"ckpt_path={converted}", "img_size=64", f"hydra.run.dir={tmp_path / 'export'}")
        assert (tmp_path / "export" / "yolov8n.onnx").stat().st_size > 0
    log = run("train.py", f"model.init_from={converted}", *data, "data.img_size=64", "data.batch_size=3",
              "trainer.max_epochs=1", "trainer.limit_train_batches=2", f"hydra.run.dir={tmp_path / 'finetune'}")
    assert "loaded 354/354 tensors" in log


@pytest.fixture(scope="module")
def fake_checkpoints(tmp_path_factory) -> dict:
    """Without ultralytics: our YOLOv8n (3 classes, random batch-norm parameters and statistics, so that every tensor
    matters) in ultralytics' module tree (tests/training/fake_ultralytics.py), saved as its trainer saves it, with a
    datetime as its date and a numpy scalar as its version; and the same model fused."""
    import datetime

    import numpy as np

    torch.manual_seed(0)
    model = YOLODetector(3, "n")
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5), module.bias.uniform_(-0.2, 0.2)
                module.running_mean.uniform_(-0.2, 0.2), module.running_var.uniform_(0.5, 1.5)
    folder = tmp_path_factory.mktemp("fake_ultralytics")
    return {"ours": model,
            "n": save_ultralytics_checkpoint(folder / "n.pt", ultralytics_layout(model, "n"),
                                             date=datetime.datetime(2026, 1, 2, 3, 4, 5), version=np.float64(8.3)),
            "fused": save_ultralytics_checkpoint(folder / "fused.pt", fuse(ultralytics_layout(model, "n")))}


def test_a_checkpoint_pickled_as_ultralytics_pickles_one_imports_its_weights(fake_checkpoints):
    """Our weights saved in half precision in ultralytics' layout come back as every one of our tensors, rounded to
    half precision."""
    assert is_ultralytics_checkpoint(fake_checkpoints["n"]) and "ultralytics" not in sys.modules
    weights = read_yolov8(fake_checkpoints["n"])
    assert (weights.scale, weights.class_names, weights.img_size) == ("n", ["class0", "class1", "class2"], 64)
    expected = fake_checkpoints["ours"].state_dict()
    assert set(weights.state_dict) == set(expected)
    for key, value in expected.items():
        assert torch.equal(weights.state_dict[key], value.half().float() if value.is_floating_point() else value), key


def test_a_fused_checkpoint_is_refused_with_what_to_save_instead(fake_checkpoints):
    """ultralytics' model.fuse() folds each BatchNorm into its convolution: the import would need BatchNorms that
    change nothing, which fine-tuning would then train from wrong statistics; refused with the file to save."""
    with pytest.raises(YOLOv8ImportError, match=r"fused.pt: its Conv layers have no BatchNorm: it was saved after "
                                                r"model.fuse\(\).*save the unfused model instead \(the training "
                                                r"checkpoint best.pt or last.pt"):
        read_yolov8(fake_checkpoints["fused"])


def test_metadata_of_any_type_is_written_as_plain_data(fake_checkpoints, tmp_path):
    """The checkpoint's datetime date and numpy-scalar version: the converted checkpoint holds them as text and reads
    back with weights_only=True."""
    convert_checkpoint(fake_checkpoints["n"], tmp_path / "n.ckpt")
    converted = torch.load(tmp_path / "n.ckpt", map_location="cpu", weights_only=True)["converted_from"]
    assert converted["date"] == "2026-01-02T03:04:05" and isinstance(converted["version"], str)
    json.dumps(converted)
