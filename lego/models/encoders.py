"""Modality encoders mapping raw inputs (B, T, D) with a padding mask to context tokens.

* ``snn``: self-normalising network for tables (4 x Linear-ELU-AlphaDropout, width 256).
* ``abmil``: gated-attention MIL for patch bags; the softmax runs over each bag's patches with
  padded rows masked out (never over the batch), giving one slide-level token.
* ``gru``: a small recurrent encoder reading a bag's tokens in order (a time series' steps).
* ``none``: a per-token linear projection, keeping every token (the block attends to all patches).
* ``coxnet``: a pre-fitted elastic-net Cox model (fitted on the fold's training patients, its
  penalty chosen on validation; see :mod:`lego.models.fitted`) as a frozen encoder: its
  standardised linear predictor, expanded to ``width`` by a small trainable map. The MM-Lego
  premise is that a block wraps any unimodal encoder, pre-trained or not; this is the strongest
  classical encoder of omics tables on a few hundred patients.
* ``rsf``: a random survival forest fitted the same way (its leaf size chosen on validation),
  its trees stored as tensors: the non-linear classical encoder (interactions, thresholds) that
  wins on some cohorts' clinical and mutation tables.
* ``coxrsf``: both fitted models, their standardised scores mixed with the Cox share chosen on
  the fold's out-of-sample scores (a validation part alone is too small to tell which of the
  two a cohort needs).
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

from lego.settings import default

WIDTH, DROPOUT = default("model.block.encoder_width"), default("model.block.dropout")  # the block's defaults

class SNN(nn.Module):
    def __init__(self, in_dim: int, width: int = WIDTH, depth: int = 4, dropout: float = DROPOUT):
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

    def __init__(self, in_dim: int, hidden: int = 512, attn_dim: int = 256, out_dim: int = WIDTH, dropout: float = DROPOUT):
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


class GRUEncoder(nn.Module):
    """A one-layer GRU over a bag's tokens in their order (a series' time steps), its last real
    step's state as the patient's token. Padding sits after the real steps (``collate``), so packing
    by length makes the output independent of how much padding the batch needed."""

    def __init__(self, in_dim: int, hidden: int = 128, out_dim: int = WIDTH, dropout: float = DROPOUT):
        super().__init__()
        self.gru = nn.GRU(in_dim, hidden, batch_first=True)
        self.out = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, out_dim))
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = mask.sum(1).clamp_min(1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        _, h = self.gru(packed)
        return self.out(h[-1]).unsqueeze(1), mask.any(1, keepdim=True)


def pool_bag(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A bag of tokens (B, T, D) -> its mean over real tokens (B, 1, D); a table row passes unchanged.

    Why: a classical model fitted on a slide modality reads each patient's mean patch feature
    (as the Coxnet and RSF baselines of a slide modality do), so it needs one row per patient."""
    if x.shape[1] == 1:
        return x, mask
    w = mask.to(x.dtype).unsqueeze(-1)
    return (x * w).sum(1, keepdim=True) / w.sum(1, keepdim=True).clamp_min(1.0), mask.any(1, keepdim=True)


class FittedScore(nn.Module):
    """A frozen classical risk model (fitted in the fold; see :mod:`lego.models.fitted`) whose
    standardised score is expanded to ``out_dim`` tokens by a small trainable map.

    ``takes_score``: the input already is the standardised score (B, T, 1). Training uses it to
    feed training patients their cross-fitted (out-of-fold) score: in-sample predictions of a
    fitted model are over-confident, and a block trained on them learns a map that does not fit
    the score's spread on new patients.
    """

    def __init__(self, out_dim: int = 256):
        super().__init__()
        self.takes_score = False
        self.register_buffer("center", torch.zeros(()))
        self.register_buffer("scale", torch.ones(()))
        # out_dim 0: a scorer only (a part of :class:`CoxForest`), with no trainable map.
        self.proj = nn.Sequential(nn.Linear(1, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim)) if out_dim else None
        self.out_dim = out_dim

    def raw_score(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) features -> (B, T) un-standardised risk score."""
        raise NotImplementedError

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) features -> (B, T) standardised risk score."""
        return (self.raw_score(x) - self.center) / self.scale

    def attention(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-patch map for heatmaps: each patch's own standardised score (padding: 0). For the
        elastic-net Cox model of the mean patch the slide's score is the mean of these, so the map
        decomposes the risk exactly; for a forest it is what the model says of each patch alone."""
        return x, torch.where(mask, self.score(x), torch.zeros((), dtype=x.dtype, device=x.device))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.takes_score:
            return self.proj(x[..., :1]), mask
        x, mask = pool_bag(x, mask)
        return self.proj(self.score(x).unsqueeze(-1)), mask


class CoxLinear(FittedScore):
    """An elastic-net Cox model's linear predictor (buffer ``coef``)."""

    def __init__(self, in_dim: int, out_dim: int = 256):
        super().__init__(out_dim)
        self.register_buffer("coef", torch.zeros(in_dim))

    def raw_score(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.coef


class ForestScore(FittedScore):
    """A random survival forest's risk (mean over trees of the leaf's summed cumulative hazard).

    Trees are stored as padded node tables (``left``, ``right``, ``feature``, ``threshold``,
    ``value``; leaves point to themselves), so the forest lives in safetensors like any weight
    and is evaluated by ``steps`` vectorised descents. Thresholds stay float64, as scikit-learn
    compares them, so every sample reaches the very leaf it reaches in scikit-survival.
    """

    TABLES = {"left": torch.long, "right": torch.long, "feature": torch.long, "threshold": torch.float64,
              "value": torch.float32}

    def __init__(self, in_dim: int, out_dim: int = 256):
        super().__init__(out_dim)
        self.in_dim = in_dim
        for name, dtype in self.TABLES.items():
            self.register_buffer(name, torch.zeros(1, 1, dtype=dtype))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def raw_score(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1]).double()
        trees = torch.arange(self.left.shape[0], device=x.device)[None, :]
        node = torch.zeros(flat.shape[0], trees.shape[1], dtype=torch.long, device=x.device)
        for _ in range(int(self.steps)):
            value = flat.gather(1, self.feature[trees, node])
            node = torch.where(value <= self.threshold[trees, node], self.left[trees, node], self.right[trees, node])
        return self.value[trees, node].mean(1).reshape(x.shape[:-1])

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The node tables' sizes depend on the fitted trees: take them from the file.
        for name in self.TABLES:
            key = prefix + name
            if key in state_dict and state_dict[key].dim() == 2:
                self._buffers[name] = torch.zeros(state_dict[key].shape, dtype=self.TABLES[name])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class CoxForest(FittedScore):
    """A weighted mean of an elastic-net Cox model's and a random survival forest's standardised
    scores (buffer ``cox_weight``: the Cox model's share).

    Why: on omics and clinical tables of a few hundred patients neither classical model wins
    everywhere (the forest on thresholds and interactions, the elastic net on many weak linear
    effects), and a validation part of ~10 events cannot tell reliably which one a fold needs.
    The weight is chosen on every out-of-sample prediction the fold has -- the training
    patients' out-of-fold scores and the validation patients' -- about five times the events of
    validation alone (see :func:`lego.models.fitted.fit_coxrsf`); the grid runs from the forest
    alone (0) through the even mix to the Cox model alone (1). Each part is standardised by its
    out-of-fold training scores, so that the weight means the same on new patients.
    """

    def __init__(self, in_dim: int, out_dim: int = 256):
        super().__init__(out_dim)
        self.cox = CoxLinear(in_dim, out_dim=0)
        self.forest = ForestScore(in_dim, out_dim=0)
        self.register_buffer("cox_weight", torch.tensor(0.5))

    def raw_score(self, x: torch.Tensor) -> torch.Tensor:
        w = self.cox_weight.to(x.dtype)
        return w * self.cox.score(x) + (1 - w) * self.forest.score(x).to(x.dtype)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Models saved before the weight was fitted averaged the two parts evenly.
        state_dict.setdefault(prefix + "cox_weight", torch.tensor(0.5))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


ENCODERS = ("snn", "abmil", "gru", "none", "linear", "coxnet", "rsf", "coxrsf")


def build_encoder(name: str, in_dim: int, width: int = WIDTH, dropout: float = DROPOUT) -> nn.Module:
    if name == "snn":
        return SNN(in_dim, width=width, dropout=dropout)
    if name == "abmil":
        return ABMIL(in_dim, out_dim=width, dropout=dropout)
    if name == "gru":
        return GRUEncoder(in_dim, out_dim=width, dropout=dropout)
    if name == "none":
        return TokenProjection(in_dim, out_dim=width)
    if name == "linear":
        return LinearEncoder(in_dim, out_dim=width, dropout=dropout)
    if name == "coxnet":
        return CoxLinear(in_dim, out_dim=width)
    if name == "rsf":
        return ForestScore(in_dim, out_dim=width)
    if name == "coxrsf":
        return CoxForest(in_dim, out_dim=width)
    raise ValueError(f"unknown modality encoder {name!r}; use one of {', '.join(ENCODERS)}")
