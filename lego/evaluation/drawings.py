"""Attention drawn over the inputs of a modality kind that can draw them (e.g. images), as the slide
heatmaps are drawn over slides (:mod:`lego.evaluation.heatmaps`): a single-modality model with
attention (its block, the plain ABMIL) on its fold's test patients."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from lego.errors import InputError

log = logging.getLogger(__name__)


def run_drawings(model_dir: str, data: str, folds: str, out_dir: str, subset: str = "test") -> pd.DataFrame:
    """Draw the model's attention over ``data`` (its modality's prepared table) for the fold's
    ``subset`` patients into ``out_dir``; returns (and writes) the index (one row per token)."""
    from lego.data.fold_data import fold_ids, load_modality_table
    from lego.evaluation.heatmaps import check_fold
    from lego.io import read_frame, write_tsv
    from lego.modality_kinds import modality_kind
    from lego.models import files as model_files
    from lego.models.model_kinds import model_inputs

    model, config = model_files.load(model_dir)
    inputs = model_inputs(config)
    if len(inputs) != 1:
        raise InputError(f"{model_dir}: drawings are made for single-modality models (a block, abmil); this one reads "
                         f"{sorted(inputs)}")
    (modality, spec), = inputs.items()
    kind = modality_kind(spec["modality_kind"])
    if kind.draw is None:
        raise InputError(f"{model_dir}: a {kind.name} modality has no drawing (slides have `lego heatmaps`)")
    model.eval()
    ids = fold_ids(read_frame(folds, "folds"), config["fold"])
    check_fold(config, set(ids[subset]), subset, folds, model_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    index = kind.draw(model, modality, load_modality_table(kind.name, data), spec["preprocess"], sorted(ids[subset]), out)
    if index.empty:
        log.warning("%s: nothing drawn (no attention in the model's encoder, or no %s patient with this modality)",
                    model_dir, subset)
    write_tsv(index, out / "index.tsv")
    log.info("%s: attention of %d patient(s) drawn in %s", model_dir, index["patient_id"].nunique(), out)
    return index
