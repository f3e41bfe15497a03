"""Modality encoders mapping raw inputs (B, T, D) with a padding mask to context tokens.

* ``snn``: self-normalising network for tables (4 x Linear-ELU-AlphaDropout, width 256).
* ``abmil``: gated-attention MIL for patch bags; the softmax runs over each bag's patches with
  padded rows masked out (never over the batch), giving one slide-level token.
* ``none``: a per-token linear projection, keeping every token (the block attends to all patches).
* ``coxnet``: a pre-fitted elastic-net Cox model (fitted on the fold's training patients, its
  penalty chosen on validation; see :mod:`lego.models.fitted`) as a frozen encoder: its
  standardised linear predictor, expanded to ``width`` by a small trainable map. The MM-Lego
  premise is that a block wraps any unimodal encoder, pre-trained or not; this is the strongest
  classical encoder of omics tables on a few hundred patients.
* ``linear``: input dropout then one linear map, no hidden layer: the low-variance choice for
  sparse binary tables (mutations) and small clinical tables, where a deep SNN on a few hundred
  patients mostly fits noise (the Cox-linear model is the strong classical baseline there).

Every encoder works token by token or pools within a bag only, so a sample's output never depends
on the other samples in the batch or on how much padding the batch needed.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class SNN(nn.Module):
    def __init__(self, in_dim: int, width: int = 256, depth: int = 4, dropout: float = 0.25):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Linear(in_dim if i == 0 else width, width), nn.ELU(), nn.AlphaDropout(dropout)]
        self.net = nn.Sequential(*layers)
        self.out_dim = width
        for m in self.net:
            if isinstance(m, nn.Linear):  # LeCun normal init keeps activations self-normalising
                nn.init.normal_(m.weight, std=1.0 / math.sqrt(m.in_features))
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(x), mask


class ABMIL(nn.Module):
    """Gated attention pooling (Ilse et al. 2018) with a padding mask."""

    def __init__(self, in_dim: int, hidden: int = 512, attn_dim: int = 256, out_dim: int = 256, dropout: float = 0.25):
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.attn_v = nn.Linear(hidden, attn_dim)
        self.attn_u = nn.Linear(hidden, attn_dim)
        self.attn_w = nn.Linear(attn_dim, 1)
        self.out = nn.Sequential(nn.Linear(hidden, out_dim), nn.ReLU())
        self.out_dim = out_dim

    def attention(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-patch embeddings and attention weights (softmax over each bag's real patches)."""
        h = self.embed(x)
        scores = self.attn_w(torch.tanh(self.attn_v(h)) * torch.sigmoid(self.attn_u(h))).squeeze(-1)  # (B, T)
        scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=1)
        return h, torch.nan_to_num(weights, nan=0.0)  # an all-padding row (absent modality) gets zeros

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, weights = self.attention(x, mask)
        pooled = torch.einsum("bt,btd->bd", weights, h)
        return self.out(pooled).unsqueeze(1), mask.any(dim=1, keepdim=True)


class TokenProjection(nn.Module):
    def __init__(self, in_dim: int, out_dim: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU())
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(x), mask


class LinearEncoder(nn.Module):
    def __init__(self, in_dim: int, out_dim: int = 256, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, out_dim))
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(x), mask


class CoxLinear(nn.Module):
    """Frozen linear predictor (buffers ``coef``, ``center``, ``scale``) -> trainable width-d tokens.

    ``takes_score``: the input already is the standardised linear predictor (B, T, 1). Training
    uses it to feed training patients their cross-fitted (out-of-fold) predictor: in-sample
    predictions of a fitted model are over-confident, and a block trained on them learns a map
    that does not fit the predictor's spread on new patients.
    """

    def __init__(self, in_dim: int, out_dim: int = 256):
        super().__init__()
        self.takes_score = False
        self.register_buffer("coef", torch.zeros(in_dim))
        self.register_buffer("center", torch.zeros(()))
        self.register_buffer("scale", torch.ones(()))
        self.proj = nn.Sequential(nn.Linear(1, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lp = x[..., 0] if self.takes_score else (x @ self.coef - self.center) / self.scale
        return self.proj(lp.unsqueeze(-1)), mask


ENCODERS = ("snn", "abmil", "none", "linear", "coxnet")


def build_encoder(name: str, in_dim: int, width: int = 256, dropout: float = 0.25) -> nn.Module:
    if name == "snn":
        return SNN(in_dim, width=width, dropout=dropout)
    if name == "abmil":
        return ABMIL(in_dim, out_dim=width, dropout=dropout)
    if name == "none":
        return TokenProjection(in_dim, out_dim=width)
    if name == "linear":
        return LinearEncoder(in_dim, out_dim=width, dropout=dropout)
    if name == "coxnet":
        return CoxLinear(in_dim, out_dim=width)
    raise ValueError(f"unknown modality encoder {name!r}; use one of {', '.join(ENCODERS)}")
