"""Rebuild a trained detector from a Lightning checkpoint alone, loading it safely.

A checkpoint written by `train.py` holds, besides Lightning's own state, only plain Python types and
tensors (see `LitDetector.on_save_checkpoint`):
    state_dict           the EMA weights when the EMA callback was on (Lightning's WeightAveraging puts the
                         averaged weights there), else the raw weights
    current_model_state  the raw (non-averaged) weights, when the EMA callback was on
    run_config           the resolved training config as a plain dict (model, data, postprocess, ...)
    class_names, category_ids, img_size
so `torch.load(path, weights_only=True)` reads it: no pickled classes, no code runs on load (after the checks of
`detector.models.safe_pickle.check_checkpoint`: a hostile file is refused before its data is read).
"""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import OmegaConf
from torch import nn

from detector.config import loss_activation
from detector.models.build import build_model
from detector.models.safe_pickle import CheckpointError, checkpoint_file, load_weights_only
from detector.postprocess.postprocessors import Postprocessor
from detector.training.yolov8_import import is_ultralytics_checkpoint

POSTPROCESS_KEYS = ("conf_threshold", "iou_threshold", "max_detections", "max_candidates", "nms", "one2one")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """'auto' (or None): the first CUDA GPU when there is one, else the CPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def read_checkpoint(ckpt_path: str | Path) -> dict[str, Any]:
    """The checkpoint dict, read by `load_weights_only` (the file checked first, then `torch.load(weights_only=True)`:
    tensors and plain data only); a CheckpointError naming the file otherwise."""
    with checkpoint_file(ckpt_path):
        if is_ultralytics_checkpoint(ckpt_path):
            raise CheckpointError("an ultralytics checkpoint: convert it first (detector-convert-ultralytics <it> "
                                  "<out.ckpt>) and use the converted file")
        checkpoint = load_weights_only(ckpt_path)
        if not isinstance(checkpoint, dict):
            raise CheckpointError(f"not a checkpoint of this project (a {type(checkpoint).__name__}, not a dict)")
    return checkpoint


# module paths of checkpoints written before the package was grouped by stage (December 2026) -> today's
MOVED_MODULES = {
    "detector.postprocess.": "detector.postprocess.postprocessors.",
    "detector.models.backbones.": "detector.models.backbones.csp.",
    "detector.models.torchvision_backbones.": "detector.models.backbones.torchvision.",
    "detector.models.detector.": "detector.models.detectors.yolo.",
    # the detectors apart from their heads (models/heads/ssd.py is the SSD head; December 2026)
    "detector.models.yolo.": "detector.models.detectors.yolo.",
    "detector.models.ssd.": "detector.models.detectors.ssd.",
    "detector.criterion_ssd.": "detector.criteria.multibox.",
    "detector.criterion.": "detector.criteria.yolov8.",
    "detector.samplers.": "detector.criteria.hard_negative_mining.",
}
# classes renamed in place (old full name -> new full name)
RENAMED_CLASSES = {"detector.losses.iou.RIoULoss": "detector.losses.iou.RisingGradientIoULoss",
                   "detector.criterion.DetectionCriterion": "detector.criteria.yolov8.YOLOv8Criterion",
                   "detector.criteria.dense.DetectionCriterion": "detector.criteria.yolov8.YOLOv8Criterion"}
# settings that older configs passed and today's classes read from the head output or the loss instead
DROPPED_SETTINGS = {"model": ("reg_max",), "postprocess": ("reg_max", "variances", "cls_loss")}


def _moved(target: str) -> str:
    if target in RENAMED_CLASSES:
        return RENAMED_CLASSES[target]
    for old, new in MOVED_MODULES.items():
        if target.startswith(old) and target.count(".") == old.count("."):
            return new + target[len(old):]
    return target


def upgrade_run_config(config: Any) -> Any:
    """A run config of an older checkpoint, in today's terms: moved `_target_` modules renamed, settings that are
    no longer arguments dropped (an SSD model's `reg_max: null`, the post-processors' `reg_max`/`variances`), and
    the post-processing activation taken from the classification loss's declaration. Today's configs pass through
    unchanged. (The weight options of older model configs, `init_from`, `backbone.pretrained`, ..., need nothing
    here: `build_model` leaves every run option out, by today's name or the deprecated one.)"""
    if isinstance(config, list):
        return [upgrade_run_config(v) for v in config]
    if not isinstance(config, dict):
        return config
    config = {k: _moved(v) if k == "_target_" and isinstance(v, str) else upgrade_run_config(v) for k, v in config.items()}
    for group, keys in DROPPED_SETTINGS.items():
        node = config.get(group)
        if isinstance(node, dict) and "_target_" in node:
            for key in keys:
                if key in node and (group == "postprocess" or node[key] is None):
                    del node[key]
    postprocess, cls_loss = config.get("postprocess"), (config.get("loss") or {}).get("cls")
    if isinstance(postprocess, dict) and postprocess.get("activation", "auto") == "auto":
        postprocess["activation"] = loss_activation(cls_loss["_target_"]) if cls_loss else "sigmoid"
    return config


# classes a checkpoint's config may name for instantiation: weights_only=True keeps unpickling safe, and this keeps
# the config from running arbitrary callables (`_target_: os.system`) when the model is rebuilt
SAFE_TARGET_PREFIXES = ("detector.",)
SAFE_DATA_TARGET_PREFIXES = ("detector.", "albumentations.")


def check_targets(config: Any, allowed: tuple[str, ...] = SAFE_TARGET_PREFIXES, where: str = "config") -> None:
    """Raise ValueError when a `_target_` anywhere in `config` is outside the `allowed` module prefixes."""
    if isinstance(config, dict):
        target = config.get("_target_")
        if target is not None and not str(target).startswith(allowed):
            raise ValueError(f"refusing to instantiate {target!r} from the checkpoint's {where} (allowed: {allowed})")
        for key, value in config.items():
            check_targets(value, allowed, f"{where}.{key}")
    elif isinstance(config, list):
        for index, value in enumerate(config):
            check_targets(value, allowed, f"{where}[{index}]")


def load_detector(
    ckpt_path: str | Path, device: str | torch.device | None = "auto", weights: str = "ema",
    run_config: dict | str | Path | None = None, **postprocess_overrides: Any,
) -> tuple[nn.Module, Postprocessor, dict[str, Any]]:
    """(model in eval mode on `device`, its Postprocessor, meta) from a checkpoint written by train.py.

    weights: "ema" = the checkpoint's `state_dict` (the EMA weights when training used the EMA callback),
        "raw" = the non-averaged weights (`current_model_state`; the same as "ema" without EMA).
    run_config: the training config (a dict, or a run's config_resolved.yaml) to use when the checkpoint has
        none (checkpoints written before it was stored); by default the config_resolved.yaml of the run
        directory that holds checkpoints/<file>.
    postprocess_overrides: conf_threshold, iou_threshold, max_detections, max_candidates, nms, one2one; None values
        keep the checkpoint's settings.
    meta: class_names, category_ids, img_size, num_classes, run_config, ema (bool: EMA weights were stored),
        weights, epoch, global_step, ckpt_path, device, postprocess (the settings in use).
    """
    unknown = set(postprocess_overrides) - set(POSTPROCESS_KEYS)
    if unknown:
        raise TypeError(f"unknown postprocess settings {sorted(unknown)}; known: {POSTPROCESS_KEYS}")
    if weights not in ("ema", "raw"):
        raise ValueError(f"weights must be 'ema' or 'raw', not {weights!r}")
    with checkpoint_file(ckpt_path):  # whatever fails from here to the rebuilt model is the checkpoint's
        checkpoint = read_checkpoint(ckpt_path)
        config = checkpoint.get("run_config") or run_config
        beside = Path(ckpt_path).resolve().parent.parent / "config_resolved.yaml"  # <run dir>/checkpoints/x.ckpt
        if config is None and beside.is_file():
            config = beside
        if isinstance(config, (str, Path)):
            config = OmegaConf.load(config)
        if config is None:
            raise CheckpointError(f"no run_config (written before checkpoints stored it) and there is no {beside}; "
                                  "pass run_config= (the run's config_resolved.yaml) to rebuild the model")
        config = upgrade_run_config(OmegaConf.to_container(OmegaConf.create(config), resolve=True))

        has_ema = "current_model_state" in checkpoint
        state = checkpoint["current_model_state"] if weights == "raw" and has_ema else checkpoint["state_dict"]
        model_state = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
        check_targets(config["model"], where="model")
        check_targets(config.get("postprocess") or {}, where="postprocess")
        # fresh weights, then the checkpoint's; the run options (`model.compile`, `model.init_from`, ...) are not applied
        model = build_model(config["model"])
        model.load_state_dict(model_state)

        # the training config's post-processor (resolved), with the overrides
        # that it has as settings (an SSDPostprocessor has no `nms`, for example)
        default = {"_target_": "detector.postprocess.postprocessors.Postprocessor"}
        postprocess_cfg = dict(config.get("postprocess") or default)
        target = hydra.utils.get_class(postprocess_cfg["_target_"])
        accepted = set(postprocess_cfg) | set(inspect.signature(target).parameters)
        for key, value in postprocess_overrides.items():
            if value is None:
                continue
            if key not in accepted:
                warnings.warn(f"postprocess.{key} ignored: not a setting of {target.__name__}", stacklevel=2)
                continue
            postprocess_cfg[key] = value
        postprocessor = hydra.utils.instantiate(postprocess_cfg)

        num_classes = int(config["model"]["num_classes"])
        class_names = list(checkpoint.get("class_names") or [str(i) for i in range(num_classes)])
        category_ids = list(checkpoint.get("category_ids") or range(1, num_classes + 1))
        img_size = int(checkpoint.get("img_size") or config["model"].get("image_size")
                       or config.get("data", {}).get("img_size") or 640)
    device = resolve_device(device)
    model.to(device).eval()
    meta = {
        "ckpt_path": str(ckpt_path), "class_names": class_names, "category_ids": category_ids,
        "num_classes": num_classes, "img_size": img_size, "run_config": config, "ema": has_ema,
        "weights": weights if has_ema else "raw", "epoch": checkpoint.get("epoch"),
        "global_step": checkpoint.get("global_step"), "device": str(device),
        "postprocess": {k: getattr(postprocessor, k) for k in POSTPROCESS_KEYS if hasattr(postprocessor, k)},
    }
    return model, postprocessor, meta
