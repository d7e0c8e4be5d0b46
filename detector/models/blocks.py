"""Building blocks of the CSP backbone and PAN neck (YOLOv8 architecture description).

Conv = Conv2d + BatchNorm + SiLU; Bottleneck = two 3x3 Convs with an optional residual;
C2f = split, a chain of Bottlenecks whose every output is kept, concat, 1x1 fuse;
SPPF = three chained 5x5 max-pools whose outputs are concatenated (fast spatial pyramid pooling).
"""

from __future__ import annotations

import torch
from torch import nn


class Conv(nn.Sequential):
    """Conv2d(k, stride, 'same' padding, no bias) -> BatchNorm2d -> SiLU."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 1, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False),
            nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.03),
            nn.SiLU(inplace=True),
        )


class Bottleneck(nn.Module):
    """x -> Conv3x3 -> Conv3x3 (+ x when `shortcut` and shapes allow)."""

    def __init__(self, c_in: int, c_out: int, shortcut: bool = True, expansion: float = 1.0) -> None:
        super().__init__()
        hidden = int(c_out * expansion)
        self.cv1 = Conv(c_in, hidden, 3)
        self.cv2 = Conv(hidden, c_out, 3)
        self.add = shortcut and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """CSP block with two halves: one half passes through `n` Bottlenecks, every intermediate is concatenated."""

    def __init__(self, c_in: int, c_out: int, n: int = 1, shortcut: bool = False) -> None:
        super().__init__()
        self.hidden = c_out // 2
        self.cv1 = Conv(c_in, 2 * self.hidden, 1)
        self.cv2 = Conv((2 + n) * self.hidden, c_out, 1)
        self.m = nn.ModuleList(Bottleneck(self.hidden, self.hidden, shortcut) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = list(self.cv1(x).chunk(2, dim=1))
        for block in self.m:
            outputs.append(block(outputs[-1]))
        return self.cv2(torch.cat(outputs, dim=1))


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: 1x1 reduce, three chained max-pools, concat, 1x1 expand."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 5) -> None:
        super().__init__()
        hidden = c_in // 2
        self.cv1 = Conv(c_in, hidden, 1)
        self.cv2 = Conv(hidden * 4, c_out, 1)
        self.pool = nn.MaxPool2d(kernel, stride=1, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [self.cv1(x)]
        for _ in range(3):
            outputs.append(self.pool(outputs[-1]))
        return self.cv2(torch.cat(outputs, dim=1))
