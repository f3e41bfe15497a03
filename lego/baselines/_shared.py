"""What the trained baselines share: building blocks, and how a model is trained on a fold's inputs
(a module of the package, not a baseline: not registered)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn

from lego.modality_kinds import modality_kind


def ordered(sizes: dict[str, int]) -> list[list]:
    """A modality -> size mapping as [name, size] pairs: config.json is written with sorted keys,
    and the modalities' order is part of a model (HEALNet and MultiModN read them in turn)."""
    return [[m, d] for m, d in sizes.items()]


def own_settings(spec: dict, settings: Mapping[str, dict]) -> dict:
    """A kind's own settings from its spec, each missing one at its declared default: the spec a
    library caller passes may name none of them."""
    return {k: spec.get(k, s["default"]) for k, s in settings.items()}


def dims_of(inputs) -> dict[str, int]:
    """Each modality of the fold's inputs -> its feature width, in the inputs' order."""
    return {m: t.dim for m, t in inputs.mods.items()}


def one_bag_and_tables(does: str) -> Callable[[dict[str, str]], str | None]:
    """A kind's ``needs``: exactly one bag modality (slides, a series, images) and one table or more; ``does``
    says what the model does with them (the start of the problem's wording)."""
    def needs(families: dict[str, str]) -> str | None:
        bags = [m for m, f in families.items() if f == "bag"]
        if len(bags) != 1 or len(bags) == len(families):
            return f"{does} (needs exactly one bag modality (slides, a series, images) and one table or more)"
        return None

    return needs


def bag_modalities(inputs) -> list[str]:
    """The fold inputs' modalities that are bags of tokens (patches, time steps)."""
    return [m for m, t in inputs.mods.items() if modality_kind(t.kind).bags]


def fit_module(model: nn.Module, inputs, spec: dict, device, where: str, *, l1: float = 0.0,
               l1_params: Iterable[nn.Parameter] | None = None) -> dict:
    """Train ``model`` on the fold's training patients with the pipeline's trainer (its loss, bins,
    batches, early stopping on the validation patients); ``l1``: a penalty on the absolute weights of
    ``l1_params`` (every parameter by default) added to the training loss, never to the validation loss."""
    from lego.train import TrainConfig, train

    params = list(l1_params if l1_params is not None else model.parameters())
    penalty = (lambda: l1 * sum(p.abs().sum() for p in params)) if l1 else None
    return train(model, inputs.mods, inputs.targets, inputs.train_ids, inputs.val_ids, cfg=TrainConfig.from_spec(spec),
                 device=device, where=where, penalty=penalty)


def on_real(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``fn`` (a per-token map) on each patient's real tokens only, the padding left as zeros: the
    same values on real tokens, without computing -- and back-propagating -- through the padding a
    batch of bags of unequal lengths carries (the bulk of the work in a per-patch layer)."""
    if bool(mask.all()):
        return fn(x)
    y = fn(x[mask])
    out = y.new_zeros(*mask.shape, y.shape[-1])
    out[mask] = y
    return out


def snn_blocks(in_dim: int, width: int, blocks: int, dropout: float) -> nn.Sequential:
    """Self-normalising blocks (Klambauer et al. 2017): [Linear, ELU, AlphaDropout] x ``blocks``,
    LeCun-normal weights -- the omics encoder of PORPOISE and MCAT (2 blocks of 256)."""
    layers: list[nn.Module] = []
    for i in range(blocks):
        linear = nn.Linear(in_dim if i == 0 else width, width)
        nn.init.normal_(linear.weight, std=1.0 / math.sqrt(linear.in_features))
        nn.init.zeros_(linear.bias)
        layers += [linear, nn.ELU(), nn.AlphaDropout(dropout)]
    return nn.Sequential(*layers)


class GatedAttention(nn.Module):
    """Gated attention scores of tokens (Ilse et al. 2018): w(tanh(V h) * sigmoid(U h)), dropout on both
    branches; a masked softmax over each patient's real tokens pools them."""

    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.v = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Dropout(dropout))
        self.u = nn.Sequential(nn.Linear(dim, hidden), nn.Sigmoid(), nn.Dropout(dropout))
        self.w = nn.Linear(hidden, 1)

    def weights(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T) attention over each patient's tokens (zeros for a patient with none)."""
        scores = on_real(lambda t: self.w(self.v(t) * self.u(t)), h, mask).squeeze(-1).masked_fill(~mask, float("-inf"))
        return torch.nan_to_num(scores.softmax(dim=1), nan=0.0)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bt,btd->bd", self.weights(h, mask), h)


class GatedABMIL(nn.Module):
    """A patch bag to one vector (PORPOISE's path branch): Linear(W -> hidden) + ReLU + dropout per
    patch, gated attention pooling, then rho: Linear(hidden -> out) + ReLU + dropout."""

    def __init__(self, in_dim: int, *, dropout: float, hidden: int = 512, attn_dim: int = 256, out_dim: int = 256):
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.pool = GatedAttention(hidden, attn_dim, dropout)
        self.rho = nn.Sequential(nn.Linear(hidden, out_dim), nn.ReLU(), nn.Dropout(dropout))

    def attention(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.pool.weights(on_real(self.embed, x, mask), mask)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.rho(self.pool(on_real(self.embed, x, mask), mask))


class KroneckerFusion(nn.Module):
    """Gated bilinear (Kronecker) fusion of two vectors (Chen et al., Pathomic Fusion): each side
    reduced to dim/scale, gated by a linear map of both, a constant 1 appended, the outer product
    flattened ((dim/scale + 1)^2), then two ReLU layers to ``out_dim`` (with ``skip``: the inputs
    concatenated before the last)."""

    def __init__(self, dim1: int, dim2: int, *, dropout: float, scale: int = 8, out_dim: int = 256, skip: bool = False):
        super().__init__()
        r1, r2 = dim1 // scale, dim2 // scale
        self.h1, self.h2 = nn.Sequential(nn.Linear(dim1, r1), nn.ReLU()), nn.Sequential(nn.Linear(dim2, r2), nn.ReLU())
        self.z1, self.z2 = nn.Linear(dim1 + dim2, r1), nn.Linear(dim1 + dim2, r2)
        self.o1 = nn.Sequential(nn.Linear(r1, r1), nn.ReLU(), nn.Dropout(dropout))
        self.o2 = nn.Sequential(nn.Linear(r2, r2), nn.ReLU(), nn.Dropout(dropout))
        self.drop = nn.Dropout(dropout)
        self.e1 = nn.Sequential(nn.Linear((r1 + 1) * (r2 + 1), out_dim), nn.ReLU(), nn.Dropout(dropout))
        self.skip = skip
        self.e2 = nn.Sequential(nn.Linear(out_dim + (dim1 + dim2 if skip else 0), out_dim), nn.ReLU(), nn.Dropout(dropout))

    def forward(self, v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
        both = torch.cat([v1, v2], dim=1)
        o1 = self.o1(torch.sigmoid(self.z1(both)) * self.h1(v1))
        o2 = self.o2(torch.sigmoid(self.z2(both)) * self.h2(v2))
        one = torch.ones(len(v1), 1, dtype=v1.dtype, device=v1.device)
        outer = torch.einsum("bi,bj->bij", torch.cat([o1, one], 1), torch.cat([o2, one], 1)).flatten(1)
        fused = self.e1(self.drop(outer))
        return self.e2(torch.cat([fused, v1, v2], 1) if self.skip else fused)
