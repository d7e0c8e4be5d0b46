"""Where a model's weights start, and which of them train: the fine-tuning side of a run, applied by the runner to a
model that its constructor only built (detectron2's `build_model` rule: a constructor never loads weights).

`prepare_model` reads the run options of the model config (`detector.models.build.RUN_OPTIONS`): torchvision's
ImageNet weights for a backbone made of torchvision layers (`pretrained_backbone`, or a local copy of the file:
`backbone_weights`), then the matching weights of a checkpoint (`init_from`: this project's, a plain state dict, or an
ultralytics YOLOv8 detection checkpoint, converted in memory by detector.training.yolov8_import), then `freeze`."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from urllib.error import URLError
from urllib.parse import urlparse

import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_info
from torch import nn
from torchvision.models import WeightsEnum, get_model

from detector.models.backbones.torchvision import TorchvisionLayers
from detector.models.safe_pickle import CheckpointError, checkpoint_file, load_weights_only
from detector.training.yolov8_import import YOLOv8Weights, is_ultralytics_checkpoint, read_yolov8


def prepare_model(
    model: nn.Module, init_from: str | Path | None = None, freeze: str | int | None = None,
    pretrained_backbone: bool = False, backbone_weights: str | Path | None = None,
) -> None:
    """Load the starting weights of `model` and freeze what `freeze` names (all in place; the defaults change
    nothing): the ImageNet weights of its torchvision layers (`pretrained_backbone`: downloaded, or the local file
    `backbone_weights`), then the matching tensors of the checkpoint `init_from`, then `freeze(model, freeze)`."""
    if pretrained_backbone or backbone_weights is not None:
        load_torchvision_weights(model, backbone_weights)
    if init_from is not None:
        load_matching_weights(model, init_from)
    freeze_parts(model, freeze)
    keep_frozen_norms_in_eval(model)


def torchvision_model(name: str, weights: WeightsEnum | None, weights_file: str | Path | None = None) -> nn.Module:
    """torchvision's model `name` with `weights` (None: random), or with the state dict of `weights_file` (a local
    copy of a torchvision weights file: no download). A failed download raises a RuntimeError that says where to put
    the file by hand (the torch hub cache) or which option takes its path."""
    if weights_file is not None:
        path = Path(weights_file).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"model.backbone_weights={weights_file}: no such file")
        model = get_model(name, weights=None)
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except (RuntimeError, pickle.UnpicklingError) as error:
            raise ValueError(f"model.backbone_weights={weights_file} is not a state dict of torchvision's {name}: "
                             f"{error}") from None
        return model
    try:
        return get_model(name, weights=weights)
    except (URLError, ConnectionError, TimeoutError) as error:
        file_name = os.path.basename(urlparse(weights.url).path)
        cache = Path(torch.hub.get_dir()) / "checkpoints" / file_name
        raise RuntimeError(
            f"could not download torchvision's {weights} weights for {name} from {weights.url} ({error}). Without "
            f"network access, download that file elsewhere and either place it at {cache} (torch's hub cache, read "
            f"before any download) or pass its path: model.backbone_weights=/path/to/{file_name}"
        ) from None


def load_torchvision_weights(model: nn.Module, weights_file: str | Path | None = None) -> list[str]:
    """Load torchvision's ImageNet weights into every part of `model` built from torchvision layers (a
    `TorchvisionLayers`: the ResNet and MobileNetV3 backbones, SSD300's VGG16): downloaded once into the torch hub
    cache, or read from `weights_file`, a local copy of that file. Returns the names of the loaded tensors."""
    parts = [(name, module) for name, module in model.named_modules() if isinstance(module, TorchvisionLayers)]
    if not parts:
        raise ValueError(f"model.pretrained_backbone / model.backbone_weights: {type(model).__name__} has no part made "
                         "of torchvision layers (choose a torchvision backbone, e.g. model/backbone=resnet18, or "
                         "model=ssd300_vgg16)")
    loaded = []
    for prefix, part in parts:
        source = torchvision_model(part.torchvision_name, part.torchvision_weights, weights_file).state_dict()
        state = {ours: source[theirs] for theirs, ours in part.torchvision_keys.items()}
        part.load_state_dict(state, strict=False)
        loaded += [f"{prefix}.{k}" if prefix else k for k in state]
        rank_zero_info(f"{prefix or type(part).__name__}: torchvision's {part.torchvision_name} weights "
                       f"({weights_file or part.torchvision_weights}), {len(state)} tensors")
    return loaded


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Model weights from a Lightning checkpoint of this project (EMA weights) or a plain state dict, read by
    `load_weights_only` (checked first, no pickled code), or from an ultralytics YOLOv8 detection checkpoint
    (`yolov8n.pt`: read without running code from it, keys mapped onto the YOLOv8-style model). Any failure is a
    CheckpointError naming the file."""
    return _read_weights(path)[0]


def _read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], YOLOv8Weights | None]:
    """(`read_state_dict(path)`, the YOLOv8Weights of an ultralytics checkpoint, else None)."""
    with checkpoint_file(path):
        if is_ultralytics_checkpoint(path):
            weights = read_yolov8(path)
            return weights.state_dict, weights
        checkpoint = load_weights_only(path)
        state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointError("neither a Lightning checkpoint nor a state dict of tensors")
    prefix = "model."
    if any(k.startswith(prefix) for k in state):  # a LitDetector checkpoint: keep the network's weights
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return state, None


def _one2one_from_head(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`source` with, for an end-to-end model (YOLOv10: a `one2one_head` beside the `head`) and a checkpoint without
    a one-to-one head, the checkpoint's head as the start of the one-to-one head too, as the model starts it."""
    if any(k.startswith("one2one_head.") for k in source) or not any(k.startswith("one2one_head.") for k in target):
        return source
    return {**source, **{f"one2one_{k}": v for k, v in source.items() if k.startswith("head.")}}


def load_matching_weights(model: nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Copy every tensor whose name and shape match; the rest keep their initialisation (e.g. a class
    head for a different number of classes). Returns and logs what was loaded and what was not."""
    source, yolov8 = _read_weights(path)
    target = model.state_dict()
    if yolov8 is not None:  # only the class branches depend on the number of classes
        differ = [k for k, v in source.items() if k in target and target[k].shape != v.shape and ".cls_branches." not in k]
        if differ:
            raise CheckpointError(
                f"init_from: a YOLOv8{yolov8.scale} checkpoint, but the model's {_summary(differ)} have other "
                f"shapes: build the model at its scale, model.scale={yolov8.scale} (with the csp backbone)", path)
    report = {
        "shape_mismatch": [k for k, v in source.items() if k in target and target[k].shape != v.shape],
        "not_in_checkpoint": [k for k in target if k not in source],
        "unused": [k for k in source if k not in target],
    }
    source = _one2one_from_head(source, target)
    loaded = [k for k, v in source.items() if k in target and target[k].shape == v.shape]
    model.load_state_dict({k: source[k] for k in loaded}, strict=False)
    rank_zero_info(
        f"init_from {path}: loaded {len(loaded)}/{len(target)} tensors; re-initialised (shape differs): "
        f"{_summary(report['shape_mismatch'])}; not in checkpoint: {_summary(report['not_in_checkpoint'])}"
    )
    return {"loaded": loaded, **report}


def _summary(names: list[str], limit: int = 6) -> str:
    if not names:
        return "none"
    return ", ".join(names[:limit]) + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


def freeze_parts(model: nn.Module, spec: str | int | None) -> list[str]:
    """Freeze (requires_grad=False) `spec`: 'backbone', or an int N = the first N stages of the backbone, its
    children in order (stem, stage2, ... stage5 for the CSP and the torchvision backbones; 0..5). Returns the
    frozen parameter names. The BatchNorm layers of frozen parts keep their running statistics (see
    `keep_frozen_norms_in_eval`). `Unfreeze` (callbacks) undoes it."""
    if spec is None:
        return []
    try:
        backbone = model.get_submodule("backbone")
    except AttributeError:
        raise ValueError(f"model.freeze={spec!r}: {type(model).__name__} has no `backbone` to freeze") from None
    stages = list(backbone.children())
    if spec == "backbone":
        modules = [backbone]
    elif isinstance(spec, int) and not isinstance(spec, bool) and 0 <= spec <= len(stages):
        modules = stages[:spec]
    else:
        names = ", ".join(name for name, _ in backbone.named_children())
        raise ValueError(
            f"freeze must be 'backbone', a number of backbone stages (0..{len(stages)}: {names}) or null, got {spec!r}"
        )
    frozen = []
    for module in modules:
        for name, parameter in module.named_parameters():
            parameter.requires_grad_(False)
            frozen.append(name)
    rank_zero_info(f"froze {len(frozen)} parameter tensors ({spec})")
    return frozen


def keep_frozen_norms_in_eval(model: nn.Module) -> None:
    """Put every BatchNorm layer whose affine parameters are all frozen in eval mode, so that a frozen part of
    the network does not change at all: its running mean and variance stay as loaded (e.g. ImageNet's) instead
    of drifting with the small batches of fine-tuning (mmdetection's frozen stages, detectron2's
    FrozenBatchNorm). `LitDetector.train` calls it after each `train()`; once unfrozen, a layer follows train()
    again."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training:
            parameters = list(module.parameters(recurse=False))
            if parameters and not any(p.requires_grad for p in parameters):
                module.eval()
