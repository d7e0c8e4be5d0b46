"""Plain, strict JSON data from what the metrics and reports hold (metrics.json, evaluation.json)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch


def json_safe(value: Any) -> Any:
    """A copy that `json.dumps(..., allow_nan=False)` writes: dict keys become strings, tuples lists, numpy
    scalars and 0-d tensors Python numbers, non-finite floats (NaN, +-inf) None (null)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic) or (isinstance(value, torch.Tensor) and value.ndim == 0):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
