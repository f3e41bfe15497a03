"""LegoMerge: combine N >= 2 trained LegoBlocks without any training.

Latent merges (all N-way, with epsilon guards), over the modalities a patient actually has:
* ``sum`` and ``mean`` of the complex latents;
* ``harmonic``: magnitude = weighted harmonic mean of the magnitudes, phase = weighted
  **circular** mean of the phases (the angle of the weighted sum of unit phasors).

``readout`` (beyond the paper): each block's latent is read by *that block's own* head and the
logits are averaged (weighted, over the blocks a patient has), each block's logits first centred
at the ``offsets`` given (the tuned merge: its mean over the fold's out-of-sample patients). On
TCGA-UCEC the latent merges followed the blocks' latent geometry rather than their predictive
value (the merged risk ignored the best block, Spearman 0.23), while reading each latent with a
head kept every block's signal. Why each block's own head: where heads are trained apart the
merged head is none of them (heart valve cohort: 0.600 test C read by the merged head, 0.676 by
the blocks' own heads, centred; docs/lego_method.md section 8); under tied heads the two are the
same. Why centred: a block's logit level is arbitrary (a tied random head) or calibrated to the
patients who have its modality, so averaging over the blocks a patient has would shift a patient
by which modalities they have; where every patient has every block the centring changes nothing.

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
                  weights: torch.Tensor, block_heads: list[nn.Module] | None = None,
                  offsets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(merged latent, logits) of K blocks' latents (K, B, R, D) over the blocks each patient has.

    ``readout``: latent k read by ``block_heads[k]`` (the merged ``head`` where none are given),
    centred at ``offsets[k]`` (K, outputs), and the logits averaged with the weights; the weighted
    mean of the offsets is added back, one constant for every patient, so that the level stays a
    block's (the latent returned is the latents' weighted mean). Otherwise the latents merged by
    ``method`` and read once by ``head``. LegoMerge and LegoFuse's ``merge`` mode predict through
    this one function."""
    weights = weights.to(latents.device)
    if method == "readout":
        w = present.float() * weights[:, None]  # (K, B)
        readers = block_heads if block_heads is not None else [head] * len(latents)
        logits = torch.stack([read(z) for read, z in zip(readers, latents)])  # (K, B, outputs)
        level = torch.zeros((), device=latents.device)
        if offsets is not None:
            offsets = offsets.to(latents.device)
            level = (weights[:, None] * offsets).sum(0) / weights.sum()
            logits = logits - offsets[:, None, :]
        mean = (logits * w[..., None]).sum(0) / w.sum(0).clamp_min(EPS)[:, None]
        return merge_latents(latents, present, "mean", weights), mean + level
    merged = merge_latents(latents, present, method, weights)
    return merged, head(merged)


def offsets_tensor(offsets: dict[str, list[float]] | None, modalities: list[str], n_outputs: int) -> torch.Tensor | None:
    """Per-block logit offsets (a config's ``offsets``, modality -> one value per output) in block
    order; a wrong length is refused (broadcasting one value over every output would shift the
    bins unequally, silently)."""
    if not offsets:
        return None
    missing = [m for m in modalities if m not in offsets]
    if missing:
        raise ValueError(f"merge offsets lack block(s) {missing}")
    wrong = {m: len(offsets[m]) for m in modalities if len(offsets[m]) != n_outputs}
    if wrong:
        raise ValueError(f"merge offsets need one value per output ({n_outputs}); got {wrong}")
    return torch.tensor([offsets[m] for m in modalities], dtype=torch.float32)


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
    magnitudes (RMS 1.6 vs 1.2 on TCGA-UCEC) count by their weight, not by their scale;
    ``offsets`` centre each block's logits in the ``readout`` form (see the module's docstring).
    Without any of them, this is the paper's training-free merge.
    """

    def __init__(self, blocks: dict[str, LegoBlock], method: str = default("model.merge.method"),
                 head_method: str = default("model.merge.head"),
                 weights: dict[str, float] | None = None, scales: dict[str, float] | None = None,
                 offsets: dict[str, list[float]] | None = None):
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
        self.offsets = offsets_tensor(offsets, self.modalities, next(iter(blocks.values())).cfg.n_outputs)

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
        return merged_output(torch.stack(latents), present_t, self.head, self.method, torch.tensor(self.weights),
                             [self.blocks[m].head for m in self.modalities], self.offsets)
