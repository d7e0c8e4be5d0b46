"""CSP-Darknet backbone with C2f stages and SPPF (YOLOv8 layout)."""

from __future__ import annotations

import torch
from torch import nn

from detector.models.blocks import SPPF, C2f, Conv
from detector.models.scales import Scale, get_scale


class CSPDarknet(nn.Module):
    """Stem + four stride-2 stages; returns the stride 8/16/32 feature maps (P3, P4, P5).

    Base channels 64-128-256-512-1024 and C2f repeats 3-6-6-3 are scaled by `scale` (a Scale or its name).
    Takes images in [0, 1] as they are. The five children (stem, stage2..stage5) are the stages that
    `model.freeze=N` counts.
    """

    def __init__(self, scale: Scale | str, in_channels: int = 3) -> None:
        super().__init__()
        scale = get_scale(scale) if isinstance(scale, str) else scale
        c1, c2, c3, c4, c5 = (scale.channels(c) for c in (64, 128, 256, 512, 1024))
        self.stem = Conv(in_channels, c1, 3, 2)
        self.stage2 = nn.Sequential(Conv(c1, c2, 3, 2), C2f(c2, c2, scale.repeats(3), shortcut=True))
        self.stage3 = nn.Sequential(Conv(c2, c3, 3, 2), C2f(c3, c3, scale.repeats(6), shortcut=True))
        self.stage4 = nn.Sequential(Conv(c3, c4, 3, 2), C2f(c4, c4, scale.repeats(6), shortcut=True))
        self.stage5 = nn.Sequential(Conv(c4, c5, 3, 2), C2f(c5, c5, scale.repeats(3), shortcut=True), SPPF(c5, c5))
        self.out_channels = (c3, c4, c5)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        p3 = self.stage3(self.stage2(self.stem(x)))
        p4 = self.stage4(p3)
        p5 = self.stage5(p4)
        return [p3, p4, p5]
