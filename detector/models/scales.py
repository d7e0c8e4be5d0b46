"""Depth/width multiples of the n/s/m/l/x model scales (YOLOv8's published table)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Scale:
    depth: float
    width: float
    max_channels: int

    def channels(self, base: int) -> int:
        """Channels of a layer with `base` channels at width 1.0, rounded up to a multiple of 8."""
        return math.ceil(min(base, self.max_channels) * self.width / 8) * 8

    def repeats(self, base: int) -> int:
        """Number of blocks in a stage with `base` blocks at depth 1.0 (at least one)."""
        return max(round(base * self.depth), 1)


SCALES: dict[str, Scale] = {
    "n": Scale(0.33, 0.25, 1024),
    "s": Scale(0.33, 0.50, 1024),
    "m": Scale(0.67, 0.75, 768),
    "l": Scale(1.00, 1.00, 512),
    "x": Scale(1.00, 1.25, 512),
}


def get_scale(name: str) -> Scale:
    if name not in SCALES:
        raise ValueError(f"unknown model scale {name!r}; choose one of {sorted(SCALES)}")
    return SCALES[name]
