"""A fast non-learned descriptor: stain concentrations, colour and texture statistics.

Colour deconvolution (Ruifrok & Johnston's H&E-DAB matrix) turns RGB into haematoxylin, eosin and
DAB optical densities; their means, spreads and quantiles plus RGB moments, gradient energy and
tissue fraction give a 24-d vector. It runs at thousands of patches per second on a CPU and is
the quick-run default: good enough for stain-driven signal, not a substitute for a foundation model.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch import nn

from lego.slides.encoders import Encoder, register_encoder

# Rows: haematoxylin, eosin, DAB optical-density vectors (skimage's rgb_from_hed).
RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=np.float64)
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED).astype(np.float32)
VERSION = "stain_texture/1"


class StainTexture(nn.Module):
    """(B, 3, S, S) in [0, 1] -> (B, 24)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("hed_from_rgb", torch.from_numpy(HED_FROM_RGB))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Statistics in float32 whatever the caller's autocast: quantiles have no half-precision
        kernels (embedding on a GPU failed), and log optical densities lose digits in fp16."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self._features(x.float())

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        x = x.clamp(1 / 255, 1.0)
        b = x.shape[0]
        od = -torch.log(x)  # optical density, (B, 3, H, W)
        hed = torch.einsum("bchw,cd->bdhw", od, self.hed_from_rgb).clamp_min(0).flatten(2)  # (B, 3, HW)
        q = torch.quantile(hed, torch.tensor([0.1, 0.5, 0.9], device=x.device), dim=2).permute(1, 2, 0)  # (B, 3, 3)
        stain = torch.cat([hed.mean(2, keepdim=True), hed.std(2, keepdim=True), q], dim=2).reshape(b, 15)
        rgb = x.flatten(2)
        colour = torch.cat([rgb.mean(2), rgb.std(2)], dim=1)  # (B, 6)
        grey = x.mean(1)
        gx = grey[:, :, 1:] - grey[:, :, :-1]
        gy = grey[:, 1:, :] - grey[:, :-1, :]
        grad = torch.stack([gx.abs().mean((1, 2)), gy.abs().mean((1, 2))], dim=1)  # (B, 2)
        tissue = (od.sum(1) > 0.3).float().mean((1, 2)).unsqueeze(1)  # (B, 1)
        return torch.cat([stain, colour, grad, tissue], dim=1)


@register_encoder("stain_texture", "24-d stain (H/E/DAB), colour and texture statistics; no weights, very fast",
                  dim=24, input_px=128, weights="none")
def build(checkpoint: str | None = None) -> Encoder:
    digest = hashlib.sha256(VERSION.encode()).hexdigest()[:16]
    return Encoder("stain_texture", 24, 128, StainTexture(), digest, normalise=False)
