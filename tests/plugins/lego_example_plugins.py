"""Two extensions written as a lab would write them, outside the package: a modality kind and a
trained multimodal baseline. Nothing in ``lego`` names them; the tests load this module through
``LEGO_PLUGINS`` and follow both from the config to trained models and the summary."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from lego.modality_kinds import ModalityKind
from lego.modality_kinds import register as register_kind
from lego.modality_kinds.tabular import TABULAR, apply_table, fit_table, rows_with_data
from lego.models.model_kinds import ModelKind
from lego.models.model_kinds import register as register_model

# ----------------------------------------------------------------------------- a modality kind


def signed_log(table: pd.DataFrame) -> pd.DataFrame:
    """sign(x) log(1 + |x|) of every numeric column: counts that span orders of magnitude."""
    num = table.select_dtypes("number").columns
    return table.assign(**{c: np.sign(table[c]) * np.log1p(table[c].abs()) for c in num})


SLOG = register_kind(ModalityKind(
    name="slog", family="table", table="modality", key="patient_id", usable=rows_with_data,
    fit=lambda table, train, opts: fit_table(signed_log(table), train, opts),
    apply=lambda name, kind, table, state, seed: apply_table(name, kind, signed_log(table), state, seed),
    encoder="snn", prepare=TABULAR.prepare,
))


# ----------------------------------------------------------------------------- a trained baseline


class MeanFusion(nn.Module):
    """Each modality's tokens averaged (a missing modality: zeros), concatenated, one linear head."""

    def __init__(self, dims: dict[str, int], n_outputs: int):
        super().__init__()
        self.order = list(dims)
        self.head = nn.Linear(sum(dims.values()), n_outputs)

    def forward(self, inputs):
        parts = []
        for m in self.order:
            x, mask, present = inputs[m]
            mean = (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)
            parts.append(mean * present[:, None])
        hidden = torch.cat(parts, dim=1)
        return hidden, self.head(hidden)


def build(config: dict) -> MeanFusion:
    return MeanFusion(config["dims"], config["n_outputs"])


def fit(inputs, spec: dict, device, where: str):
    from lego.train import TrainConfig, train

    dims = {m: t.dim for m, t in inputs.mods.items()}
    model = MeanFusion(dims, inputs.targets.n_outputs)
    history = train(model, inputs.mods, inputs.targets, inputs.train_ids, inputs.val_ids,
                    cfg=TrainConfig.from_spec(spec), device=device, where=where)
    return model, {"dims": dims, "n_outputs": inputs.targets.n_outputs}, history


MEANFUSION = register_model(ModelKind("meanfusion", "baseline", "meanfusion", build, fit=fit, min_modalities=2,
                                      description="mean-pooled modalities, concatenated, linear head"))
