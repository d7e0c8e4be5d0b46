"""Deprecated name of `detector.criteria.yolov8` (renamed in December 2026 with `criterion=yolo` -> `yolov8`):
`detector.criteria.dense.DetectionCriterion` still resolves to `YOLOv8Criterion`, with a FutureWarning, for
configs and code written before the rename. To be removed with the `criterion=yolo` alias."""

from __future__ import annotations

import warnings

from detector.criteria import yolov8


def __getattr__(name: str) -> type:
    if name == "DetectionCriterion":
        warnings.warn("detector.criteria.dense.DetectionCriterion is deprecated: it is now "
                      "detector.criteria.yolov8.YOLOv8Criterion (criterion=yolov8)", FutureWarning, stacklevel=2)
        return yolov8.YOLOv8Criterion
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
