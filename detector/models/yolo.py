"""YOLOv8-style anchor-free detector: backbone (CSP or torchvision) -> PAN neck -> decoupled DFL head."""

from __future__ import annotations

import torch
from torch import nn

from detector.models.backbones.csp import CSPDarknet
from detector.models.finetune import freeze as finetune_freeze
from detector.models.finetune import keep_frozen_norms_in_eval, load_matching_weights
from detector.models.heads.dfl import DFLHead, DFLHeadOutput
from detector.models.necks.pan import PAN
from detector.models.priors import Priors, anchor_points
from detector.models.scales import get_scale


class YOLODetector(nn.Module):
    """Anchor-free detector at scale n/s/m/l/x; `reg_max` distribution bins per box side.

    `scale` sets the CSP backbone and the width and depth of the neck and head. `backbone`, when given, replaces
    the CSP backbone: any module that maps images in [0, 1] to the stride 8/16/32 feature maps and has
    `out_channels` (e.g. `detector.models.backbones.torchvision.ResNet`); the neck then projects its channels to
    the scale's widths (1x1 convs)."""

    strides = (8, 16, 32)
    output_type = DFLHeadOutput

    def __init__(
        self, num_classes: int, scale: str = "n", reg_max: int = 16, image_size: int = 640,
        init_from: str | None = None, freeze: str | int | None = None, backbone: nn.Module | None = None,
    ) -> None:
        """`init_from`: a checkpoint whose matching weights are loaded (fine-tuning); `freeze`: 'backbone'
        or a number of backbone stages to freeze (see detector.models.finetune)."""
        super().__init__()
        size = get_scale(scale)
        self.num_classes, self.reg_max = num_classes, reg_max
        self.backbone = CSPDarknet(size) if backbone is None else backbone
        widths = tuple(size.channels(c) for c in (256, 512, 1024))  # the CSP backbone's P3/P4/P5 at this scale
        self.neck = PAN(self.backbone.out_channels, size.repeats(3), out_channels=widths)
        self.head = DFLHead(self.neck.out_channels, num_classes, self.strides, reg_max)
        self.head.reset_bias(image_size)
        if init_from is not None:
            load_matching_weights(self, init_from)
        finetune_freeze(self, freeze)
        keep_frozen_norms_in_eval(self)
        self._priors: dict[tuple, Priors] = {}

    def train(self, mode: bool = True) -> YOLODetector:
        """nn.Module.train, except that BatchNorm layers whose parameters are frozen stay in eval mode."""
        super().train(mode)
        if mode:
            keep_frozen_norms_in_eval(self)
        return self

    @torch.compiler.disable  # a Python-side cache: kept out of torch.compile's graph (no recompiles)
    def priors(self, feature_sizes: list[tuple[int, int]], device: torch.device) -> Priors:
        """Anchor points (pixels) and strides for these feature sizes, cached per size and device."""
        key = (tuple(feature_sizes), str(device))
        if key not in self._priors:
            points, strides = anchor_points(feature_sizes, self.strides, device=device)
            self._priors[key] = Priors(points * strides, strides, None, tuple(h * w for h, w in feature_sizes))
        return self._priors[key]

    def forward(self, images: torch.Tensor) -> DFLHeadOutput:
        features = self.neck(self.backbone(images))
        box_logits, cls_logits = self.head(features)
        return DFLHeadOutput(box_logits, cls_logits, self.priors([tuple(f.shape[-2:]) for f in features], images.device))
