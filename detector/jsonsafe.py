"""Plain, strict JSON data from what the metrics and reports hold (metrics.json, evaluation.json) and from the
metadata of imported checkpoints."""

from __future__ import annotations

import datetime
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


def plain_json(value: Any) -> Any:
    """`json_safe`, and every value that JSON has no type for as text (dates and times in ISO format, anything else
    its `str()`): metadata copied from a file of unknown content into one that `torch.load(weights_only=True)` and
    `json.dumps` take."""
    if isinstance(value, dict):
        return {str(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_json(v) for v in value]
    value = json_safe(value)
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    return str(value)
