"""Build a network from its model config: the config also holds run options that are not constructor arguments."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import hydra
import torch
from torch import nn

from detector.models.priors import Priors

# keys of a model config (configs/train.yaml gives them to every model) that say how the model runs, not how it
# is built; the LitDetector reads them (`module.compile_model: ${model.compile}`)
RUN_OPTIONS = ("compile",)


def build_model(config: Mapping[str, Any]) -> nn.Module:
    """Instantiate a model config (`_target_` + constructor arguments), leaving out RUN_OPTIONS."""
    return hydra.utils.instantiate({key: value for key, value in config.items() if key not in RUN_OPTIONS})


@torch.no_grad()
def model_priors(config: Mapping[str, Any], img_size: int) -> Priors:
    """The priors of the model of `config` (an untrained instance, in eval mode) for a square input of `img_size`."""
    return build_model(config).eval()(torch.zeros(1, 3, img_size, img_size)).priors
