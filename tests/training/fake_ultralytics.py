"""A YOLOv8 detection checkpoint pickled as ultralytics pickles one, made without ultralytics: the module tree
(`DetectionModel` > `model` = 23 layers of `Conv`, `C2f`, `SPPF`, `Upsample`, `Concat`, `Detect`) under the class
names of ultralytics, holding the weights of one of our `YOLODetector`s through the key map of
detector.training.yolov8_import. The classes are registered as `ultralytics.*` modules for the save only (pickle
names a class by its module), and removed afterwards."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import torch
from torch import nn

from detector.models.detectors.yolo import YOLODetector
from detector.models.scales import SCALES
from detector.training.yolov8_import import LAYOUT, _module_pairs


class Conv(nn.Module):
    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c2, eps=1e-3, momentum=0.03)
        self.act = nn.SiLU()

    def forward_fuse(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class Bottleneck(nn.Module):
    def __init__(self, c: int, shortcut: bool) -> None:
        super().__init__()
        self.cv1, self.cv2, self.add = Conv(c, c, 3), Conv(c, c, 3), shortcut


class C2f(nn.Module):
    def __init__(self, c1: int, c2: int, n: int, shortcut: bool) -> None:
        super().__init__()
        self.c = c2 // 2
        self.cv1, self.cv2 = Conv(c1, 2 * self.c), Conv((2 + n) * self.c, c2)
        self.m = nn.ModuleList(Bottleneck(self.c, shortcut) for _ in range(n))


class SPPF(nn.Module):
    def __init__(self, c1: int, c2: int) -> None:
        super().__init__()
        self.cv1, self.cv2 = Conv(c1, c1 // 2), Conv(c1 // 2 * 4, c2)
        self.m = nn.MaxPool2d(kernel_size=5, stride=1, padding=2)


class Concat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.d = 1


class DFL(nn.Module):
    def __init__(self, c1: int = 16) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(c1, dtype=torch.float32).view(1, c1, 1, 1)


class Detect(nn.Module):
    def __init__(self, nc: int, widths: list[int], c2: int, c3: int, reg_max: int = 16) -> None:
        super().__init__()
        self.nc, self.nl, self.reg_max, self.no = nc, 3, reg_max, nc + 4 * reg_max
        self.cv2 = nn.ModuleList(nn.Sequential(Conv(w, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 * reg_max, 1))
                                 for w in widths)
        self.cv3 = nn.ModuleList(nn.Sequential(Conv(w, c3, 3), Conv(c3, c3, 3), nn.Conv2d(c3, nc, 1)) for w in widths)
        self.dfl = DFL(reg_max)


class DetectionModel(nn.Module):
    def __init__(self, layers: list[nn.Module], names: dict[int, str], scale: str) -> None:
        super().__init__()
        self.model = nn.Sequential(*layers)
        self.names, self.yaml = names, {"scale": scale, "nc": len(names)}


MODULES = {
    "ultralytics.nn.tasks": (DetectionModel,), "ultralytics.nn.modules.conv": (Conv, Concat),
    "ultralytics.nn.modules.block": (Bottleneck, C2f, SPPF, DFL), "ultralytics.nn.modules.head": (Detect,),
}


def ultralytics_layout(ours: YOLODetector, scale: str) -> DetectionModel:
    """The ultralytics module tree of YOLOv8 at `scale` holding the weights of `ours` (layer inputs `f` set)."""
    shapes = {k: v.shape for k, v in ours.state_dict().items()}

    def width(target: str, out: bool = True) -> int:
        return shapes[f"{target}.0.weight"][0 if out else 1]

    pairs, _ = _module_pairs(SCALES[scale])
    convs = {src.removesuffix(".conv"): dst.removesuffix(".0") for src, dst in pairs if src.endswith(".conv")}
    layers: list[nn.Module] = []
    for index, (kind, source) in enumerate(LAYOUT):
        prefix = f"model.{index}"
        if kind == "Conv":
            target = convs[prefix]
            shape = shapes[f"{target}.0.weight"]
            layer = Conv(shape[1], shape[0], shape[2], 2)
        elif kind == "C2f":
            n = sum(1 for key in convs if key.startswith(f"{prefix}.m.") and key.endswith(".cv1"))
            layer = C2f(width(convs[f"{prefix}.cv1"], False), width(convs[f"{prefix}.cv2"]), n, index < 9)
        elif kind == "SPPF":
            layer = SPPF(width(convs[f"{prefix}.cv1"], False), width(convs[f"{prefix}.cv2"]))
        elif kind == "Upsample":
            layer = nn.Upsample(scale_factor=2.0, mode="nearest")
        elif kind == "Concat":
            layer = Concat()
        else:
            layer = Detect(shapes["head.cls_branches.0.2.weight"][0],
                           [width(f"head.box_branches.{i}.0", False) for i in range(3)],
                           width("head.box_branches.0.0"), width("head.cls_branches.0.0"))
        layer.f = source
        layers.append(layer)
    names = {i: f"class{i}" for i in range(shapes["head.cls_branches.0.2.weight"][0])}
    model = DetectionModel(layers, names, scale)
    for src, dst in pairs:
        model.get_submodule(src).load_state_dict(ours.get_submodule(dst).state_dict())
    return model


def fuse(model: DetectionModel) -> DetectionModel:
    """What ultralytics' `model.fuse()` does to a YOLOv8: every Conv's BatchNorm folded into its convolution (which
    gains a bias), the BatchNorm deleted, `forward` bound to `forward_fuse` on the instance."""
    for module in model.modules():
        if isinstance(module, Conv):
            conv, bn = module.conv, module.bn
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                              bias=True)
            with torch.no_grad():
                fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
                fused.bias.copy_(bn.bias - bn.running_mean * scale)
            module.conv = fused
            delattr(module, "bn")
            module.forward = module.forward_fuse
    return model


def save_ultralytics_checkpoint(path: Path, model: DetectionModel, **entries: Any) -> Path:
    """torch.save `{"ema": model (half precision), "model": None, "train_args": {...}, **entries}` as ultralytics'
    trainer saves it, the classes named `ultralytics.*`."""
    added = {}
    for name, classes in MODULES.items():
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):
            package = ".".join(parts[:depth])
            if package not in sys.modules:
                added[package] = sys.modules[package] = types.ModuleType(package)
        for cls in classes:
            cls.__module__ = name
            setattr(sys.modules[name], cls.__name__, cls)
    try:
        checkpoint = {"epoch": 3, "model": None, "ema": model.half(), "updates": 10, "optimizer": None,
                      "train_args": {"task": "detect", "imgsz": 64}, "version": "8.3.0", **entries}
        torch.save(checkpoint, path)
    finally:
        for package in added:
            del sys.modules[package]
        for classes in MODULES.values():
            for cls in classes:
                cls.__module__ = __name__
    return path
