"""The per-patient cohort table: outcome plus which modalities each patient really has.

A patient has a tabular modality when its prepared table holds a row for them, and a slide
modality when at least one of their slides produced features (failed slides do not count).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)


def _some_labelled(name: str, has: pd.Series, ids: pd.Series, what: str = "row") -> None:
    """A modality that no labelled patient has is a mismatch of IDs (or of files), not a result."""
    from lego.errors import InputError

    if len(has) and not has.any():
        example = f" (e.g. {ids.iloc[0]!r})" if len(ids) else ""
        raise InputError(f"modality {name!r}: no labelled patient has a {what} among its {ids.nunique()} patient(s)"
                         f"{example}; check that the modality and the labels use the same patient IDs")


def _report_unlabelled(name: str, ids: pd.Series, labelled: set[str]) -> None:
    """Rows of a modality that match no labelled patient are said, with examples: a case or
    spelling difference in some IDs would otherwise drop those patients without a word."""
    stray = sorted(set(ids) - labelled)
    if stray:
        log.warning(
            "modality %s: %d of %d patient(s) match no labelled patient and are left out (e.g. %s); if they should "
            "match, check the IDs' case and spelling", name, len(stray), ids.nunique(), ", ".join(map(repr, stray[:3])))


def build_patients_table(
    labels: pd.DataFrame,
    tabular: dict[str, pd.DataFrame],
    slide_manifests: dict[str, pd.DataFrame],
) -> pd.DataFrame:
    """``labels`` + ``has_<modality>`` booleans + ``n_slides`` (usable slides per WSI modality)."""
    out = labels.copy()
    labelled = set(out["patient_id"])
    for name, table in tabular.items():
        out[f"has_{name}"] = out["patient_id"].isin(set(table["patient_id"]))
        _some_labelled(name, out[f"has_{name}"], table["patient_id"])
        _report_unlabelled(name, table["patient_id"], labelled)
    for name, manifest in slide_manifests.items():
        ok = manifest[manifest["status"] == "ok"]
        counts = ok.groupby("patient_id").size()
        out[f"n_slides_{name}"] = out["patient_id"].map(counts).fillna(0).astype(int)
        out[f"has_{name}"] = out[f"n_slides_{name}"] > 0
        _some_labelled(name, out[f"has_{name}"], ok["patient_id"], "usable slide")
    has = [c for c in out.columns if c.startswith("has_")]
    out["n_modalities"] = out[has].sum(axis=1).astype(int)
    return out


def feature_manifest(slides: pd.DataFrame, feature_files: dict[str, str | Path]) -> pd.DataFrame:
    """One row per slide: patient, feature file and its SHA-256, status, reason, number of patches and encoder.

    Why the digest: the jobs that train on a slide modality read the feature files through this
    table. Carrying each file's content makes the table change whenever a file does, so Snakemake
    reruns every reader even when the table is rewritten in a run stopped right after it (paths
    alone would give identical bytes, and Snakemake's checksum would keep the old models)."""
    from lego.io import sha256_file
    from lego.slides.features import bag_info

    rows = [
        {"slide_id": s.slide_id, "patient_id": s.patient_id, "features": str(feature_files[s.slide_id]),
         "sha256": sha256_file(feature_files[s.slide_id]) if Path(feature_files[s.slide_id]).is_file() else ""}
        | bag_info(feature_files[s.slide_id])
        for s in slides.itertuples()
    ]
    cols = ["slide_id", "patient_id", "features", "sha256", "status", "stage", "reason", "n_patches", "dim", "encoder",
            "encoder_digest"]
    manifest = pd.DataFrame(rows, columns=cols)
    ok = manifest["status"] == "ok"
    if ok.any():  # one bag of another width (another encoder) must not reach training as a numpy error
        common = int(manifest.loc[ok, "dim"].mode().max())
        odd = ok & (manifest["dim"] != common)
        manifest.loc[odd, "status"] = "failed"
        manifest.loc[odd, "stage"] = "features"
        manifest.loc[odd, "reason"] = [f"{d}-dimensional features where the other slides have {common}; "
                                       "embed every slide with one encoder" for d in manifest.loc[odd, "dim"]]
    return manifest
