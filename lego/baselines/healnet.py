"""HEALNet (Hemker et al., NeurIPS 2024): a shared latent array that attends, layer by layer, to
each modality in turn -- trained end to end on the fold, as a baseline for MM-Lego.

Re-implemented from the paper and the facts of its public code (Apache-2.0), none of it copied:

* a latent array ``randn(latent_rows, latent_dim)``; per layer and per modality a pre-norm
  cross-attention (LayerNorm on latents and on the modality's tokens, q/k/v without bias,
  softmax temperature 0.5, output Linear + LeakyReLU(0.01)) and a pre-norm SELU-gated feed-forward
  (d -> 8d, u * SELU(g), 4d -> d), each with a residual; optionally latent self-attention blocks;
* Fourier position features appended to each token's channels (2 * bands + 1 per axis);
* mean over the latents -> LayerNorm -> Linear to the survival bins (or classes); L1 on every weight.

At the published BLCA configuration (2 layers, 25 latents of 119, one cross head of 16, no
self-attention) with omics as one token of 3,064 channels and 2,048-d patch features it has
**1,053,613** parameters, and **34,177,808** with the class defaults of MM-Lego's copy (512 latents
of 512, one cross head of 64, depth 3, one self-attention block of 8 x 64 per layer) -- both equal
to the original's, counted from its layer definitions (tests/test_trained_baselines.py).

Beyond the original, on purpose: a patient without a modality keeps its latents through that
modality's blocks (the original skips a modality only for a whole batch, and its evaluation of
missing modalities is broken); padded patches are masked out of the attention; token positions
run over each patient's own tokens (so a prediction does not depend on the batch it is in);
early stopping, bins and preprocessing are the pipeline's (see lego.baselines).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from lego.baselines._shared import dims_of, fit_module, on_real, ordered, own_settings
from lego.models.model_kinds import ModelKind, register


def fourier_positions(lengths: torch.Tensor, n_tokens: int, bands: int, max_freq: float) -> torch.Tensor:
    """(B, n_tokens, 2 * bands + 1): sin and cos of each frequency, then the position itself, for
    positions 0..1 over each patient's own ``lengths[b]`` tokens (padding gets positions past 1,
    masked anyway)."""
    steps = torch.arange(n_tokens, dtype=torch.float32, device=lengths.device)
    pos = steps[None, :] / (lengths[:, None].float() - 1).clamp_min(1)
    freqs = torch.linspace(1.0, max_freq / 2, bands, device=lengths.device)
    angles = math.pi * pos[..., None] * freqs
    return torch.cat([angles.sin(), angles.cos(), pos[..., None]], dim=-1)


class Attention(nn.Module):
    """Multi-head attention of the latents to a context; q/k/v without bias, temperature 0.5, the
    output projection followed by LeakyReLU(0.01) (as in the original)."""

    def __init__(self, dim: int, context_dim: int, heads: int, head_dim: int, dropout: float):
        super().__init__()
        inner = heads * head_dim
        self.heads, self.scale = heads, head_dim ** -0.5 / 0.5
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(context_dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.attend(x, self.to_kv(context), mask)

    def attend(self, x: torch.Tensor, kv: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The attention of ``x`` to keys and values already projected (``to_kv``)."""
        b, n, _ = x.shape
        q = self.to_q(x)
        k, v = kv.chunk(2, dim=-1)
        split = lambda t: t.reshape(b, t.shape[1], self.heads, -1).transpose(1, 2)  # noqa: E731
        q, k, v = split(q), split(k), split(v)
        logits = (q @ k.transpose(-1, -2)) * self.scale
        if mask is not None:
            logits = logits.masked_fill(~mask[:, None, None, :], torch.finfo(logits.dtype).min)
        attn = self.dropout(logits.softmax(dim=-1))
        out = (attn @ v).transpose(1, 2).reshape(b, n, -1)
        return F.leaky_relu(self.to_out(out), 0.01)


class CrossBlock(nn.Module):
    """Pre-norm cross-attention of the latents to one modality's tokens (LayerNorm on both)."""

    def __init__(self, dim: int, context_dim: int, heads: int, head_dim: int, dropout: float):
        super().__init__()
        self.norm, self.norm_context = nn.LayerNorm(dim), nn.LayerNorm(context_dim)
        self.attn = Attention(dim, context_dim, heads, head_dim, dropout)

    def forward(self, z: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        kv = on_real(lambda t: self.attn.to_kv(self.norm_context(t)), context, mask)  # padding: masked anyway
        return self.attn.attend(self.norm(z), kv, mask)


class SelfBlock(nn.Module):
    """Pre-norm self-attention of the latents (the normed latents are the context)."""

    def __init__(self, dim: int, heads: int, head_dim: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = Attention(dim, dim, heads, head_dim, dropout)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        normed = self.norm(z)
        return self.attn(normed, normed)


class GatedFeedForward(nn.Module):
    """Pre-norm feed-forward: d -> 8d split in (u, g), u * SELU(g), 4d -> d, dropout."""

    def __init__(self, dim: int, dropout: float, mult: int = 4):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.up, self.down = nn.Linear(dim, 2 * mult * dim), nn.Linear(mult * dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        u, g = self.up(self.norm(z)).chunk(2, dim=-1)
        return self.dropout(self.down(u * F.selu(g)))


class HEALNet(nn.Module):
    """forward({modality: (x (B, T, C), mask (B, T), present (B,))}) -> (pooled latents, logits)."""

    def __init__(self, channels: dict[str, int], n_outputs: int, *, latent_rows: int, latent_dim: int, depth: int,
                 cross_heads: int, cross_dim_head: int, self_per_cross_attn: int, latent_heads: int,
                 latent_dim_head: int, attn_dropout: float, ff_dropout: float, fourier_bands: int, max_freq: float):
        super().__init__()
        self.order, self.bands, self.max_freq = list(channels), fourier_bands, max_freq
        extra = 2 * fourier_bands + 1 if fourier_bands else 0
        self.latents = nn.Parameter(torch.randn(latent_rows, latent_dim))
        self.layers = nn.ModuleList(nn.ModuleDict({
            "cross": nn.ModuleDict({m: CrossBlock(latent_dim, c + extra, cross_heads, cross_dim_head, attn_dropout)
                                    for m, c in channels.items()}),
            "ff": nn.ModuleDict({m: GatedFeedForward(latent_dim, ff_dropout) for m in channels}),
            "self": nn.ModuleList(nn.ModuleList([SelfBlock(latent_dim, latent_heads, latent_dim_head, attn_dropout),
                                                 GatedFeedForward(latent_dim, ff_dropout)])
                                  for _ in range(self_per_cross_attn)),
        }) for _ in range(depth))
        self.head = nn.Sequential(nn.LayerNorm(latent_dim), nn.Linear(latent_dim, n_outputs))

    def _context(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if not self.bands:
            return x
        return torch.cat([x, fourier_positions(mask.sum(1), x.shape[1], self.bands, self.max_freq).to(x.dtype)], -1)

    def forward(self, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        x0 = inputs[self.order[0]][0]
        z = self.latents.expand(x0.shape[0], -1, -1)
        contexts = {m: self._context(inputs[m][0], inputs[m][1]) for m in self.order}
        for layer in self.layers:
            for m in self.order:
                _, mask, present = inputs[m]
                updated = z + layer["cross"][m](z, contexts[m], mask)
                updated = updated + layer["ff"][m](updated)
                z = torch.where(present[:, None, None], updated, z)  # a patient without m keeps its latents
            for attend, feed in layer["self"]:
                z = z + attend(z)
                z = z + feed(z)
        pooled = z.mean(dim=1)
        return pooled, self.head(pooled)


# The published BLCA configuration of HEALNet (config/best_hyperparams.yml of its code; dropouts and
# L1 rounded): the defaults here, and with the inputs above, the original's 1,053,613 parameters.
SETTINGS = {
    "latent_rows": {"type": "integer", "minimum": 1, "maximum": 4096, "default": 25, "description": "Latent array rows."},
    "latent_dim": {"type": "integer", "minimum": 1, "maximum": 4096, "default": 119, "description": "Latent width."},
    "depth": {"type": "integer", "minimum": 1, "maximum": 32, "default": 2, "description": "Fusion layers."},
    "cross_heads": {"type": "integer", "minimum": 1, "maximum": 64, "default": 1},
    "cross_dim_head": {"type": "integer", "minimum": 1, "maximum": 1024, "default": 16},
    "self_per_cross_attn": {"type": "integer", "minimum": 0, "maximum": 8, "default": 0,
                            "description": "Latent self-attention blocks per layer."},
    "latent_heads": {"type": "integer", "minimum": 1, "maximum": 64, "default": 8},
    "latent_dim_head": {"type": "integer", "minimum": 1, "maximum": 1024, "default": 64},
    "attn_dropout": {"type": "number", "minimum": 0, "exclusiveMaximum": 1, "default": 0.083},
    "ff_dropout": {"type": "number", "minimum": 0, "exclusiveMaximum": 1, "default": 0.473},
    "fourier_bands": {"type": "integer", "minimum": 0, "maximum": 64, "default": 2,
                      "description": "Fourier position bands appended to every token (0: none)."},
    "max_freq": {"type": "number", "exclusiveMinimum": 0, "default": 2.0},
    "l1": {"type": "number", "minimum": 0, "default": 1.2e-05, "description": "L1 penalty on every weight."},
}
ARCHITECTURE = tuple(k for k in SETTINGS if k != "l1")


def build(config: dict) -> HEALNet:
    return HEALNet(dict(config["channels"]), config["n_outputs"], **config["architecture"])


def fit(inputs, spec: dict, device, where: str):
    """Train on the fold (the pipeline's early stopping on the validation patients), L1 on every weight."""
    own, dims = own_settings(spec, SETTINGS), dims_of(inputs)
    arch = {k: own[k] for k in ARCHITECTURE}
    model = HEALNet(dims, inputs.targets.n_outputs, **arch)
    history = fit_module(model, inputs, spec, device, where, l1=own["l1"])
    return model, {"channels": ordered(dims), "n_outputs": inputs.targets.n_outputs, "architecture": arch}, history


HEALNET = register(ModelKind("healnet", "baseline", "healnet", build, fit=fit, gpu=True, default=False, settings=SETTINGS,
                             description="HEALNet: a shared latent array attending to each modality in turn"))
