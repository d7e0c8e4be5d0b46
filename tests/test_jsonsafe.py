"""detector.jsonsafe.json_safe: what metrics.json and evaluation.json are written through."""

import datetime
import io
import json
import math
from pathlib import Path

import numpy as np
import torch

from detector.jsonsafe import json_safe, plain_json


def test_json_safe_gives_strict_plain_json():
    value = {1: (np.float32(0.5), np.int64(3), np.bool_(True)), "nan": math.nan, "inf": [math.inf, -math.inf],
             "tensor": torch.tensor(2.5), "nested": {"x": [np.float64("nan"), "text", None]}}
    safe = json_safe(value)
    assert safe == {"1": [0.5, 3, True], "nan": None, "inf": [None, None], "tensor": 2.5,
                    "nested": {"x": [None, "text", None]}}
    assert type(safe["1"][1]) is int and type(safe["tensor"]) is float
    json.dumps(safe, allow_nan=False)  # strict JSON


def test_plain_json_writes_what_json_has_no_type_for_as_text():
    value = {"date": datetime.datetime(2026, 1, 2, 3, 4, 5), "day": datetime.date(2026, 1, 2), "path": Path("a/b"),
             "numbers": (np.float64(0.5), math.nan, True, 3), 7: {"tags": {"x"}}}
    plain = plain_json(value)
    assert plain == {"date": "2026-01-02T03:04:05", "day": "2026-01-02", "path": "a/b", "numbers": [0.5, None, True, 3],
                     "7": {"tags": "{'x'}"}}
    json.dumps(plain, allow_nan=False)
    buffer = io.BytesIO()
    torch.save(plain, buffer)
    assert torch.load(io.BytesIO(buffer.getvalue()), weights_only=True) == plain
