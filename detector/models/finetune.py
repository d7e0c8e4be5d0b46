"""Fine-tuning helpers: start from another checkpoint's weights (this project's, a plain state dict, or an ultralytics
YOLOv8 detection checkpoint, converted in memory by detector.models.yolov8_import), freeze part of the network."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_info
from torch import nn

from detector.models.safe_pickle import CheckpointError, checkpoint_file, load_weights_only

if TYPE_CHECKING:
    from detector.models.yolov8_import import YOLOv8Weights


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Model weights from a Lightning checkpoint of this project (EMA weights) or a plain state dict, read by
    `load_weights_only` (checked first, no pickled code), or from an ultralytics YOLOv8 detection checkpoint
    (`yolov8n.pt`: read without running code from it, keys mapped onto the YOLOv8-style model). Any failure is a
    CheckpointError naming the file."""
    return _read_weights(path)[0]


def _read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], YOLOv8Weights | None]:
    """(`read_state_dict(path)`, the YOLOv8Weights of an ultralytics checkpoint, else None)."""
    from detector.models.yolov8_import import is_ultralytics_checkpoint, read_yolov8

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


def load_matching_weights(model: nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Copy every tensor whose name and shape match; the rest keep their initialisation (e.g. a class
    head for a different number of classes). Returns and logs what was loaded and what was not."""
    source, yolov8 = _read_weights(path)
    target = model.state_dict()
    loaded = [k for k, v in source.items() if k in target and target[k].shape == v.shape]
    if yolov8 is not None:  # only the class branches depend on the number of classes
        differ = [k for k, v in source.items() if k in target and target[k].shape != v.shape and ".cls_branches." not in k]
        if differ:
            raise CheckpointError(
                f"init_from: a YOLOv8{yolov8.scale} checkpoint, but the model's {_summary(differ)} have other "
                f"shapes: build the model at its scale, model.scale={yolov8.scale} (with the csp backbone)", path)
    report = {
        "loaded": loaded,
        "shape_mismatch": [k for k, v in source.items() if k in target and target[k].shape != v.shape],
        "not_in_checkpoint": [k for k in target if k not in source],
        "unused": [k for k in source if k not in target],
    }
    model.load_state_dict({k: source[k] for k in loaded}, strict=False)
    rank_zero_info(
        f"init_from {path}: loaded {len(loaded)}/{len(target)} tensors; re-initialised (shape differs): "
        f"{_summary(report['shape_mismatch'])}; not in checkpoint: {_summary(report['not_in_checkpoint'])}"
    )
    return report


def _summary(names: list[str], limit: int = 6) -> str:
    if not names:
        return "none"
    return ", ".join(names[:limit]) + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


def freeze(model: nn.Module, spec: str | int | None) -> list[str]:
    """Freeze (requires_grad=False) `spec`: 'backbone', or an int N = the first N stages of the backbone, its
    children in order (stem, stage2, ... stage5 for the CSP and the torchvision backbones; 0..5). Returns the
    frozen parameter names. The BatchNorm layers of frozen parts keep their running statistics (see
    `keep_frozen_norms_in_eval`). `Unfreeze` (callbacks) undoes it."""
    if spec is None:
        return []
    backbone = model.get_submodule("backbone")
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
    FrozenBatchNorm). Call it after each `train()`; once unfrozen, a layer follows train() again."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training:
            parameters = list(module.parameters(recurse=False))
            if parameters and not any(p.requires_grad for p in parameters):
                module.eval()
