"""LegoMerge: combine N >= 2 trained LegoBlocks without any training.

Latent merges (all N-way, with epsilon guards), over the modalities a patient actually has:
* ``sum`` and ``mean`` of the complex latents;
* ``harmonic``: magnitude = weighted harmonic mean of the magnitudes, phase = weighted
  **circular** mean of the phases (the angle of the weighted sum of unit phasors).

``readout`` (beyond the paper): each block's latent is read by the *merged* head and the logits are
averaged (weighted, over the blocks a patient has). On TCGA-UCEC the latent merges followed the
blocks' latent geometry rather than their predictive value (the merged risk ignored the best
block, Spearman 0.23), while reading each latent with the merged head kept every block's signal.

Head merges: ``linear`` (weighted average of each head parameter) and ``slerp``: the weighted
spherical mean on the unit sphere of each flattened parameter (the fixed point of Buss & Fillmore's
iteration), rescaled by the weighted mean norm. For two heads with weights (1-t, t) it equals
SLERP(a, b, t); for N heads it is the natural generalisation (a point on the sphere, not a chord).
"""

from __future__ import annotations

import torch
from torch import nn

from lego.models.block import Head, LegoBlock
from lego.settings import default, setting

EPS = 1e-6


def merge_latents(latents: torch.Tensor, present: torch.Tensor, method: str = default("model.merge.method"),
                  weights: torch.Tensor | None = None) -> torch.Tensor:
    """latents (K, B, R, D) complex, present (K, B) bool -> merged (B, R, D) complex."""
    k = latents.shape[0]
    w = torch.ones(k, device=latents.device) if weights is None else weights.to(latents.device)
    pw = present.float() * w[:, None]  # (K, B)
    pw_ = pw[:, :, None, None]
    total = pw.sum(0)[:, None, None].clamp_min(EPS)
    if method == "sum":
        return (latents * pw_).sum(0)
    if method == "mean":
        return (latents * pw_).sum(0) / total
    if method == "harmonic":
        mag = latents.abs()
        harmonic = total / (pw_ / (mag + EPS)).sum(0).clamp_min(EPS)
        phasor = (pw_ * torch.polar(torch.ones_like(mag), latents.angle())).sum(0)
        phase = torch.where(phasor.abs() > EPS, phasor.angle(), torch.zeros_like(phasor.real))
        return torch.polar(harmonic, phase)
    raise ValueError(f"unknown merge method {method!r}; use sum, mean or harmonic")


def merged_output(latents: torch.Tensor, present: torch.Tensor, head: nn.Module, method: str,
                  weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(merged latent, logits) of K blocks' latents (K, B, R, D) over the blocks each patient has.

    ``readout``: each latent read by the head and the logits averaged with the weights (the latent
    returned is their weighted mean); otherwise the latents merged by ``method`` and read once.
    LegoMerge and LegoFuse's ``merge`` mode predict through this one function."""
    if method == "readout":
        w = present.float() * weights[:, None]  # (K, B)
        logits = torch.stack([head(z) for z in latents])  # (K, B, outputs)
        return merge_latents(latents, present, "mean", weights), (logits * w[..., None]).sum(0) / w.sum(0).clamp_min(EPS)[:, None]
    merged = merge_latents(latents, present, method, weights)
    return merged, head(merged)


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Two-way spherical interpolation of the directions of a and b, norms interpolated linearly."""
    na, nb = a.norm().clamp_min(EPS), b.norm().clamp_min(EPS)
    ua, ub = a / na, b / nb
    omega = torch.arccos((ua * ub).sum().clamp(-1 + 1e-7, 1 - 1e-7))
    if omega.abs() < 1e-4:
        u = (1 - t) * ua + t * ub
    else:
        u = (torch.sin((1 - t) * omega) * ua + torch.sin(t * omega) * ub) / torch.sin(omega)
    return u * ((1 - t) * na + t * nb)


def spherical_mean(vectors: torch.Tensor, weights: torch.Tensor, iters: int = 100, tol: float = 1e-10) -> torch.Tensor:
    """Weighted spherical (Karcher) mean of N vectors (N, P); norms averaged with the same weights."""
    w = weights / weights.sum()
    norms = vectors.norm(dim=1).clamp_min(EPS)
    units = vectors / norms[:, None]
    q = (w[:, None] * units).sum(0)
    q = q / q.norm().clamp_min(EPS)
    for _ in range(iters):
        cos = units @ q
        # Log map of each unit vector at q (atan2 is exact near 0 and pi, unlike arccos).
        tangent = units - cos[:, None] * q
        tnorm = tangent.norm(dim=1)
        theta = torch.atan2(tnorm, cos)
        scale = torch.where(tnorm > 1e-15, theta / tnorm.clamp_min(1e-15), torch.ones_like(tnorm))
        logs = tangent * scale[:, None]
        step = (w[:, None] * logs).sum(0)
        s = step.norm()
        if s < tol:
            break
        q = torch.cos(s) * q + torch.sin(s) * step / s
        q = q / q.norm()
    return q * (w * norms).sum()


def merge_heads(heads: list[Head], method: str = default("model.merge.head"), weights: torch.Tensor | None = None) -> Head:
    """A new head whose parameters merge the given heads' parameters."""
    merged = Head(heads[0].fc.in_features, heads[0].fc.out_features)
    w = torch.ones(len(heads)) if weights is None else weights.float()
    states = [h.state_dict() for h in heads]
    new = {}
    for name, ref in states[0].items():
        stack = torch.stack([s[name].detach().float().reshape(-1) for s in states])
        if method == "linear":
            value = (w[:, None] / w.sum() * stack).sum(0)
        elif method == "slerp":
            value = spherical_mean(stack.double(), w.double()).float()
        else:
            raise ValueError(f"unknown head merge {method!r}; use {' or '.join(setting('model.merge.head').choices)}")
        new[name] = value.reshape(ref.shape)
    merged.load_state_dict(new)
    return merged


class LegoMerge(nn.Module):
    """Blocks in a fixed modality order, a latent merge and a merged head; nothing trained.

    ``weights`` (per block, e.g. from validation) weight both the latent merge and the head merge;
    ``scales`` divide each block's latent first, so blocks whose latents live at different
    magnitudes (RMS 1.6 vs 1.2 on TCGA-UCEC) count by their weight, not by their scale. Without
    either, this is the paper's training-free merge.
    """

    def __init__(self, blocks: dict[str, LegoBlock], method: str = default("model.merge.method"),
                 head_method: str = default("model.merge.head"),
                 weights: dict[str, float] | None = None, scales: dict[str, float] | None = None):
        super().__init__()
        if len(blocks) < 2:
            raise ValueError("LegoMerge needs at least two blocks")
        shapes = {(b.cfg.latent_rows, b.cfg.latent_dim, b.cfg.n_outputs) for b in blocks.values()}
        if len(shapes) != 1:
            raise ValueError(f"blocks must share latent shape and outputs to merge; got {sorted(shapes)}")
        if method not in setting("model.merge.method").choices:
            raise ValueError(f"unknown merge method {method!r}; use {', '.join(setting('model.merge.method').choices)}")
        self.modalities = list(blocks)
        self.blocks = nn.ModuleDict(blocks)
        self.method, self.head_method = method, head_method
        self.weights = [float((weights or {}).get(m, 1.0)) for m in self.modalities]
        self.scales = [float((scales or {}).get(m, 1.0)) for m in self.modalities]
        if min(self.weights) <= 0 or min(self.scales) <= 0:
            raise ValueError(f"merge weights and scales must be positive; got {self.weights} and {self.scales}")
        self.head = merge_heads([b.head for b in blocks.values()], head_method, torch.tensor(self.weights))

    def forward(self, inputs: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        """inputs[m] = (x, mask, present); patients missing a modality use the latents they have."""
        latents, present = [], []
        for m in self.modalities:
            x, mask, pres = inputs[m]
            latents.append(self.blocks[m].latent_from(x, mask) / self.scales[len(latents)])
            present.append(pres)
        present_t = torch.stack(present)
        if not present_t.any(0).all():
            raise ValueError("a patient in the batch has none of the merged modalities")
        return merged_output(torch.stack(latents), present_t, self.head, self.method, torch.tensor(self.weights))
