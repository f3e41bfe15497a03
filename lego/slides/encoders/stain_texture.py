"""A fast non-learned descriptor: stain concentrations, colour and texture statistics.

Colour deconvolution (Ruifrok & Johnston's H&E-DAB matrix) turns RGB into haematoxylin, eosin and
DAB optical densities; their means, spreads and quantiles plus RGB moments, gradient energy and
tissue fraction give a 24-d vector. It runs at thousands of patches per second on a CPU and is
the quick-run default: good enough for stain-driven signal, not a substitute for a foundation model.

An array encoder (numpy, float32): with no network to run there is nothing for a GPU to do, and an
embedding job that never imports torch starts 2-3 s sooner -- most of a small slide's job.
"""

from __future__ import annotations

import hashlib

import numpy as np

from lego.slides.encoders import Encoder, register_encoder

# Rows: haematoxylin, eosin, DAB optical-density vectors (skimage's rgb_from_hed).
RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=np.float64)
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED).astype(np.float32)
VERSION = "stain_texture/1"
QUANTILES = (0.1, 0.5, 0.9)


def stain_texture(batch: np.ndarray) -> np.ndarray:
    """uint8 (B, 3, S, S) -> float32 (B, 24): per stain mean, standard deviation (n - 1) and
    10/50/90 % quantiles; RGB means and standard deviations; mean absolute x and y gradients of
    the grey image; the fraction of pixels with optical density above 0.3 (tissue)."""
    x = np.clip(np.asarray(batch, np.float32) / np.float32(255.0), np.float32(1 / 255), np.float32(1.0))
    b = x.shape[0]
    od = -np.log(x)  # optical density, (B, 3, H, W)
    hed = np.maximum(np.einsum("bchw,cd->bdhw", od, HED_FROM_RGB), 0).reshape(b, 3, -1)  # (B, 3, HW)
    q = _quantiles(hed)  # (B, 3, 3)
    stain = np.concatenate([hed.mean(2, keepdims=True), hed.std(2, ddof=1, keepdims=True), q], axis=2).reshape(b, 15)
    rgb = x.reshape(b, 3, -1)
    colour = np.concatenate([rgb.mean(2), rgb.std(2, ddof=1)], axis=1)  # (B, 6)
    grey = x.mean(1)
    grad = np.stack([np.abs(np.diff(grey, axis=2)).mean((1, 2)), np.abs(np.diff(grey, axis=1)).mean((1, 2))], axis=1)
    tissue = (od.sum(1) > 0.3).mean((1, 2), dtype=np.float32)[:, None]  # (B, 1)
    return np.concatenate([stain, colour, grad, tissue], axis=1).astype(np.float32)


def _quantiles(x: np.ndarray) -> np.ndarray:
    """:data:`QUANTILES` of the last axis, (..., len(QUANTILES)), computed as the first version
    (torch.quantile) did: rank and interpolation weight in float32, then torch's two-sided lerp.
    ``np.quantile`` weighs in float64 (0.7 where float32 gives 0.6992): up to 1e-3 apart where
    the two neighbours differ much (a two-tone patch), and the digest promises the same features."""
    n = x.shape[-1]
    rank = np.asarray(QUANTILES, np.float32) * np.float32(n - 1)
    lo = rank.astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    w = rank - lo.astype(np.float32)
    ordered = np.partition(x, np.unique(np.concatenate([lo, hi])), axis=-1)
    a, b = ordered[..., lo], ordered[..., hi]
    return np.where(w < 0.5, a + w * (b - a), b - (b - a) * (1 - w)).astype(np.float32)


@register_encoder("stain_texture", "24-d stain (H/E/DAB), colour and texture statistics; no weights, very fast",
                  dim=24, input_px=128, weights="none")
def build(checkpoint: str | None = None) -> Encoder:
    digest = hashlib.sha256(VERSION.encode()).hexdigest()[:16]
    return Encoder("stain_texture", 24, 128, None, digest, normalise=False, arrays=stain_texture)
