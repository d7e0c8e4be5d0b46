"""ImageNet backbones from torchvision for the YOLOv8-style detector: ResNet-18/34/50 and MobileNetV3-Large.

Every wrapper has the layout of `CSPDarknet`: five stages `stem, stage2, stage3, stage4, stage5` as its
children (the units that `model.freeze=N` counts) and a forward that returns the stride 8/16/32 feature maps
(P3, P4, P5), whose channels are in `out_channels` (the PAN neck projects them to its own width).

Input: images in [0, 1], as the detector receives them. torchvision's ImageNet weights expect
(x - mean) / std with ImageNet's mean and std, so the wrapper normalises its input first, always (also
without pretrained weights, so that a model is the same function whichever way it was initialised).

`pretrained=True` loads torchvision's ImageNet weights (`<Model>_Weights.DEFAULT`, through torchvision's
weights API: downloaded once into the torch hub cache, `torch.hub.get_dir()/checkpoints/<file name of the URL>`, which
is read before any download); False starts from random weights. `weights=<path>` loads a local copy of such a file
instead (no network; `pretrained` is then irrelevant). Without network access a download fails with a message that
names the file and both places it can go.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from urllib.error import URLError
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision.models import WeightsEnum, get_model, get_model_weights

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESNET_DEPTHS = (18, 34, 50)


def imagenet_weights(name: str, pretrained: bool) -> WeightsEnum | None:
    """The torchvision weights that `pretrained` selects for model `name` (its DEFAULT ImageNet weights), or None."""
    return get_model_weights(name).DEFAULT if pretrained else None


def torchvision_model(name: str, weights: WeightsEnum | None, weights_file: str | Path | None = None,
                      option: str = "model.backbone.weights") -> nn.Module:
    """torchvision's model `name` with `weights` (None: random), or with the state dict of `weights_file` (a local
    copy of a torchvision weights file: no download). A failed download raises a RuntimeError that says where to put
    the file by hand (the torch hub cache) or which `option` takes its path."""
    if weights_file is not None:
        path = Path(weights_file).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{option}={weights_file}: no such file")
        model = get_model(name, weights=None)
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except (RuntimeError, pickle.UnpicklingError) as error:
            raise ValueError(f"{option}={weights_file} is not a state dict of torchvision's {name}: {error}") from None
        return model
    try:
        return get_model(name, weights=weights)
    except (URLError, ConnectionError, TimeoutError) as error:
        file_name = os.path.basename(urlparse(weights.url).path)
        cache = Path(torch.hub.get_dir()) / "checkpoints" / file_name
        raise RuntimeError(
            f"could not download torchvision's {weights} weights for {name} from {weights.url} ({error}). Without "
            f"network access, download that file elsewhere and either place it at {cache} (torch's hub cache, read "
            f"before any download) or pass its path: {option}=/path/to/{file_name}"
        ) from None


def output_channels(stage: nn.Module) -> int:
    """Channels of a stage's output: the width of its last BatchNorm (every stage here ends with conv + BN)."""
    norms = [m for m in stage.modules() if isinstance(m, nn.BatchNorm2d)]
    if not norms:
        raise ValueError(f"cannot tell the output channels of {type(stage).__name__}: it has no BatchNorm2d")
    return norms[-1].num_features


class ImageNetBackbone(nn.Module):
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

    def __init__(self, depth: int = 18, pretrained: bool = False, weights: str | None = None) -> None:
        if depth not in RESNET_DEPTHS:
            raise ValueError(f"ResNet depth must be one of {RESNET_DEPTHS}, got {depth}")
        name = f"resnet{depth}"
        net = torchvision_model(name, imagenet_weights(name, pretrained), weights)
        stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        super().__init__(stem, net.layer1, net.layer2, net.layer3, net.layer4)


class MobileNetV3(ImageNetBackbone):
    """torchvision's MobileNetV3-Large `features` without the classifier, cut at its stride changes: stem =
    features[0:2] (stride 2), stage2 = [2:4] (4), stage3 = [4:7] (8), stage4 = [7:13] (16), stage5 = [13:17]
    (32, ending with the 1x1 conv to 960 channels, as torchvision's detection models use it).
    Channels (40, 112, 960)."""

    def __init__(self, pretrained: bool = False, weights: str | None = None) -> None:
        name = "mobilenet_v3_large"
        features = torchvision_model(name, imagenet_weights(name, pretrained), weights).features
        super().__init__(features[0:2], features[2:4], features[4:7], features[7:13], features[13:17])
