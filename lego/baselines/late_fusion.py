"""Late fusion trained end to end (PORPOISE-style, Chen et al. 2022).

Each modality is encoded to 256 -- a table by two SNN blocks, a patch bag by gated ABMIL
(Linear 1024 -> 512, gated attention 512 -> 256, rho 512 -> 256) -- and the encodings are fused:
by concatenation (``late-fusion``: N x 256 -> 256 -> 256, ReLU) or by the gated Kronecker
(bilinear) fusion of the slide and the omics (``late-bilinear``: each side to 32, gated, a constant
1 appended, the 33 x 33 outer product -> 256 -> 256), then a linear layer to the bins. L1 on the
omics encoder and the fusion (1e-5), as PORPOISE's "pathomic" regularisation.

With one slide modality of 1,024-d patches and one omics table of d features this is PORPOISE's
PorpoiseMMF exactly: 512 W + 256 d + 461,829 + 197,120 (concatenation) or + 396,224 (bilinear,
no skip) parameters; for BLCA's d = 3,062 with the skip, 2,297,285 (tests/test_trained_baselines.py).
A patient without a modality gets that modality's encoding as zeros (the concatenation then reads
the others; the bilinear outer product keeps the other side's linear terms through the appended 1).
Heatmaps draw each slide modality's ABMIL attention (``patch_attention``).
"""

from __future__ import annotations

import torch
from torch import nn

from lego.baselines._shared import GatedABMIL, KroneckerFusion, bag_modalities, dims_of, fit_module, one_bag_and_tables, ordered, own_settings, snn_blocks
from lego.models.model_kinds import ModelKind, register

WIDTH = 256


class LateFusion(nn.Module):
    """forward(inputs) -> (fused, logits); ``slides``: the modalities that are patch bags."""

    def __init__(self, dims: dict[str, int], slides: list[str], n_outputs: int, *, fusion: str, dropout: float,
                 skip: bool = False):
        super().__init__()
        self.order, self.slides, self.fusion = list(dims), list(slides), fusion
        self.tables = [m for m in self.order if m not in slides]
        if fusion == "concat":
            self.encoders = nn.ModuleDict({m: GatedABMIL(d, dropout=dropout) if m in slides
                                           else snn_blocks(d, WIDTH, 2, dropout) for m, d in dims.items()})
            self.fuse = nn.Sequential(nn.Linear(len(dims) * WIDTH, WIDTH), nn.ReLU(), nn.Linear(WIDTH, WIDTH), nn.ReLU())
        else:  # one slide modality against every table concatenated (PORPOISE's two sides)
            (slide,) = slides
            self.encoders = nn.ModuleDict({slide: GatedABMIL(dims[slide], dropout=dropout),
                                           "omics": snn_blocks(sum(dims[m] for m in self.tables), WIDTH, 2, dropout)})
            self.fuse = KroneckerFusion(WIDTH, WIDTH, dropout=dropout, skip=skip)
        self.head = nn.Linear(WIDTH, n_outputs)

    def _encode(self, m: str, inputs: dict) -> torch.Tensor:
        x, mask, present = inputs[m]
        h = self.encoders[m](x, mask) if m in self.slides else self.encoders[m](x[:, 0])
        return h * present[:, None]  # an absent modality encodes to zeros

    def patch_attention(self, inputs: dict, modality: str) -> dict[str, torch.Tensor]:
        """(B, T) gated-attention weights of ``modality``'s ABMIL over each patient's patches (heatmaps)."""
        x, mask, _ = inputs[modality]
        return {"attention": self.encoders[modality].attention(x, mask)}

    def forward(self, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        if self.fusion == "concat":
            fused = self.fuse(torch.cat([self._encode(m, inputs) for m in self.order], dim=1))
        else:
            omics = torch.cat([inputs[m][0][:, 0] for m in self.tables], dim=1)  # absent tables are zeros
            has_omics = torch.stack([inputs[m][2] for m in self.tables]).any(0)
            fused = self.fuse(self._encode(self.slides[0], inputs), self.encoders["omics"](omics) * has_omics[:, None])
        return fused, self.head(fused)


SETTINGS = {
    "dropout": {"type": "number", "minimum": 0, "exclusiveMaximum": 1, "default": 0.25},
    "l1": {"type": "number", "minimum": 0, "default": 1.0e-05,
           "description": "L1 penalty on the omics encoders and the fusion (PORPOISE's pathomic regularisation)."},
}
BILINEAR_SETTINGS = {**SETTINGS, "skip": {"type": "boolean", "default": False,
                                          "description": "Also feed both encodings to the fusion's last layer."}}


def build(config: dict) -> LateFusion:
    return LateFusion(dict(config["dims"]), config["slides"], config["n_outputs"], fusion=config["fusion"],
                      dropout=config["dropout"], skip=config.get("skip", False))


def _fit(fusion: str, settings: dict):
    def fit(inputs, spec: dict, device, where: str):
        own, dims, slides = own_settings(spec, settings), dims_of(inputs), bag_modalities(inputs)
        model = LateFusion(dims, slides, inputs.targets.n_outputs, fusion=fusion, dropout=own["dropout"],
                           skip=own.get("skip", False))
        regularised = [p for name, p in model.named_parameters() if not any(name.startswith(f"encoders.{s}.") for s in slides)]
        history = fit_module(model, inputs, spec, device, where, l1=own["l1"], l1_params=regularised)
        config = {"dims": ordered(dims), "slides": slides, "n_outputs": inputs.targets.n_outputs, "fusion": fusion,
                  "dropout": own["dropout"], "skip": own.get("skip", False)}
        return model, config, history

    return fit


BILINEAR_NEEDS = one_bag_and_tables("fuses one slide modality with the tables")
LATE_FUSION = register(ModelKind("late-fusion", "baseline", "late-fusion", build, fit=_fit("concat", SETTINGS), gpu=True,
                                 default=False, heatmaps=True,
                                 settings=SETTINGS, description="late fusion by concatenation: SNN per table, ABMIL per "
                                 "slide modality, trained end to end (PORPOISE-style)"))
LATE_BILINEAR = register(ModelKind("late-bilinear", "baseline", "late-fusion", fit=_fit("bilinear", BILINEAR_SETTINGS),
                                   gpu=True, default=False, heatmaps=True, needs=BILINEAR_NEEDS, settings=BILINEAR_SETTINGS,
                                   description="PORPOISE's gated Kronecker fusion of the slide (ABMIL) and the omics (SNN)"))
