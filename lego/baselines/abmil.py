"""Plain ABMIL baseline (``abmil-<slide modality>``): the slide LegoBlock's gated-attention encoder
pooled straight into a linear head -- no Lego latent.

It trains on the same patients, with the same preprocessing, loss, bins, optimiser settings and
early stopping as the modality's block (its spec is the block's), so the difference between
``abmil-<wsi>`` and ``block-<wsi>`` is the Lego latent alone. Its attention is drawn like the
block's (heatmaps).
"""

from __future__ import annotations

from torch import nn

from lego.models.encoders import ABMIL
from lego.models.model_kinds import ModelKind, register
from lego.settings import default


class PlainABMIL(nn.Module):
    """Gated-attention MIL pooling and a linear head; forward(inputs) -> (pooled, logits)."""

    def __init__(self, modality: str, in_dim: int, n_outputs: int, width: int, dropout: float):
        super().__init__()
        self.modality = modality
        self.encoder = ABMIL(in_dim, out_dim=width, dropout=dropout)
        self.head = nn.Linear(width, n_outputs)

    def forward(self, inputs):
        x, mask, _ = inputs[self.modality]
        pooled = self.encoder(x, mask)[0].squeeze(1)
        return pooled, self.head(pooled)


def build(config: dict) -> PlainABMIL:
    return PlainABMIL(config["modality"], config["in_dim"], config["n_outputs"], config["width"], config["dropout"])


def fit(inputs, spec: dict, device, where: str):
    """Train on the fold's training patients with the block's settings; early stopping on validation."""
    from lego.train import TrainConfig, train

    (modality, mod), = inputs.mods.items()
    shape = {"in_dim": mod.dim, "n_outputs": inputs.targets.n_outputs,
             "width": spec.get("encoder_width", default("model.block.encoder_width")),
             "dropout": spec.get("dropout", default("model.block.dropout"))}
    model = PlainABMIL(modality, **shape)
    tcfg = TrainConfig.from_spec(spec)
    history = train(model, {modality: mod}, inputs.targets, inputs.train_ids, inputs.val_ids, cfg=tcfg, device=device,
                    where=where)
    return model, {**shape, "train": tcfg.to_dict()}, history


ABMIL_BASELINE = register(ModelKind(
    "abmil", "baseline", "abmil", build, scope="modality", fit=fit, bags_only=True, heatmaps=True, gpu=True,
    description="attention-MIL pooling + linear head on one slide modality (the block without the Lego latent)",
))
