"""Perceiver early fusion (``perceiver``): HEALNet with one modality -- every input concatenated
into one token -- as the MM-Lego paper's "Perceiver (early fusion)" baseline and HEALNet's
``healnet_early``.

A table contributes its features; a patch bag its first ``patches`` patches flattened (the original
needs a fixed patch count: it zero-pads every slide to one). So its size grows with the patches:
354,845 + 68 C parameters at HEALNet's BLCA configuration for C input channels (702,461 for
BLCA's 3,064 omics features and one 2,048-d patch, the original's). A missing modality enters as
zeros (the training mean of a standardised table). Settings: HEALNet's, and ``patches``.
"""

from __future__ import annotations

import torch
from torch import nn

from lego.baselines._shared import bag_modalities, dims_of, fit_module, ordered, own_settings
from lego.baselines.healnet import ARCHITECTURE, HEALNet
from lego.baselines.healnet import SETTINGS as HEALNET_SETTINGS
from lego.models.model_kinds import ModelKind, register

SETTINGS = {**HEALNET_SETTINGS, "patches": {"type": "integer", "minimum": 1, "maximum": 100000, "default": 16,
                                            "description": "Patches of each slide bag flattened into the token."}}


class EarlyFusion(nn.Module):
    """forward(inputs) -> (pooled latents, logits): HEALNet over one token of every input."""

    def __init__(self, dims: dict[str, int], slides: list[str], n_outputs: int, *, patches: int, **architecture):
        super().__init__()
        self.order, self.slides, self.patches = list(dims), set(slides), patches
        width = sum(d * patches if m in self.slides else d for m, d in dims.items())
        self.net = HEALNet({"all": width}, n_outputs, **architecture)

    def _part(self, m: str, inputs: dict) -> torch.Tensor:
        x, mask, present = inputs[m]
        if m not in self.slides:
            return x[:, 0] * present[:, None]
        bag = (x * mask[..., None])[:, : self.patches]
        bag = nn.functional.pad(bag, (0, 0, 0, self.patches - bag.shape[1]))
        return bag.flatten(1) * present[:, None]

    def forward(self, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        token = torch.cat([self._part(m, inputs) for m in self.order], dim=1)[:, None, :]
        ones = torch.ones(token.shape[:2], dtype=torch.bool, device=token.device)
        return self.net({"all": (token, ones, ones[:, 0])})


def build(config: dict) -> EarlyFusion:
    return EarlyFusion(dict(config["dims"]), config["slides"], config["n_outputs"], patches=config["patches"],
                       **config["architecture"])


def fit(inputs, spec: dict, device, where: str):
    own, dims, slides = own_settings(spec, SETTINGS), dims_of(inputs), bag_modalities(inputs)
    arch, patches = {k: own[k] for k in ARCHITECTURE}, own["patches"]
    model = EarlyFusion(dims, slides, inputs.targets.n_outputs, patches=patches, **arch)
    history = fit_module(model, inputs, spec, device, where, l1=own["l1"])
    config = {"dims": ordered(dims), "slides": slides, "patches": patches, "n_outputs": inputs.targets.n_outputs,
              "architecture": arch}
    return model, config, history


PERCEIVER = register(ModelKind("perceiver", "baseline", "perceiver", build, fit=fit, gpu=True, default=False, settings=SETTINGS,
                               description="Perceiver early fusion: HEALNet over one token of every input"))
