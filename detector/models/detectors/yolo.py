"""YOLOv8-style anchor-free detector: backbone (CSP or torchvision) -> PAN neck -> decoupled DFL head
(+ a one-to-one head for NMS-free inference, YOLOv10)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from detector.models.backbones.csp import CSPDarknet
from detector.models.heads.dfl import DFLHead, DFLHeadOutput
from detector.models.necks.pan import PAN
from detector.models.priors import Priors, anchor_points
from detector.models.scales import get_scale


class YOLODetector(nn.Module):
    """Anchor-free detector at scale n/s/m/l/x; `reg_max` distribution bins per box side (1: the distances are
    regressed directly, no DFL, as YOLO26).

    `end2end`: a second head of the same shape (YOLOv10's consistent dual assignments; a copy of the head at
    initialisation) trained one-to-one beside the one-to-many head, its output in `DFLHeadOutput.one2one`;
    inference then keeps its top scores without NMS (`detector.postprocess.postprocessors.Postprocessor`). Its
    input features are detached while training, as in YOLOv10's and ultralytics' code: the one-to-one loss
    trains that head only, the backbone and neck learn from the one-to-many loss.

    `scale` sets the CSP backbone and the width and depth of the neck and head. `backbone`, when given, replaces
    the CSP backbone: any module that maps images in [0, 1] to the stride 8/16/32 feature maps and has
    `out_channels` (e.g. `detector.models.backbones.torchvision.ResNet`); the neck then projects its channels to
    the scale's widths (1x1 convs)."""

    strides = (8, 16, 32)
    output_type = DFLHeadOutput

    def __init__(
        self, num_classes: int, scale: str = "n", reg_max: int = 16, image_size: int = 640,
        backbone: nn.Module | None = None, end2end: bool = False,
    ) -> None:
        """Builds the network with fresh weights; starting weights and freezing are the training side's
        (detector.training.finetune)."""
        super().__init__()
        if reg_max < 1:
            raise ValueError(f"reg_max must be >= 1 (1: distances without bins), got {reg_max}")
        size = get_scale(scale)
        self.num_classes, self.reg_max = num_classes, reg_max
        self.backbone = CSPDarknet(size) if backbone is None else backbone
        widths = tuple(size.channels(c) for c in (256, 512, 1024))  # the CSP backbone's P3/P4/P5 at this scale
        self.neck = PAN(self.backbone.out_channels, size.repeats(3), out_channels=widths)
        self.head = DFLHead(self.neck.out_channels, num_classes, self.strides, reg_max)
        self.head.reset_bias(image_size)
        self.one2one_head = copy.deepcopy(self.head) if end2end else None
        self._priors: dict[tuple, Priors] = {}

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
        priors = self.priors([tuple(f.shape[-2:]) for f in features], images.device)
        one2one = None
        if self.one2one_head is not None:
            one2one = DFLHeadOutput(*self.one2one_head([f.detach() for f in features] if self.training else features), priors)
        return DFLHeadOutput(*self.head(features), priors, one2one)
