"""Import ultralytics YOLOv8 detection checkpoints (`yolov8n.pt` ... `yolov8x.pt`, any number of classes) into the
YOLOv8-style model of this project, without importing ultralytics.

The `.pt` file is read with `detector.models.safe_pickle` (tensors, plain containers, and the ultralytics / torch
module classes it names as inert stand-ins; anything else is refused). The model is the checkpoint's `ema` entry,
else its `model` entry (a pickled `DetectionModel`, often half precision). Its 23 layers map one to one onto
`YOLODetector` at the same scale (same widths, depths and tensor shapes; ultralytics' `Conv.conv/bn` are our
`Conv.0/1`):

    model.0           -> backbone.stem              model.10-11, 13-14, 17, 20  (Upsample, Concat: no weights)
    model.1, 2        -> backbone.stage2.0, .1      model.12 -> neck.top_down4     model.15 -> neck.top_down3
    model.3, 4        -> backbone.stage3.0, .1      model.16 -> neck.down3         model.18 -> neck.bottom_up4
    model.5, 6        -> backbone.stage4.0, .1      model.19 -> neck.down4         model.21 -> neck.bottom_up5
    model.7, 8, 9     -> backbone.stage5.0, .1, .2  model.22.cv2.i / cv3.i -> head.box_branches.i / cls_branches.i

The DFL projection `model.22.dfl.conv.weight` (fixed 0..reg_max-1, not trained) has no counterpart: our decoding
computes the same expectation. Before any weight is taken the layout is verified (layer types and inputs,
SiLU activations, BatchNorm eps, conv strides/padding/groups, the residual flags of the bottlenecks, SPPF's
pooling), then every tensor's name and shape; a checkpoint of another task (segment, pose, obb, classify), of
another architecture (YOLO11, YOLOv8-p2/p6, ...) or saved after `model.fuse()` (no BatchNorm left) is refused with
the reason, as a YOLOv8ImportError (a CheckpointError: `<file>: <reason>`).
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from detector.jsonsafe import plain_json
from detector.models.detectors.yolo import YOLODetector
from detector.models.safe_pickle import (
    CheckpointError,
    StandIn,
    check_checkpoint,
    checkpoint_file,
    load_without_code,
    module_state_dict,
)
from detector.models.scales import SCALES, Scale

STAND_IN_PREFIXES = ("ultralytics.", "torch.nn.modules.")
# layer i of the YOLOv8 detection layout: (type, input layers)
LAYOUT = (
    ("Conv", -1), ("Conv", -1), ("C2f", -1), ("Conv", -1), ("C2f", -1), ("Conv", -1), ("C2f", -1), ("Conv", -1),
    ("C2f", -1), ("SPPF", -1), ("Upsample", -1), ("Concat", [-1, 6]), ("C2f", -1), ("Upsample", -1),
    ("Concat", [-1, 4]), ("C2f", -1), ("Conv", -1), ("Concat", [-1, 12]), ("C2f", -1), ("Conv", -1),
    ("Concat", [-1, 9]), ("C2f", -1), ("Detect", [15, 18, 21]),
)
# layer index -> our module (the layers without weights are absent)
TARGETS = {
    0: "backbone.stem", 1: "backbone.stage2.0", 2: "backbone.stage2.1", 3: "backbone.stage3.0", 4: "backbone.stage3.1",
    5: "backbone.stage4.0", 6: "backbone.stage4.1", 7: "backbone.stage5.0", 8: "backbone.stage5.1",
    9: "backbone.stage5.2", 12: "neck.top_down4", 15: "neck.top_down3", 16: "neck.down3", 18: "neck.bottom_up4",
    19: "neck.down4", 21: "neck.bottom_up5", 22: "head",
}
# model / head classes of the other tasks, and the task they belong to
OTHER_TASKS = {
    "SegmentationModel": "segment", "PoseModel": "pose", "OBBModel": "obb", "ClassificationModel": "classify",
    "Segment": "segment", "Pose": "pose", "OBB": "obb", "Classify": "classify",
}
STEM_WIDTHS = {16: "n", 32: "s", 48: "m", 64: "l", 80: "x"}  # model.0 output channels at each scale


class YOLOv8ImportError(CheckpointError):
    """A checkpoint that cannot be mapped onto the YOLOv8-style model (task, layout, shapes)."""


@dataclass
class YOLOv8Weights:
    """A YOLOv8 detection checkpoint in this project's terms: `state_dict` has YOLODetector's keys (float32)."""

    state_dict: dict[str, torch.Tensor]
    scale: str
    class_names: list[str]
    img_size: int
    reg_max: int
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def model_config(self) -> dict[str, Any]:
        """The model config that builds the network these weights belong to (configs/model/yolov8.yaml)."""
        return {
            "_target_": "detector.models.detectors.yolo.YOLODetector", "num_classes": self.num_classes, "scale": self.scale,
            "reg_max": self.reg_max, "image_size": self.img_size,
            "backbone": {"_target_": "detector.models.backbones.csp.CSPDarknet", "scale": self.scale},
            "end2end": False,
        }


def is_ultralytics_checkpoint(path: str | Path) -> bool:
    """Whether `path` is a torch.save zip file whose pickle names ultralytics classes, from the checking pass of
    `check_checkpoint` (no tensor data read; a file that fails its checks raises its CheckpointError)."""
    if not zipfile.is_zipfile(path):
        return False
    return any(name.startswith("ultralytics.") for name in check_checkpoint(path, STAND_IN_PREFIXES))


def _submodule(root: StandIn, path: str) -> StandIn:
    module = root
    for name in path.split("."):
        children = module.state.get("_modules") if isinstance(module, StandIn) and isinstance(module.state, dict) else None
        if not children or children.get(name) is None:
            raise YOLOv8ImportError(f"the checkpoint's model has no module {path!r}")
        module = children[name]
    return module


def _attribute(module: StandIn, name: str, default: Any = None) -> Any:
    return module.state.get(name, default) if isinstance(module.state, dict) else default


def _module_pairs(scale: Scale) -> tuple[list[tuple[str, str]], list[str]]:
    """(pairs of (ultralytics module, our module) holding weights: Conv2d and BatchNorm2d, ultralytics' Conv blocks
    whose activation must be SiLU) for the YOLOv8 layout at `scale` (C2f blocks of 3 or 6 bottlenecks at depth 1)."""
    pairs: list[tuple[str, str]] = []
    convs: list[str] = []

    def conv(src: str, dst: str) -> None:
        pairs.extend([(f"{src}.conv", f"{dst}.0"), (f"{src}.bn", f"{dst}.1")])
        convs.append(src)

    def c2f(src: str, dst: str, n: int) -> None:
        conv(f"{src}.cv1", f"{dst}.cv1")
        conv(f"{src}.cv2", f"{dst}.cv2")
        for k in range(n):
            conv(f"{src}.m.{k}.cv1", f"{dst}.m.{k}.cv1")
            conv(f"{src}.m.{k}.cv2", f"{dst}.m.{k}.cv2")

    repeats = {index: scale.repeats(6 if index in (4, 6) else 3) for index in TARGETS}
    for index, target in TARGETS.items():
        layer_type, src = LAYOUT[index][0], f"model.{index}"
        if layer_type == "Conv":
            conv(src, target)
        elif layer_type == "C2f":
            c2f(src, target, repeats[index])
        elif layer_type == "SPPF":
            conv(f"{src}.cv1", f"{target}.cv1")
            conv(f"{src}.cv2", f"{target}.cv2")
    for level in range(3):
        for theirs, ours in (("cv2", "box_branches"), ("cv3", "cls_branches")):
            conv(f"model.22.{theirs}.{level}.0", f"head.{ours}.{level}.0")
            conv(f"model.22.{theirs}.{level}.1", f"head.{ours}.{level}.1")
            pairs.append((f"model.22.{theirs}.{level}.2", f"head.{ours}.{level}.2"))
    return pairs, convs


def _check_task(checkpoint: dict, model: StandIn, head: StandIn) -> None:
    task = (checkpoint.get("train_args") or {}).get("task") if isinstance(checkpoint.get("train_args"), dict) else None
    for name in (model.name, head.name):
        if name in OTHER_TASKS:
            task = OTHER_TASKS[name]
    if task not in (None, "detect") or head.name != "Detect" or model.name != "DetectionModel":
        raise YOLOv8ImportError(
            f"this is not a detection checkpoint: task {task!r}, model {model.name}, head {head.name}; only YOLOv8 "
            "detection checkpoints (DetectionModel with a Detect head, task 'detect') can be imported"
        )


def _check_layout(layers: dict[str, StandIn]) -> None:
    """Layer types and inputs as in LAYOUT, and the settings that change the computation but not the shapes."""
    for index, (expected_type, expected_from) in enumerate(LAYOUT[: len(layers)]):
        layer = layers[str(index)]
        source = _attribute(layer, "f", expected_from)
        if layer.name != expected_type or source != expected_from:
            raise YOLOv8ImportError(
                f"layer {index} is {layer.name} from {source}, the YOLOv8 layout has {expected_type} from "
                f"{expected_from} (YOLO11, YOLOv5u, YOLOv9 and other layouts are not supported)"
            )
    if len(layers) != len(LAYOUT):
        raise YOLOv8ImportError(f"the model has {len(layers)} layers, the YOLOv8 detection layout {len(LAYOUT)} "
                                "(P2/P6 variants and other architectures are not supported)")
    for index in (10, 13):
        if _attribute(layers[str(index)], "mode") != "nearest" or _attribute(layers[str(index)], "scale_factor") not in (2, 2.0):
            raise YOLOv8ImportError(f"layer {index} is not a nearest x2 upsampling")
    sppf = layers["9"]
    pool = _submodule(sppf, "m")
    if _attribute(sppf, "n", 3) != 3 or _attribute(sppf, "add", False) or _attribute(pool, "kernel_size") != 5:
        raise YOLOv8ImportError("layer 9 (SPPF) is not three chained 5x5 max-pools without a shortcut")
    for index, layer in layers.items():
        if layer.name == "C2f":
            residual = int(index) < 9  # the backbone's bottlenecks add their input, the neck's do not
            flags = [_attribute(block, "add") for block in (_attribute(layer, "_modules")["m"].state["_modules"].values())]
            if any(flag != residual for flag in flags):
                raise YOLOv8ImportError(f"layer {index} (C2f): bottleneck shortcuts {flags}, YOLOv8 has {residual}")


def _check_leaf(theirs: StandIn, ours: nn.Module, where: str) -> None:
    if isinstance(ours, nn.Conv2d):
        settings = ("stride", "padding", "dilation", "groups")
        mine = {k: tuple(getattr(ours, k)) if isinstance(getattr(ours, k), tuple) else getattr(ours, k) for k in settings}
        found = {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in ((k, _attribute(theirs, k)) for k in settings)}
        if theirs.name != "Conv2d" or found != mine:
            raise YOLOv8ImportError(f"{where}: {theirs.name} {found}, expected Conv2d {mine}")
    elif isinstance(ours, nn.BatchNorm2d):
        if theirs.name != "BatchNorm2d" or abs(float(_attribute(theirs, "eps", 0.0)) - ours.eps) > 1e-9:
            raise YOLOv8ImportError(f"{where}: {theirs.name} eps {_attribute(theirs, 'eps')}, expected BatchNorm2d eps {ours.eps}")


def _scale(model: StandIn, layers: dict[str, StandIn]) -> str:
    """The scale letter: the model yaml's `scale`, else its file name (yolov8n.yaml), else the stem's width."""
    yaml = _attribute(model, "yaml") or {}
    if isinstance(yaml, dict) and yaml.get("scale") in SCALES:
        return yaml["scale"]
    match = re.search(r"yolov8([nsmlx])", str(yaml.get("yaml_file", "")) if isinstance(yaml, dict) else "")
    if match:
        return match.group(1)
    stem = module_state_dict(layers["0"]).get("conv.weight")
    width = int(stem.shape[0]) if stem is not None else -1
    if width not in STEM_WIDTHS:
        raise YOLOv8ImportError(f"cannot tell the model scale: its stem has {width} channels, YOLOv8 n..x have "
                                f"{sorted(STEM_WIDTHS)}")
    return STEM_WIDTHS[width]


def _class_names(model: StandIn, num_classes: int) -> list[str]:
    names = _attribute(model, "names")
    if isinstance(names, dict):
        if sorted(names) != list(range(len(names))):
            raise YOLOv8ImportError(f"class names keyed {sorted(names)[:5]}..., expected 0..{len(names) - 1}")
        names = [names[i] for i in range(len(names))]
    names = [str(n) for n in names] if isinstance(names, (list, tuple)) else [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise YOLOv8ImportError(f"class count mismatch: the head predicts {num_classes} classes, the checkpoint "
                                f"names {len(names)}")
    return names


def _img_size(checkpoint: dict, model: StandIn) -> int:
    for args in (checkpoint.get("train_args"), _attribute(model, "args")):
        if isinstance(args, StandIn):
            args = args.state if isinstance(args.state, dict) else {}
        size = args.get("imgsz") if isinstance(args, dict) else None
        if isinstance(size, int) or (isinstance(size, (list, tuple)) and size):
            return int(size if isinstance(size, int) else max(size))
    return 640


def read_yolov8(path: str | Path) -> YOLOv8Weights:
    """The weights of a YOLOv8 detection checkpoint of ultralytics, with this project's keys (see module doc); any
    failure is a CheckpointError naming the file."""
    return yolov8_weights(load_without_code(path, STAND_IN_PREFIXES), str(path))


def yolov8_weights(checkpoint: Any, path: str) -> YOLOv8Weights:
    """`read_yolov8` of a checkpoint already read by `load_without_code` (`path` names it in messages)."""
    with checkpoint_file(path):
        return _weights(checkpoint, path)


def _weights(checkpoint: Any, path: str) -> YOLOv8Weights:
    if not isinstance(checkpoint, dict):
        raise YOLOv8ImportError(f"not an ultralytics checkpoint (a {type(checkpoint).__name__}, not a dict)")
    model = checkpoint.get("ema") or checkpoint.get("model")
    if not isinstance(model, StandIn) or not isinstance(model.state, dict):
        raise YOLOv8ImportError(f"no pickled model under 'ema' or 'model' (keys {sorted(map(str, checkpoint))})")
    layers = _submodule(model, "model").state["_modules"]
    head = layers[str(len(layers) - 1)]
    _check_task(checkpoint, model, head)
    scale = _scale(model, layers)
    _check_layout(layers)
    num_classes, reg_max = int(_attribute(head, "nc")), int(_attribute(head, "reg_max", 16))
    class_names = _class_names(model, num_classes)

    with torch.device("meta"):  # shapes and settings only, no memory
        ours = YOLODetector(num_classes, scale, reg_max)
    theirs = module_state_dict(model)
    our_shapes = {k: v.shape for k, v in ours.state_dict().items()}
    pairs, convs = _module_pairs(SCALES[scale])
    if _attribute(_submodule(model, "model.0"), "_modules", {}).get("bn") is None:
        raise YOLOv8ImportError(
            "its Conv layers have no BatchNorm: it was saved after model.fuse(), which folds each BatchNorm into its "
            "convolution; save the unfused model instead (the training checkpoint best.pt or last.pt, which "
            "ultralytics writes unfused)")
    for conv in convs:
        activation = _submodule(model, conv).state.get("_modules", {}).get("act")
        if getattr(activation, "name", None) != "SiLU":
            raise YOLOv8ImportError(f"{conv} activation is {getattr(activation, 'name', activation)}, YOLOv8 uses SiLU")
    state: dict[str, torch.Tensor] = {}
    for src, dst in pairs:
        _check_leaf(_submodule(model, src), ours.get_submodule(dst), src)
        for name in ours.get_submodule(dst).state_dict():
            key = f"{src}.{name}"
            if key not in theirs:
                raise YOLOv8ImportError(f"the checkpoint has no {key} (for {dst}.{name})")
            tensor = theirs[key]
            if tensor.shape != our_shapes[f"{dst}.{name}"]:
                raise YOLOv8ImportError(f"{key} has shape {tuple(tensor.shape)}, {dst}.{name} of the YOLOv8{scale} "
                                        f"model {tuple(our_shapes[f'{dst}.{name}'])}")
            state[f"{dst}.{name}"] = tensor.float() if tensor.is_floating_point() else tensor
    projection = theirs.get("model.22.dfl.conv.weight")
    if projection is not None and not torch.equal(projection.float().flatten(), torch.arange(reg_max, dtype=torch.float32)):
        raise YOLOv8ImportError(f"the DFL projection is not 0..{reg_max - 1}")
    mapped = {f"{src}.{name}" for src, dst in pairs for name in ours.get_submodule(dst).state_dict()}
    unmapped = sorted(set(theirs) - mapped - {"model.22.dfl.conv.weight"})
    missing = sorted(set(our_shapes) - set(state))
    if unmapped or missing:
        raise YOLOv8ImportError(f"tensors without a counterpart: theirs {unmapped[:6]}, ours {missing[:6]}")

    train_args = checkpoint.get("train_args") if isinstance(checkpoint.get("train_args"), dict) else {}
    source = {"format": "ultralytics", "file": str(path), "version": checkpoint.get("version"),
              "date": checkpoint.get("date"), "task": train_args.get("task", "detect"), "scale": scale,
              "entry": "ema" if checkpoint.get("ema") is not None else "model"}
    # metadata of any type (a datetime, a numpy scalar record) as plain JSON data: the converted file is saved
    # with it and read back with weights_only=True
    return YOLOv8Weights(state, scale, class_names, _img_size(checkpoint, model), reg_max, plain_json(source))


def project_checkpoint(weights: YOLOv8Weights) -> dict[str, Any]:
    """A checkpoint of this project holding `weights` (what `detector.deploy.load.load_detector` and
    `model.init_from` read): the model config, YOLOv8's COCO-evaluation post-processing, class names, image size."""
    run_config = {
        "model": weights.model_config(),
        "postprocess": {"_target_": "detector.postprocess.postprocessors.Postprocessor", "conf_threshold": 0.001,
                        "iou_threshold": 0.7, "max_detections": 300, "max_candidates": 30000, "nms": "class_aware",
                        "one2one": None, "activation": "sigmoid"},
    }
    return {
        "state_dict": {f"model.{k}": v for k, v in weights.state_dict.items()}, "run_config": run_config,
        "class_names": list(weights.class_names), "category_ids": list(range(1, weights.num_classes + 1)),
        "img_size": weights.img_size, "epoch": None, "global_step": None, "converted_from": weights.source,
    }


def convert_checkpoint(source: str | Path, target: str | Path) -> YOLOv8Weights:
    """Read the ultralytics checkpoint `source`, write this project's checkpoint `target`; returns the weights. Any
    failure is a CheckpointError naming the file it concerns."""
    weights = read_yolov8(source)
    target = Path(target)
    with checkpoint_file(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.save(project_checkpoint(weights), target)
    return weights
