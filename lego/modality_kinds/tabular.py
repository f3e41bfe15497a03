"""The ``tabular`` kind: one row of numbers (and categories) per patient -- omics, clinical.

Prepared by ``lego prepare-modality`` (columns chosen, typed, outcome columns refused); in each
fold a :class:`~lego.tabular.transforms.TabularTransform` is fitted on the training patients only
(clipping, imputation, filters, optional selection, standardisation, one-hot categories).
"""

from __future__ import annotations

import pandas as pd
import torch

from lego.data.tensors import ModalityTensors
from lego.errors import InputError
from lego.modality_kinds import ModalityKind, Preparation, register
from lego.tabular.transforms import TabularTransform


def rows_with_data(df: pd.DataFrame) -> pd.DataFrame:
    """A table's patients with at least one value: a row of only missing cells means "no data" (as
    prepare-modality decides), not a patient to score from imputed medians."""
    feats = [c for c in df.columns if c != "patient_id"]
    return df[df[feats].notna().any(axis=1)] if feats else df


def fit_table(table: pd.DataFrame, train_set: set[str], opts: dict) -> ModalityTensors:
    """The TabularTransform (clipping, imputation, filters, selection, categories) of the training rows."""
    fit_rows = table[table["patient_id"].isin(train_set)]
    if fit_rows.empty:
        raise InputError(f"{opts['where']}: modality {opts['name']!r} has zero training patients in this fold")
    options = dict(opts["preprocess"] or {})
    if options.get("clip_quantiles") is not None:
        options["clip_quantiles"] = tuple(options["clip_quantiles"])
    tf = TabularTransform(categorical=list(opts["categorical"] or []), **options)
    targets = opts["targets"]
    target = targets.training_target(fit_rows["patient_id"]) if targets is not None and tf.select_k else None
    try:
        tf.fit(fit_rows, target)
    except InputError as e:
        raise InputError(f"{opts['where']}: {e}") from None
    return apply_table(opts["name"], opts["kind"], table, {"transform": tf.to_dict()}, opts["seed"])


def apply_table(name: str, kind: str, table: pd.DataFrame, state: dict, seed: int) -> ModalityTensors:
    """A saved TabularTransform applied to the table: one (1, D) tensor per patient."""
    tf = TabularTransform.from_dict(state["transform"])
    x = tf.transform(table)
    per = {pid: torch.from_numpy(x[i : i + 1]) for i, pid in enumerate(table["patient_id"])}
    return ModalityTensors(name, kind, per, state, x.shape[1])


TABULAR = register(ModalityKind(
    name="tabular", family="table", table="modality", key="patient_id", usable=rows_with_data, fit=fit_table,
    apply=apply_table, encoder="snn",
    prepare=Preparation("prepare-modality", ("id_column", "include", "exclude", "columns", "categorical")),
))
