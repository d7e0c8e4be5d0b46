"""Build a network from its model config: the config also holds run options that are not constructor arguments."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import hydra
import torch
from torch import nn

from detector.models.priors import Priors

# keys of a model config (configs/train.yaml gives them to every model) that are not constructor arguments: how the
# model runs (`compile`, read by the LitDetector) and where its weights start and what trains (read by the runner:
# detector.training.finetune.prepare_model). A constructor only builds (fresh weights).
WEIGHT_OPTIONS = ("init_from", "freeze", "pretrained_backbone", "backbone_weights")
RUN_OPTIONS = ("compile", *WEIGHT_OPTIONS)
# the names two of them had inside the config of a torchvision backbone until December 2026 (`model.backbone.pretrained`,
# `model.backbone.weights`): still read, with a FutureWarning, until they are removed
DEPRECATED_BACKBONE_OPTIONS = {"pretrained": "pretrained_backbone", "weights": "backbone_weights"}


def renamed_options(config: Mapping[str, Any], warn: bool = True) -> dict[str, Any]:
    """`config` with the DEPRECATED_BACKBONE_OPTIONS of its backbone moved to today's names (one FutureWarning per
    old name that is set, unless `warn` is false); a value already set under today's name wins."""
    config = dict(config)
    backbone = config.get("backbone")
    if not isinstance(backbone, Mapping) or not set(DEPRECATED_BACKBONE_OPTIONS) & set(backbone):
        return config
    backbone = config["backbone"] = dict(backbone)
    for old, new in DEPRECATED_BACKBONE_OPTIONS.items():
        value = backbone.pop(old, None)
        if value in (None, False):
            continue
        if warn:
            warnings.warn(f"model.backbone.{old} is deprecated and will be removed: use model.{new}", FutureWarning,
                          stacklevel=3)
        if config.get(new) in (None, False):
            config[new] = value
    return config


def split_model_config(config: Mapping[str, Any], warn: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the constructor config: `_target_` + arguments, the RUN_OPTIONS that are set) of a model config."""
    config = renamed_options(config, warn)
    options = {key: config.pop(key) for key in RUN_OPTIONS if key in config}
    return config, options


def build_model(config: Mapping[str, Any]) -> nn.Module:
    """Instantiate a model config (`_target_` + constructor arguments), leaving out RUN_OPTIONS: fresh weights."""
    return hydra.utils.instantiate(split_model_config(config, warn=False)[0])


@torch.no_grad()
def model_priors(config: Mapping[str, Any], img_size: int) -> Priors:
    """The priors of the model of `config` (an untrained instance, in eval mode) for a square input of `img_size`."""
    return build_model(config).eval()(torch.zeros(1, 3, img_size, img_size)).priors
