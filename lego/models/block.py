"""LegoBlock: a modality encoder plus a latent state refined in the frequency domain.

Per layer: the real-valued latent state (rows x dim) is L2-normalised along the row axis and
Fourier-transformed along it; the real part of the spectrum is updated by cross-attention to the
modality's context tokens and a gated feed-forward, the imaginary part is carried unchanged, and
the inverse transform gives the state for the next layer. The last layer's spectrum (complex) is
the block's latent, which LegoMerge combines across blocks; the head reads its real part.

Differences from the official code, on purpose: every computed path is used; ``share_weights``
really shares one layer across depth; parameters are never written inside ``forward`` (an initial
state is an argument, which is how LegoFuse "stack" passes latents); the context is transformed
along the feature axis per token (not along the token axis), so masking padded patches is exact
and a sample's output is independent of batch composition and padding.
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lego.models.encoders import build_encoder
from lego.settings import default, require, section


def _block_default(key: str):
    return default(f"model.block.{key}")


@dataclass
class BlockConfig:
    """A LegoBlock's architecture: the data's widths, the encoder, and config ``model.block``
    (its defaults and ranges)."""

    in_dim: int
    n_outputs: int
    encoder: str = "snn"  # a name in lego.models.encoders.ENCODERS (the modality kind's default in a run)
    encoder_width: int = _block_default("encoder_width")
    latent_rows: int = _block_default("latent_rows")
    latent_dim: int = _block_default("latent_dim")
    depth: int = _block_default("depth")
    heads: int = _block_default("heads")
    head_dim: int = _block_default("head_dim")
    dropout: float = _block_default("dropout")
    share_weights: bool = _block_default("share_weights")
    tied_head: bool | str = _block_default("tied_head")  # true, false or "auto" (see frozen_head)
    head_start: str = _block_default("head_start")  # a trained head's bias: "baseline" or "random" (the paper)
    init_seed: int = 0  # latent, layers and head start identical across modalities (mergeable)

    # The data's widths are not settings: bounds far above any real cohort, so a damaged or hostile
    # config fails here, not in a 100 GB allocation.
    DATA_LIMITS = {"in_dim": 1 << 24, "n_outputs": 1 << 12}

    @property
    def frozen_head(self) -> bool:
        """Whether the head keeps its initial (shared) weights: ``tied_head`` true, or "auto" with a
        fitted encoder. Why auto: a fitted score ranks patients whatever the head; a neural encoder
        under a frozen random head learnt to rank them worse than chance (docs/lego_method.md)."""
        if self.tied_head == "auto":
            from lego.models.model_kinds import FITTED

            return self.encoder in FITTED
        return bool(self.tied_head)

    def __post_init__(self) -> None:
        if self.tied_head not in (True, False, "auto"):
            raise ValueError(f"block setting tied_head={self.tied_head!r} is not true, false or auto")
        for key, limit in self.DATA_LIMITS.items():
            value = getattr(self, key)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or not 1 <= value <= limit:
                raise ValueError(f"block setting {key}={value!r} is not an integer between 1 and {limit}")
        shape = {k: getattr(self, k) for k in section("model.block")}
        require("model.block", {k: int(v) if isinstance(v, numbers.Integral) and not isinstance(v, bool) else v
                                for k, v in shape.items()}, "block setting")

    def to_dict(self) -> dict:
        return asdict(self)


class CrossAttention(nn.Module):
    """Multi-head attention of latent rows (queries) to context tokens, with a key padding mask."""

    def __init__(self, dim: int, ctx_dim: int, heads: int, head_dim: int):
        super().__init__()
        inner = heads * head_dim
        self.heads, self.head_dim = heads, head_dim
        self.norm_q, self.norm_ctx = nn.LayerNorm(dim), nn.LayerNorm(ctx_dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(ctx_dim, 2 * inner, bias=False)
        self.out = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        k, v = self.to_kv(self.norm_ctx(ctx)).chunk(2, dim=-1)
        split = lambda t: t.view(b, t.shape[1], self.heads, self.head_dim).transpose(1, 2)  # noqa: E731
        k, v = split(k), split(v)
        if ctx.shape[1] == 1:
            # One context token (a table, a pooled bag): softmax over one key is 1, so every query
            # reads that token's value -- exact, and it skips the attention kernel. A patient
            # whose token is masked (absent modality) reads nothing, as the masked kernel gives.
            out = (v * mask[:, None, :, None]).expand(b, self.heads, n, self.head_dim)
        else:
            q = split(self.to_q(self.norm_q(x)))
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])  # True = attend
            out = torch.nan_to_num(out)  # rows of an absent modality (no token at all)
        return self.out(out.transpose(1, 2).reshape(b, n, -1))


class GatedFeedForward(nn.Module):
    """LayerNorm -> Linear(D, 8D) -> a * SELU(g) -> Linear(4D, D)."""

    def __init__(self, dim: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, 8 * dim)
        self.down = nn.Linear(4 * dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, g = self.up(self.norm(x)).chunk(2, dim=-1)
        return self.down(self.drop(a * F.selu(g)))


def fft(x: torch.Tensor, dim: int) -> torch.Tensor:
    """FFT in float32. Why: under CUDA autocast the activations arrive in bfloat16, for which
    torch.fft has no kernels (training on a GPU failed with "Unsupported dtype BFloat16"), and
    the spectrum's phases want full precision anyway."""
    return torch.fft.fft(x.float(), dim=dim)


class Layer(nn.Module):
    def __init__(self, cfg: BlockConfig, ctx_dim: int):
        super().__init__()
        self.attn = CrossAttention(cfg.latent_dim, ctx_dim, cfg.heads, cfg.head_dim)
        self.ff = GatedFeedForward(cfg.latent_dim, cfg.dropout)

    def forward(self, state: torch.Tensor, ctx: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Real state (B, rows, dim) -> complex spectrum after one update."""
        spec = fft(F.normalize(state.float(), dim=1), dim=1)
        real, imag = spec.real, spec.imag
        real = real + self.attn(real, ctx, mask)
        real = real + self.ff(real)
        return torch.complex(real.float(), imag)


class Head(nn.Module):
    """Mean over latent rows of the real part -> LayerNorm -> Linear."""

    def __init__(self, dim: int, n_outputs: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, n_outputs)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(latent.real.mean(dim=1)))


class LegoBlock(nn.Module):
    def __init__(self, cfg: BlockConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = build_encoder(cfg.encoder, cfg.in_dim, cfg.encoder_width, cfg.dropout)
        ctx_dim = self.encoder.out_dim
        # Everything after the encoder has the same shapes in every block of a run; initialising it
        # from one seed makes the blocks' latent spaces and heads start aligned, which is what lets
        # LegoMerge average them meaningfully (as weight averaging needs a shared initialisation).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.init_seed)
            self.latent = nn.Parameter(torch.randn(cfg.latent_rows, cfg.latent_dim) * 0.02)
            if cfg.share_weights:
                shared = Layer(cfg, ctx_dim)
                self.layers = nn.ModuleList([shared] * cfg.depth)
            else:
                self.layers = nn.ModuleList([Layer(cfg, ctx_dim) for _ in range(cfg.depth)])
            self.head = Head(cfg.latent_dim, cfg.n_outputs)
        # A tied head never trains: every block of a run keeps the same head (see config model.block.tied_head).
        self.head.requires_grad_(not cfg.frozen_head)

    def encode(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Context tokens (B, T', C), transformed per token along features, and their mask."""
        tokens, mask = self.encoder(x, mask)
        return fft(tokens, dim=-1).real, mask

    def initial_state(self, batch: int) -> torch.Tensor:
        return self.latent.unsqueeze(0).expand(batch, -1, -1)

    def layer_step(self, i: int, state: torch.Tensor, ctx: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Apply layer ``i`` to a real state; returns the complex spectrum."""
        return self.layers[i](state, ctx, mask)

    def latent_from(self, x: torch.Tensor, mask: torch.Tensor, state: torch.Tensor | None = None) -> torch.Tensor:
        """Complex latent (B, rows, dim) of this modality, optionally from a given initial state."""
        ctx, cmask = self.encode(x, mask)
        state = self.initial_state(x.shape[0]) if state is None else state
        spec = None
        for i in range(len(self.layers)):
            spec = self.layer_step(i, state, ctx, cmask)
            state = torch.fft.ifft(spec, dim=1).real
        return spec

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        latent = self.latent_from(x, mask)
        return latent, self.head(latent)


class SingleBlock(nn.Module):
    """Adapter: a block driven by the multi-modality input dict the trainer and predictors use."""

    def __init__(self, modality: str, block: LegoBlock):
        super().__init__()
        self.modality, self.block = modality, block

    def forward(self, inputs):
        x, mask, _ = inputs[self.modality]
        return self.block(x, mask)
