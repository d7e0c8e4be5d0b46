"""detector.jsonsafe.json_safe: what metrics.json and evaluation.json are written through."""

import json
import math

import numpy as np
import torch

from detector.jsonsafe import json_safe


def test_json_safe_gives_strict_plain_json():
    value = {1: (np.float32(0.5), np.int64(3), np.bool_(True)), "nan": math.nan, "inf": [math.inf, -math.inf],
             "tensor": torch.tensor(2.5), "nested": {"x": [np.float64("nan"), "text", None]}}
    safe = json_safe(value)
    assert safe == {"1": [0.5, 3, True], "nan": None, "inf": [None, None], "tensor": 2.5,
                    "nested": {"x": [None, "text", None]}}
    assert type(safe["1"][1]) is int and type(safe["tensor"]) is float
    json.dumps(safe, allow_nan=False)  # strict JSON
