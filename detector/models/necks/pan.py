"""PAN-FPN neck: a top-down path (upsample + concat + C2f) followed by a bottom-up path; 1x1 projections
adapt backbones whose channels differ from the neck's width."""

from __future__ import annotations

import torch
from torch import nn

from detector.models.blocks import C2f, Conv


class PAN(nn.Module):
    """Fuses (P3, P4, P5) top-down then bottom-up; outputs have `out_channels` (default: the input channels).

    When `out_channels` differs from `in_channels` (e.g. a torchvision backbone under a neck of the model
    scale's width), each input first goes through a 1x1 Conv (+ BN + SiLU) to `out_channels`; otherwise the
    neck has no such layer (the CSP backbone's weights and state-dict keys are unchanged)."""

    def __init__(
        self, in_channels: tuple[int, int, int], repeats: int, out_channels: tuple[int, int, int] | None = None,
    ) -> None:
        super().__init__()
        in_channels, out_channels = tuple(in_channels), tuple(out_channels or in_channels)
        self.project = (
            nn.ModuleList(Conv(c_in, c_out, 1) for c_in, c_out in zip(in_channels, out_channels))
            if in_channels != out_channels else None
        )
        c3, c4, c5 = out_channels
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.top_down4 = C2f(c5 + c4, c4, repeats)
        self.top_down3 = C2f(c4 + c3, c3, repeats)
        self.down3 = Conv(c3, c3, 3, 2)
        self.bottom_up4 = C2f(c3 + c4, c4, repeats)
        self.down4 = Conv(c4, c4, 3, 2)
        self.bottom_up5 = C2f(c4 + c5, c5, repeats)
        self.out_channels = out_channels

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.project is not None:
            features = [project(f) for project, f in zip(self.project, features)]
        p3, p4, p5 = features
        t4 = self.top_down4(torch.cat([self.up(p5), p4], dim=1))
        n3 = self.top_down3(torch.cat([self.up(t4), p3], dim=1))
        n4 = self.bottom_up4(torch.cat([self.down3(n3), t4], dim=1))
        n5 = self.bottom_up5(torch.cat([self.down4(n4), p5], dim=1))
        return [n3, n4, n5]
