"""ImageNet backbones from torchvision for the YOLOv8-style detector: ResNet-18/34/50 and MobileNetV3-Large.

Every wrapper has the layout of `CSPDarknet`: five stages `stem, stage2, stage3, stage4, stage5` as its
children (the units that `model.freeze=N` counts) and a forward that returns the stride 8/16/32 feature maps
(P3, P4, P5), whose channels are in `out_channels` (the PAN neck projects them to its own width).

Input: images in [0, 1], as the detector receives them. torchvision's ImageNet weights expect
(x - mean) / std with ImageNet's mean and std, so the wrapper normalises its input first, always (also
without pretrained weights, so that a model is the same function whichever way it was initialised).

A wrapper is built with random weights. It is a `TorchvisionLayers`: it names the torchvision model and weights it
comes from and maps that model's state-dict keys to its own, and the training side loads those weights into it
(`model.pretrained_backbone=true` or `model.backbone_weights=<file>`, detector.training.finetune).
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import WeightsEnum, get_model, get_model_weights

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESNET_DEPTHS = (18, 34, 50)


class TorchvisionLayers(nn.Module):
    """A module made of the layers of torchvision's model `torchvision_name` (built with random weights):
    `torchvision_weights` are the ImageNet weights it is meant to start from, `torchvision_keys` maps that model's
    state-dict keys to this module's (what `detector.training.finetune.load_torchvision_weights` loads)."""

    torchvision_name: str
    torchvision_weights: WeightsEnum
    torchvision_keys: dict[str, str]

    def comes_from(self, source: nn.Module, name: str, weights: WeightsEnum) -> None:
        """Record that this module holds layers of `source`, torchvision's model `name` meant for `weights`: the
        keys of `source` whose tensors are this module's (the same objects), mapped to their keys here."""
        ours = {id(tensor): key for key, tensor in self.state_dict(keep_vars=True).items()}
        self.torchvision_name, self.torchvision_weights = name, weights
        self.torchvision_keys = {key: ours[id(tensor)] for key, tensor in source.state_dict(keep_vars=True).items()
                                 if id(tensor) in ours}


def output_channels(stage: nn.Module) -> int:
    """Channels of a stage's output: the width of its last BatchNorm (every stage here ends with conv + BN)."""
    norms = [m for m in stage.modules() if isinstance(m, nn.BatchNorm2d)]
    if not norms:
        raise ValueError(f"cannot tell the output channels of {type(stage).__name__}: it has no BatchNorm2d")
    return norms[-1].num_features


class ImageNetBackbone(TorchvisionLayers):
    """ImageNet normalisation, then stem -> stage2 -> ... -> stage5; returns the outputs of stages 3, 4, 5."""

    def __init__(
        self, stem: nn.Module, stage2: nn.Module, stage3: nn.Module, stage4: nn.Module, stage5: nn.Module,
    ) -> None:
        super().__init__()
        self.stem, self.stage2, self.stage3, self.stage4, self.stage5 = stem, stage2, stage3, stage4, stage5
        self.out_channels = tuple(output_channels(s) for s in (stage3, stage4, stage5))
        # constants, not weights: left out of the state dict
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)
        p3 = self.stage3(self.stage2(self.stem(x)))
        p4 = self.stage4(p3)
        p5 = self.stage5(p4)
        return [p3, p4, p5]


class ResNet(ImageNetBackbone):
    """torchvision's ResNet-`depth` (18, 34 or 50) without its classifier: stem = conv1 + BN + ReLU + max-pool
    (stride 4), stage2..stage5 = layer1..layer4 (strides 4, 8, 16, 32). Channels (128, 256, 512) for
    ResNet-18/34, (512, 1024, 2048) for ResNet-50."""

    def __init__(self, depth: int = 18) -> None:
        if depth not in RESNET_DEPTHS:
            raise ValueError(f"ResNet depth must be one of {RESNET_DEPTHS}, got {depth}")
        name = f"resnet{depth}"
        net = get_model(name, weights=None)
        stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        super().__init__(stem, net.layer1, net.layer2, net.layer3, net.layer4)
        self.comes_from(net, name, get_model_weights(name).DEFAULT)


class MobileNetV3(ImageNetBackbone):
    """torchvision's MobileNetV3-Large `features` without the classifier, cut at its stride changes: stem =
    features[0:2] (stride 2), stage2 = [2:4] (4), stage3 = [4:7] (8), stage4 = [7:13] (16), stage5 = [13:17]
    (32, ending with the 1x1 conv to 960 channels, as torchvision's detection models use it).
    Channels (40, 112, 960)."""

    def __init__(self) -> None:
        name = "mobilenet_v3_large"
        net = get_model(name, weights=None)
        features = net.features
        super().__init__(features[0:2], features[2:4], features[4:7], features[7:13], features[13:17])
        self.comes_from(net, name, get_model_weights(name).DEFAULT)
