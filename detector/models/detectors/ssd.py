"""Anchor-based SSD detectors (Liu et al., "SSD: Single Shot MultiBox Detector", ECCV 2016).

Each feature level predicts, at every location and for each of its default boxes, C + 1 class logits
(index 0 = background, class c at index c + 1) and 4 centre-size offsets against the default box
(`detector.models.coders.encode_boxes`, variances (0.1, 0.2)).

- `SSD300VGG16`: the original SSD300: VGG16 (torchvision) with pool5 3x3/1, dilated conv6 and conv7, four
  extra stages, L2Norm(scale 20) on conv4_3; 8732 default boxes on a 300 x 300 input.
- `SSDCSP`: a light SSD on the project's CSP backbone + PAN neck (strides 8/16/32) with extra stride-2
  levels and a small head; it trains in minutes on a CPU (`model=ssd_csp_n`).
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import VGG16_Weights, get_model

from detector.models.backbones.csp import CSPDarknet
from detector.models.backbones.torchvision import TorchvisionLayers
from detector.models.blocks import Conv
from detector.models.heads.ssd import SSDHead, SSDHeadOutput, boxes_per_location
from detector.models.necks.pan import PAN
from detector.models.priors import (
    SSD300_ASPECT_RATIOS,
    SSD300_SCALES,
    SSD300_STEPS,
    Priors,
    box_centres,
    default_boxes,
)
from detector.models.scales import get_scale


class _SSDBase(nn.Module):
    """Default-box bookkeeping shared by the SSD models: priors cached per feature sizes, input size and device."""

    output_type = SSDHeadOutput

    def _init_priors(
        self, aspect_ratios, scales, min_scale, max_scale, first_scale, steps, clip, variances,
    ) -> None:
        self.aspect_ratios = tuple(tuple(float(r) for r in level) for level in aspect_ratios)
        self.scales = None if scales is None else tuple(float(s) for s in scales)
        self.min_scale, self.max_scale, self.first_scale = min_scale, max_scale, first_scale
        self.steps = None if steps is None else tuple(float(s) for s in steps)
        self.clip = clip
        # the coder variances of the offsets this head regresses (its outputs carry them to the decoding)
        self.variances = tuple(float(v) for v in variances)
        self._priors: dict[tuple, Priors] = {}

    @torch.compiler.disable  # a Python-side cache: kept out of torch.compile's graph (no recompiles)
    def priors(self, feature_sizes: list[tuple[int, int]], image_size: tuple[int, int], device: torch.device) -> Priors:
        """The default boxes (A, 4) xyxy pixels for these feature sizes and input size, with their centres, the
        centre spacing of their level (`steps`, else image width / feature width) and the boxes per level;
        cached per size and device."""
        key = (tuple(feature_sizes), tuple(image_size), str(device))
        if key not in self._priors:
            boxes = default_boxes(
                list(feature_sizes), image_size, self.aspect_ratios, scales=self.scales, min_scale=self.min_scale,
                max_scale=self.max_scale, first_scale=self.first_scale, steps=self.steps, clip=self.clip, device=device,
            )
            level_sizes = tuple(h * w * n for (h, w), n in zip(feature_sizes, self.head.boxes))
            spacing = [self.steps[k] if self.steps is not None else image_size[1] / w for k, (_, w) in enumerate(feature_sizes)]
            strides = torch.repeat_interleave(torch.tensor(spacing, device=device), torch.tensor(level_sizes, device=device))
            self._priors[key] = Priors(box_centres(boxes), strides.to(boxes.dtype).unsqueeze(1), boxes, level_sizes)
        return self._priors[key]

    def _output(self, images: torch.Tensor, features: list[torch.Tensor]) -> SSDHeadOutput:
        deltas, logits = self.head(features)
        priors = self.priors([tuple(f.shape[-2:]) for f in features], tuple(images.shape[-2:]), images.device)
        return SSDHeadOutput(deltas, logits, priors, self.variances)


class L2Norm(nn.Module):
    """Channel-wise L2 normalisation with a learned per-channel scale (ParseNet; SSD on conv4_3, scale 20)."""

    def __init__(self, channels: int, scale: float = 20.0, eps: float = 1e-10) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), scale))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / (x.norm(dim=1, keepdim=True) + self.eps) * self.weight.view(1, -1, 1, 1)


class SSD300VGG16(_SSDBase, TorchvisionLayers):
    """SSD300 with a VGG16 backbone (the reference architecture, as torchvision's `ssd300_vgg16`).

    Built with random weights; its VGG16 layers are meant to start from torchvision's ImageNet VGG16 weights
    (`VGG16_Weights.IMAGENET1K_FEATURES`, the weights torchvision's SSD300 starts from), which the training side loads
    (`model.pretrained_backbone=true`, or a local copy of the file: `model.backbone_weights=<path>`). Inputs in [0, 1]
    are normalised inside the model the way those weights expect (x * 255 - mean * 255, std 1/255).
    Feature maps 38/19/10/5/3/1 on a 300 x 300 input (inputs below about 268 px leave no 1 x 1 last level)."""

    out_channels = (512, 1024, 512, 256, 256, 256)

    def __init__(
        self, num_classes: int, aspect_ratios: tuple[tuple[float, ...], ...] = SSD300_ASPECT_RATIOS,
        scales: tuple[float, ...] | None = SSD300_SCALES, min_scale: float = 0.2, max_scale: float = 0.9,
        first_scale: float | None = 0.1, steps: tuple[float, ...] | None = SSD300_STEPS, clip: bool = True,
        variances: tuple[float, float] = (0.1, 0.2),
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self._init_priors(aspect_ratios, scales, min_scale, max_scale, first_scale, steps, clip, variances)
        if len(self.aspect_ratios) != 6:
            raise ValueError(f"SSD300VGG16 has 6 feature levels, got {len(self.aspect_ratios)} aspect-ratio lists")
        vgg = get_model("vgg16", weights=None)
        features = vgg.features
        features[16].ceil_mode = True  # pool3: 75 -> 38, as in SSD
        self.conv4_3 = features[:23]  # up to conv4_3 + ReLU
        self.l2norm = L2Norm(512, 20.0)
        self.conv7 = nn.Sequential(
            *features[23:30],  # pool4, conv5_1..conv5_3 + ReLU
            nn.MaxPool2d(3, 1, 1),  # pool5 3x3 stride 1
            nn.Conv2d(512, 1024, 3, padding=6, dilation=6), nn.ReLU(inplace=True),  # conv6 (atrous fc6)
            nn.Conv2d(1024, 1024, 1), nn.ReLU(inplace=True),  # conv7 (fc7)
        )

        def extra(c_in: int, hidden: int, c_out: int, stride: int, padding: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(c_in, hidden, 1), nn.ReLU(inplace=True),
                nn.Conv2d(hidden, c_out, 3, stride, padding), nn.ReLU(inplace=True),
            )

        self.extras = nn.ModuleList([
            extra(1024, 256, 512, 2, 1),  # conv8_2: 10 x 10
            extra(512, 128, 256, 2, 1),  # conv9_2: 5 x 5
            extra(256, 128, 256, 1, 0),  # conv10_2: 3 x 3
            extra(256, 128, 256, 1, 0),  # conv11_2: 1 x 1
        ])
        for module in [*self.conv7[-4:], *self.extras.modules()]:
            if isinstance(module, nn.Conv2d):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        boxes = tuple(boxes_per_location(r) for r in self.aspect_ratios)
        self.head = SSDHead(self.out_channels, boxes, num_classes)
        self.register_buffer("mean", torch.tensor([0.48235, 0.45882, 0.40784]).view(1, 3, 1, 1), persistent=False)
        self.comes_from(vgg, "vgg16", VGG16_Weights.IMAGENET1K_FEATURES)

    def forward(self, images: torch.Tensor) -> SSDHeadOutput:
        x = (images - self.mean) * 255.0
        x = self.conv4_3(x)
        features = [self.l2norm(x)]
        x = self.conv7(x)
        features.append(x)
        for layer in self.extras:
            if min(x.shape[-2:]) < 3 and layer[2].padding == (0, 0):
                raise ValueError(
                    f"input {tuple(images.shape[-2:])} is too small for SSD300VGG16 (its last levels need the "
                    "300 x 300 input of SSD300; use data.img_size=300)"
                )
            x = layer(x)
            features.append(x)
        return self._output(images, features)


class SSDCSP(_SSDBase):
    """A light SSD: CSP-Darknet backbone + PAN neck at scale n/s/m/l/x (strides 8/16/32), `extra_levels`
    stride-2 Conv levels on top (strides 64, 128, ...), and a small head (a 3x3 Conv of `head_channels`,
    then 1x1 predictors). Default boxes with SSD's scales (`min_scale`..`max_scale`, `first_scale` for the
    first level) and ratios {1, 2, 1/2} on every level (4 per location), centres at (i + 0.5) / f_k."""

    def __init__(
        self, num_classes: int, scale: str = "n", extra_levels: int = 2, head_channels: int | None = None,
        aspect_ratios: tuple[tuple[float, ...], ...] | None = None, scales: tuple[float, ...] | None = None,
        min_scale: float = 0.2, max_scale: float = 0.9, first_scale: float | None = 0.1,
        steps: tuple[float, ...] | None = None, clip: bool = True, variances: tuple[float, float] = (0.1, 0.2),
    ) -> None:
        super().__init__()
        size = get_scale(scale)
        self.num_classes = num_classes
        self.backbone = CSPDarknet(size)
        self.neck = PAN(self.backbone.out_channels, size.repeats(3))
        c5 = self.neck.out_channels[-1]
        self.extras = nn.ModuleList(Conv(c5, c5, 3, 2) for _ in range(extra_levels))
        in_channels = (*self.neck.out_channels, *([c5] * extra_levels))
        num_levels = len(in_channels)
        aspect_ratios = ((2.0,),) * num_levels if aspect_ratios is None else aspect_ratios
        self._init_priors(aspect_ratios, scales, min_scale, max_scale, first_scale, steps, clip, variances)
        if len(self.aspect_ratios) != num_levels:
            raise ValueError(f"{num_levels} feature levels but {len(self.aspect_ratios)} aspect-ratio lists")
        boxes = tuple(boxes_per_location(r) for r in self.aspect_ratios)
        self.head = SSDHead(in_channels, boxes, num_classes, hidden=head_channels or in_channels[0])

    def forward(self, images: torch.Tensor) -> SSDHeadOutput:
        features = self.neck(self.backbone(images))
        x = features[-1]
        for layer in self.extras:
            x = layer(x)
            features.append(x)
        return self._output(images, features)
