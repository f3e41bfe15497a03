"""CLAM's ``resnet50_trunc``: ResNet-50 cut after layer3, global average pooled (1024-d).

Plain torch (no torchvision needed). Weights are a user-supplied torchvision-format state dict
(``.pth`` loaded with ``weights_only=True``, or ``.safetensors``); keys of layer4 and the classifier
are ignored, so a full torchvision ResNet-50 checkpoint works as is.
"""

from __future__ import annotations

import torch
from torch import nn

from lego.errors import ConfigError
from lego.slides.encoders import Encoder, digest_state_dict, load_state_dict, register_encoder


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet50Trunc(nn.Module):
    """Layer names match torchvision so its checkpoints load directly."""

    def __init__(self):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._layer(64, 3)
        self.layer2 = self._layer(128, 4, stride=2)
        self.layer3 = self._layer(256, 6, stride=2)

    def _layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        down = None
        if stride != 1 or self.inplanes != planes * 4:
            down = nn.Sequential(nn.Conv2d(self.inplanes, planes * 4, 1, stride=stride, bias=False), nn.BatchNorm2d(planes * 4))
        layers = [Bottleneck(self.inplanes, planes, stride, down)]
        self.inplanes = planes * 4
        layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return x.mean(dim=(2, 3))


@register_encoder("resnet50_trunc", "1024-d ResNet-50 to layer3 (CLAM); needs a local torchvision-format checkpoint",
                  dim=1024, input_px=224, weights="a torchvision ResNet-50 state dict (.pth or .safetensors)")
def build(checkpoint: str | None = None) -> Encoder:
    if not checkpoint:
        raise ConfigError(
            "encoder 'resnet50_trunc' needs local weights: set encoders.resnet50_trunc.checkpoint in the config "
            "(or --checkpoint) to a torchvision ResNet-50 state dict (.pth or .safetensors); nothing is downloaded"
        )
    net = ResNet50Trunc()
    state = {k: v for k, v in load_state_dict(checkpoint).items() if not k.startswith(("layer4.", "fc."))}
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if "\n" in str(exc) else str(exc)
        raise ConfigError(f"{checkpoint}: not a torchvision ResNet-50 state dict ({first})") from None
    return Encoder("resnet50_trunc", 1024, 224, net, digest_state_dict(state), channels_last=True, cpu_batch=4)
