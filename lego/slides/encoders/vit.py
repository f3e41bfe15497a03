"""Vision transformers of the pathology foundation models, in plain torch (no timm needed).

Module and parameter names follow timm's ``VisionTransformer`` (``cls_token``, ``reg_token``,
``pos_embed``, ``patch_embed.proj``, ``blocks.<i>.{norm1,attn.qkv,attn.proj,ls1.gamma,norm2,
mlp.fc1,mlp.fc2,ls2.gamma}``, ``norm``), so the published checkpoints load with
``load_state_dict(strict=True)`` unchanged; checkpoints in another naming (Hugging Face
Dinov2) are renamed by a key map at load time, never edited on disk. One :class:`ViTSpec` per
model states its published architecture; ``lego/slides/encoders/foundation.py`` registers them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ViTSpec:
    """A ViT's architecture, in timm's terms."""

    img_size: int = 224
    patch_size: int = 16
    dim: int = 1024
    depth: int = 24
    heads: int = 16
    mlp_hidden: int = 4096  # fc1's output size (twice the gated width for a packed SwiGLU)
    mlp: str = "gelu"  # "gelu" (timm Mlp) or "swiglu" (timm SwiGLUPacked: silu(first half) * second half)
    layer_scale: bool = True  # LayerScale after attention and MLP (timm init_values): ls1.gamma, ls2.gamma
    reg_tokens: int = 0  # register tokens after the class token (timm reg_tokens)
    pos_embed_prefix: bool = True  # pos_embed covers the class (and register) tokens; False: timm no_embed_class
    pool: str = "cls"  # "cls"; "cls+mean": class token concatenated with the mean of the patch tokens; "tokens": all
    eps: float = 1e-6
    pos_grid: int | None = None  # the stored pos_embed's grid when it differs from the input's (DINO-resampled)

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size

    @property
    def out_dim(self) -> int:
        return self.dim * (2 if self.pool == "cls+mean" else 1)


class PatchEmbed(nn.Module):
    def __init__(self, spec: ViTSpec):
        super().__init__()
        self.proj = nn.Conv2d(3, spec.dim, spec.patch_size, stride=spec.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, N, D)


class Attention(nn.Module):
    def __init__(self, spec: ViTSpec):
        super().__init__()
        self.heads = spec.heads
        self.qkv = nn.Linear(spec.dim, 3 * spec.dim)
        self.proj = nn.Linear(spec.dim, spec.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, spec: ViTSpec):
        super().__init__()
        self.gated = spec.mlp == "swiglu"
        self.fc1 = nn.Linear(spec.dim, spec.mlp_hidden)
        self.fc2 = nn.Linear(spec.mlp_hidden // 2 if self.gated else spec.mlp_hidden, spec.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc1(x)
        if self.gated:
            x1, x2 = x.chunk(2, dim=-1)
            return self.fc2(F.silu(x1) * x2)
        return self.fc2(F.gelu(x))


class LayerScale(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), 1e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    def __init__(self, spec: ViTSpec):
        super().__init__()
        self.norm1 = nn.LayerNorm(spec.dim, eps=spec.eps)
        self.attn = Attention(spec)
        self.ls1 = LayerScale(spec.dim) if spec.layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(spec.dim, eps=spec.eps)
        self.mlp = Mlp(spec)
        self.ls2 = LayerScale(spec.dim) if spec.layer_scale else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class VisionTransformer(nn.Module):
    """timm's ViT forward for inference: tokens, blocks, final norm, then the spec's pooling."""

    def __init__(self, spec: ViTSpec):
        super().__init__()
        self.spec = spec
        prefix = 1 + spec.reg_tokens
        self.patch_embed = PatchEmbed(spec)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, spec.dim))
        self.reg_token = nn.Parameter(torch.zeros(1, spec.reg_tokens, spec.dim)) if spec.reg_tokens else None
        stored = (spec.pos_grid or spec.grid) ** 2
        self.pos_embed = nn.Parameter(torch.zeros(1, stored + (prefix if spec.pos_embed_prefix else 0), spec.dim))
        self.blocks = nn.ModuleList(Block(spec) for _ in range(spec.depth))
        self.norm = nn.LayerNorm(spec.dim, eps=spec.eps)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> normalised tokens (B, 1 + registers + patches, D)."""
        x = self.patch_embed(x)
        prefix = [self.cls_token.expand(len(x), -1, -1)]
        if self.reg_token is not None:
            prefix.append(self.reg_token.expand(len(x), -1, -1))
        pos = self.pos_embed if self.spec.pos_grid is None else dino_resampled(self.pos_embed, self.spec)
        if self.spec.pos_embed_prefix:
            x = torch.cat(prefix + [x], dim=1) + pos
        else:
            x = torch.cat(prefix + [x + pos], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.tokens(x)
        if self.spec.pool == "tokens":
            return t
        if self.spec.pool == "cls+mean":
            return torch.cat([t[:, 0], t[:, 1 + self.spec.reg_tokens:].mean(1)], dim=1)
        return t[:, 0]


def dino_resampled(pos_embed: torch.Tensor, spec: ViTSpec) -> torch.Tensor:
    """DINO's ``interpolate_pos_encoding`` (as CONCH v1.5 runs it): the stored patch positions
    resized bicubically by ``scale_factor = (grid + 0.1) / stored_grid``; the class position kept."""
    n, dim = spec.pos_grid, pos_embed.shape[-1]
    patch = pos_embed[:, 1:].reshape(1, n, n, dim).permute(0, 3, 1, 2)
    scale = (spec.grid + 0.1) / n
    patch = F.interpolate(patch.float(), scale_factor=(scale, scale), mode="bicubic").to(pos_embed.dtype)
    return torch.cat([pos_embed[:, :1], patch.permute(0, 2, 3, 1).reshape(1, -1, dim)], dim=1)


class AttentionalPooler(nn.Module):
    """CONCH's attentional pooler (CoCa): learned queries attend over the trunk's tokens."""

    def __init__(self, d_model: int, context_dim: int, n_head: int = 8, n_queries: int = 1):
        super().__init__()
        self.query = nn.Parameter(torch.zeros(n_queries, d_model))
        self.heads = n_head
        self.ln_k = nn.LayerNorm(context_dim)
        self.ln_q = nn.LayerNorm(d_model)
        self.to_q = nn.Linear(d_model, d_model, bias=False)
        self.to_kv = nn.Linear(context_dim, 2 * d_model, bias=False)
        self.to_out = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h = len(x), self.heads
        q = self.to_q(self.ln_q(self.query)).expand(b, -1, -1)
        k, v = self.to_kv(self.ln_k(x)).chunk(2, dim=-1)
        split = lambda t: t.reshape(b, t.shape[1], h, -1).transpose(1, 2)  # noqa: E731
        out = F.scaled_dot_product_attention(split(q), split(k), split(v))  # scale: head_dim ** -0.5
        return self.to_out(out.transpose(1, 2).reshape(b, -1, q.shape[-1]))


class ConchVisionTower(nn.Module):
    """CONCH v1.5's image tower: a ViT-L/16 trunk at 448 px, attentional pooling, a final norm (768-d)."""

    def __init__(self, trunk: ViTSpec):
        super().__init__()
        self.trunk = VisionTransformer(trunk)
        self.attn_pool_contrast = AttentionalPooler(768, trunk.dim, n_head=8, n_queries=1)
        self.ln_contrast = nn.LayerNorm(768)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln_contrast(self.attn_pool_contrast(self.trunk(x))[:, 0])


def hf_dinov2_to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A Hugging Face ``Dinov2Model`` state dict in timm's names (q, k, v concatenated into qkv).

    Every source key is consumed (``embeddings.mask_token``, a training-only token, is dropped);
    one left over is an error, so a checkpoint of another architecture never loads half-way."""
    used = {"embeddings.mask_token"}

    def take(key: str) -> torch.Tensor:
        used.add(key)
        return state[key]

    out = {"cls_token": take("embeddings.cls_token"), "pos_embed": take("embeddings.position_embeddings"),
           "patch_embed.proj.weight": take("embeddings.patch_embeddings.projection.weight"),
           "patch_embed.proj.bias": take("embeddings.patch_embeddings.projection.bias"),
           "norm.weight": take("layernorm.weight"), "norm.bias": take("layernorm.bias")}
    for i in sorted({int(k.split(".")[2]) for k in state if k.startswith("encoder.layer.")}):
        src, dst = f"encoder.layer.{i}.", f"blocks.{i}."
        for part in ("weight", "bias"):
            out[dst + f"attn.qkv.{part}"] = torch.cat([take(src + f"attention.attention.{n}.{part}")
                                                       for n in ("query", "key", "value")])
            out[dst + f"attn.proj.{part}"] = take(src + f"attention.output.dense.{part}")
            for name in ("norm1", "norm2", "mlp.fc1", "mlp.fc2"):
                out[dst + f"{name}.{part}"] = take(src + f"{name}.{part}")
        out[dst + "ls1.gamma"] = take(src + "layer_scale1.lambda1")
        out[dst + "ls2.gamma"] = take(src + "layer_scale2.lambda1")
    left = sorted(set(state) - used)
    if left:
        raise KeyError(f"unexpected key(s) {left[:3]}")
    return out


def hf_resampled(pos_embed: torch.Tensor, grid: int) -> torch.Tensor:
    """Hugging Face Dinov2's position interpolation (bicubic to the input's grid), for a
    checkpoint whose stored grid differs from the 224-px input's."""
    n = int(round((pos_embed.shape[1] - 1) ** 0.5))
    if n == grid:
        return pos_embed
    patch = pos_embed[:, 1:].reshape(1, n, n, -1).permute(0, 3, 1, 2).float()
    patch = F.interpolate(patch, size=(grid, grid), mode="bicubic", align_corners=False).to(pos_embed.dtype)
    return torch.cat([pos_embed[:, :1], patch.permute(0, 2, 3, 1).reshape(1, grid * grid, -1)], dim=1)
