"""SSD head (Liu et al., "SSD: Single Shot MultiBox Detector", ECCV 2016) and its output type.

At every location of every level and for each of its default boxes: C + 1 class logits (index 0 = background,
class c at index c + 1) and 4 centre-size offsets against the default box (`detector.models.coders.encode_boxes`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from detector.models.blocks import Conv
from detector.models.coders import decode_boxes
from detector.models.heads.dfl import check_activation
from detector.models.priors import Priors


class SSDHeadOutput(NamedTuple):
    """Raw output of an SSD head for one batch: box_deltas (B, A, 4) encoded offsets against the prior boxes,
    cls_logits (B, A, C + 1) with the background at index 0, priors (with the default boxes, xyxy input pixels),
    variances of the offset coder.

    `decode_boxes` is the one decoding of this head: the criterion, the post-processing and the export use it."""

    box_deltas: torch.Tensor
    cls_logits: torch.Tensor
    priors: Priors
    variances: tuple[float, float] = (0.1, 0.2)

    # softmax over the C + 1 logits (background dropped), or a sigmoid of the C foreground logits
    activations = ("softmax", "sigmoid")

    def decode_boxes(self) -> torch.Tensor:
        """(B, A, 4) xyxy boxes in input pixels."""
        return decode_boxes(self.box_deltas, self.priors.boxes, self.variances)

    def class_scores(self, activation: str = "softmax") -> torch.Tensor:
        """(B, A, C) probabilities of the C classes."""
        check_activation(self, activation)
        logits = self.cls_logits.float()
        return logits.softmax(-1)[..., 1:] if activation == "softmax" else logits[..., 1:].sigmoid()


def boxes_per_location(aspect_ratios: tuple[float, ...]) -> int:
    """Ratio 1 twice (s_k and the extra sqrt(s_k s_k+1)) plus r and 1/r for each listed ratio."""
    return 2 + 2 * len(aspect_ratios)


class SSDHead(nn.Module):
    """One classifier and one box regressor per level: with `hidden` None the plain 3x3 conv predictor of
    SSD; with `hidden` channels a Conv3x3(hidden) + BN + SiLU then a 1x1 predictor. Outputs are flattened
    level by level, location by location (y, x), box by box: the order of `detector.models.priors.default_boxes`."""

    def __init__(
        self, in_channels: tuple[int, ...], boxes: tuple[int, ...], num_classes: int,
        hidden: int | None = None, prior_probability: float = 0.01,
    ) -> None:
        super().__init__()
        self.num_classes, self.boxes = num_classes, tuple(boxes)

        def predictor(c: int, outputs: int) -> nn.Module:
            if hidden is None:
                return nn.Conv2d(c, outputs, 3, padding=1)
            return nn.Sequential(Conv(c, hidden, 3), nn.Conv2d(hidden, outputs, 1))

        self.cls_branches = nn.ModuleList(predictor(c, n * (num_classes + 1)) for c, n in zip(in_channels, boxes))
        self.box_branches = nn.ModuleList(predictor(c, n * 4) for c, n in zip(in_channels, boxes))
        self.reset_parameters(prior_probability)

    def reset_parameters(self, prior_probability: float = 0.01) -> None:
        """Final layers: small normal weights, box bias 0; class bias 0 for the background and
        log(p / (1 - p)) for the classes, so that every foreground score starts small (sigmoid p = 0.01,
        softmax about 1 / (1 + C p / (1 - p))), as in RetinaNet: the first steps are not dominated by the
        loss of the many easy negatives."""
        foreground_bias = math.log(prior_probability / (1 - prior_probability))
        for cls, box, n in zip(self.cls_branches, self.box_branches, self.boxes):
            cls_out, box_out = (branch[-1] if isinstance(branch, nn.Sequential) else branch for branch in (cls, box))
            for layer in (cls_out, box_out):
                nn.init.normal_(layer.weight, std=0.01)
                nn.init.zeros_(layer.bias)
            with torch.no_grad():
                cls_out.bias.view(n, self.num_classes + 1)[:, 1:] = foreground_bias

    @staticmethod
    def _flatten(x: torch.Tensor, boxes: int) -> torch.Tensor:
        batch, _, height, width = x.shape
        return x.view(batch, boxes, -1, height, width).permute(0, 3, 4, 1, 2).reshape(batch, height * width * boxes, -1)

    def forward(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        deltas, logits = [], []
        for x, cls, box, n in zip(features, self.cls_branches, self.box_branches, self.boxes):
            logits.append(self._flatten(cls(x), n))
            deltas.append(self._flatten(box(x), n))
        return torch.cat(deltas, 1), torch.cat(logits, 1)
