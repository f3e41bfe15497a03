"""Plain ABMIL: the WSI LegoBlock's gated-attention encoder pooled straight into a linear head.

It is the ``abmil-<wsi>`` baseline (no Lego latent). It lives with the models, not the
evaluation, because its saved files are read back like any model's: heatmaps draw its attention.
"""

from __future__ import annotations

from torch import nn

from lego.models.encoders import ABMIL


class PlainABMIL(nn.Module):
    """Gated-attention MIL pooling and a linear head; forward(inputs) -> (pooled, logits)."""

    def __init__(self, modality: str, in_dim: int, n_outputs: int, width: int = 256, dropout: float = 0.25):
        super().__init__()
        self.modality = modality
        self.encoder = ABMIL(in_dim, out_dim=width, dropout=dropout)
        self.head = nn.Linear(width, n_outputs)

    def forward(self, inputs):
        x, mask, _ = inputs[self.modality]
        pooled = self.encoder(x, mask)[0].squeeze(1)
        return pooled, self.head(pooled)
