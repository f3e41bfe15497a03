"""MCAT (Chen et al., ICCV 2021): the genomic groups' tokens attend to the patches (co-attention),
each side goes through its own transformer and gated attention pooling, the two are fused.

Layers ("small", re-implemented from the paper and facts of the public code, none copied): patches
Linear(W -> 256) + ReLU + dropout; one SNN per gene group (two blocks to 256) gives one genomic
token per group; single-head co-attention with the genomic tokens as queries over the patches;
two separate 2-layer post-norm transformers (d 256, 8 heads, feed-forward 512, dropout 0.25, ReLU)
-- on the co-attended path tokens and on the genomic tokens; gated attention pooling and rho
(Linear 256 -> 256) on each; concatenation -> 256 -> 256 (ReLU); Linear to the bins. Its
parameters: 256 (W + sum of the group sizes) + 66,048 K + 2,965,254 for K groups -- 4,492,038 for
BLCA's six groups (94, 334, 521, 468, 1,496, 479 features) and 1,024-d patches, the original's.

``mcat`` builds the six functional groups of MCAT (tumour suppressors, oncogenes, protein kinases,
differentiation markers, transcription factors, cytokines/growth factors) from a signatures table
(``trained_baselines.mcat.signatures``): a group's features are its genes' columns in the table
modalities (a column's gene: its name without an ``_mut``, ``_cnv`` or ``_rnaseq`` suffix).
``mcat-single`` feeds every table feature as one genomic token -- MM-Lego's port, which the paper
used.

Beyond the original: batched (padded bags, a key padding mask; the original runs one patient at a
time), a patient without a slide gets a zero path embedding (the genomic side predicts), a group
none of whose features a patient has is a zero token. Heatmaps draw the co-attention over the
patches, per gene group and averaged over the groups (``patch_attention``).
"""

from __future__ import annotations

import logging
import re

import pandas as pd
import torch
from torch import nn

from lego.baselines._shared import (
    GatedAttention,
    KroneckerFusion,
    bag_modalities,
    fit_module,
    on_real,
    one_bag_and_tables,
    ordered,
    own_settings,
    snn_blocks,
)
from lego.errors import InputError
from lego.models.model_kinds import ModelKind, register

D = 256
SUFFIX = re.compile(r"_(mut|cnv|rnaseq)$")  # MCAT's column names: <gene>, <gene>_mut, <gene>_cnv, <gene>_rnaseq
log = logging.getLogger(__name__)


def _transformer(dropout: float) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(D, 8, 2 * D, dropout, "relu", batch_first=True)
    return nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)


class MCAT(nn.Module):
    """forward(inputs) -> (fused, logits). ``groups``: per genomic token, the indices of its features
    in the table modalities concatenated in ``tables`` order."""

    def __init__(self, groups: list[list[int]], tables: dict[str, int], slide: str, slide_dim: int, n_outputs: int, *,
                 dropout: float, fusion: str, group_names: list[str] | None = None):
        super().__init__()
        self.tables, self.slide = list(tables), slide
        self.group_names = list(group_names or [f"group{k}" for k in range(len(groups))])
        for k, idx in enumerate(groups):
            self.register_buffer(f"group{k}", torch.tensor(idx, dtype=torch.long), persistent=False)
        bounds = torch.cumsum(torch.tensor([0] + list(tables.values())), 0)
        owner = torch.zeros(int(bounds[-1]), dtype=torch.long)
        for i in range(len(tables)):
            owner[bounds[i]:bounds[i + 1]] = i
        self.register_buffer("owner", owner, persistent=False)  # which table each feature comes from
        self.n_groups = len(groups)
        self.wsi_net = nn.Sequential(nn.Linear(slide_dim, D), nn.ReLU(), nn.Dropout(dropout))
        self.sig_networks = nn.ModuleList(snn_blocks(len(g), D, 2, dropout) for g in groups)
        self.coattn = nn.MultiheadAttention(D, 1, batch_first=True)
        self.path_transformer, self.omic_transformer = _transformer(dropout), _transformer(dropout)
        self.path_pool, self.omic_pool = GatedAttention(D, D, dropout), GatedAttention(D, D, dropout)
        self.path_rho = nn.Sequential(nn.Linear(D, D), nn.ReLU(), nn.Dropout(dropout))
        self.omic_rho = nn.Sequential(nn.Linear(D, D), nn.ReLU(), nn.Dropout(dropout))
        self.fusion = fusion
        self.fuse = (nn.Sequential(nn.Linear(2 * D, D), nn.ReLU(), nn.Linear(D, D), nn.ReLU()) if fusion == "concat"
                     else KroneckerFusion(D, D, dropout=dropout))
        self.classifier = nn.Linear(D, n_outputs)

    def _genomic_tokens(self, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        omics = torch.cat([inputs[m][0][:, 0] for m in self.tables], dim=1)
        present = torch.stack([inputs[m][2] for m in self.tables], dim=1)  # (B, n_tables)
        tokens, has = [], []
        for k, net in enumerate(self.sig_networks):
            idx = getattr(self, f"group{k}")
            has.append(present[:, self.owner[idx]].any(dim=1))
            tokens.append(net(omics[:, idx]) * has[-1][:, None])
        return torch.stack(tokens, dim=1), torch.stack(has, dim=1)

    def coattention(self, inputs: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The genomic tokens, the co-attended path tokens and the co-attention (B, groups, patches)."""
        genomic, _ = self._genomic_tokens(inputs)
        x, mask, _ = inputs[self.slide]
        patches = on_real(self.wsi_net, x, mask)
        path, attn = self.coattn(genomic, patches, patches, key_padding_mask=~mask)
        return genomic, path, attn

    def patch_attention(self, inputs: dict, modality: str) -> dict[str, torch.Tensor]:
        """Heatmaps: the co-attention over each patient's patches, (B, T) per genomic token
        (``attention_<group>``) and averaged over the tokens (``attention``: each row sums to 1)."""
        if modality != self.slide:
            raise ValueError(f"MCAT co-attends {self.slide!r}, not {modality!r}")
        attn = self.coattention(inputs)[2]
        per_group = {f"attention_{name}": attn[:, k] for k, name in enumerate(self.group_names)}
        return {"attention": attn.mean(dim=1), **per_group}

    def forward(self, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        genomic, path, _ = self.coattention(inputs)
        all_tokens = torch.ones(genomic.shape[:2], dtype=torch.bool, device=genomic.device)
        h_path = self.path_rho(self.path_pool(self.path_transformer(path), all_tokens))
        h_omic = self.omic_rho(self.omic_pool(self.omic_transformer(genomic), all_tokens))
        h_path = h_path * inputs[self.slide][2][:, None]  # a patient without a slide: the genomic side alone
        fused = self.fuse(torch.cat([h_path, h_omic], 1)) if self.fusion == "concat" else self.fuse(h_path, h_omic)
        return fused, self.classifier(fused)


SETTINGS = {
    "dropout": {"type": "number", "minimum": 0, "exclusiveMaximum": 1, "default": 0.25},
    "fusion": {"type": "string", "enum": ["concat", "bilinear"], "default": "concat",
               "description": "How the pooled path and genomic embeddings are fused (the published MCAT: concat)."},
}
GROUPED_SETTINGS = {**SETTINGS, "signatures": {
    "type": ["string", "null"], "default": None,
    "description": "Gene groups: a table with one column per group listing its genes (MCAT's six functional "
                   "groups, e.g. ../shared/data/tcga/signatures/mcat_signatures.csv)."}}


def table_features(inputs, tables: list[str]) -> list[str]:
    """The table modalities' fitted feature names, concatenated in ``tables`` order."""
    from lego.tabular.transforms import TabularTransform

    return [f for m in tables for f in TabularTransform.from_dict(inputs.mods[m].state["transform"]).feature_names]


def gene_of(feature: str) -> str:
    """A feature's gene: its column without MCAT's suffix (and a category's ``=value``)."""
    return SUFFIX.sub("", feature.split("=", 1)[0])


def signature_groups(path: str, features: list[str], where: str) -> tuple[list[str], list[list[int]]]:
    """Each group's name and the indices of its genes' features (groups none of whose genes the
    cohort has are left out, with a warning)."""
    try:
        table = pd.read_csv(path, dtype=str)
    except (OSError, ValueError) as exc:
        raise InputError(f"{where}: cannot read the gene signatures {path} ({exc}); give a table with one column "
                         "of gene names per group") from None
    genes = [gene_of(f) for f in features]
    names, groups = [], []
    for name in table.columns:
        members = set(table[name].dropna().str.strip())
        idx = [i for i, g in enumerate(genes) if g in members]
        if idx:
            names.append(str(name))
            groups.append(idx)
        else:
            log.warning("%s: no feature of gene group %r in the tables; left out", where, name)
    if not groups:
        raise InputError(f"{where}: none of the groups in {path} names a gene of the tables' features "
                         f"(e.g. {features[:3]}); check the signatures file and the column names")
    return names, groups


def build(config: dict) -> MCAT:
    return MCAT(config["groups"], dict(config["tables"]), config["slide"], config["slide_dim"], config["n_outputs"],
                dropout=config["dropout"], fusion=config["fusion"], group_names=config.get("group_names"))


def _fit(grouped: bool):
    def fit(inputs, spec: dict, device, where: str):
        settings = GROUPED_SETTINGS if grouped else SETTINGS
        own = own_settings(spec, settings)
        (slide,) = bag_modalities(inputs)
        tables = {m: t.dim for m, t in inputs.mods.items() if m != slide}
        features = table_features(inputs, list(tables))
        if grouped:
            if not own["signatures"]:
                raise InputError(f"{where}: mcat needs trained_baselines.mcat.signatures (a gene-group table)")
            names, groups = signature_groups(own["signatures"], features, where)
        else:
            names, groups = ["all"], [list(range(len(features)))]
        model = MCAT(groups, tables, slide, inputs.mods[slide].dim, inputs.targets.n_outputs, dropout=own["dropout"],
                     fusion=own["fusion"], group_names=names)
        history = fit_module(model, inputs, spec, device, where)
        config = {"groups": groups, "group_names": names, "tables": ordered(tables), "slide": slide,
                  "slide_dim": inputs.mods[slide].dim, "n_outputs": inputs.targets.n_outputs, "dropout": own["dropout"],
                  "fusion": own["fusion"]}
        return model, config, history

    return fit


NEEDS = one_bag_and_tables("co-attends one slide modality with the tables")
MCAT_GROUPS = register(ModelKind("mcat", "baseline", "mcat", build, fit=_fit(True), gpu=True, default=False, heatmaps=True,
                                 needs=NEEDS,
                                 settings=GROUPED_SETTINGS, files=("signatures",),
                                 description="MCAT with six functional gene groups as genomic tokens"))
MCAT_SINGLE = register(ModelKind("mcat-single", "baseline", "mcat", fit=_fit(False), gpu=True, default=False, heatmaps=True,
                                 needs=NEEDS, settings=SETTINGS,
                                 description="MCAT with every table feature as one genomic token (MM-Lego's port)"))
