"""The ``wsi`` kind: whole-slide images as bags of patch features, one bag per patient.

Prepared by the slide chain (segment, extract, embed, or imported TRIDENT/CLAM/STAMP features),
collected into a per-slide manifest; in each fold the patch features are standardised with the
training patients' per-dimension mean and standard deviation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from lego.data.tensors import ModalityTensors
from lego.errors import InputError
from lego.modality_kinds import ModalityKind, register
from lego.slides.features import read_feature_bag

PROVENANCE = ("status", "encoder", "encoder_digest")  # the attributes a model's data reads of each bag


def feature_source(attrs: dict) -> dict[str, str]:
    """The patch encoder (name and weight digest) a feature file records. Why: UNI, Phikon-v2 and
    ResNet50-trunc are all 1024-d, so the width alone cannot tell that a block trained on one is
    being given another's features."""
    return {"encoder": str(attrs.get("encoder") or ""), "encoder_digest": str(attrs.get("encoder_digest") or "")}


class FeatureSourceError(InputError):
    """Features of another encoder than the model's: a mistake of the whole run, never of one slide."""


def check_feature_source(expected: dict | None, found: dict, path: str) -> None:
    """Refuse features from another encoder (or other weights) than ``expected`` (None: not recorded)."""
    if expected and found != expected:
        raise FeatureSourceError(
            f"{path}: features of encoder {found['encoder']!r} (weights {found['encoder_digest'][:12] or '?'}) "
            f"where {expected['encoder']!r} (weights {expected['encoder_digest'][:12] or '?'}) was expected; "
            "embed every slide of the modality with the encoder its model was trained on")


def _read_bags(manifest: pd.DataFrame, source: dict | None) -> tuple[dict[str, list[np.ndarray]], dict | None]:
    """Each patient's slides' features, and the encoder that made them (every file must name the same one)."""
    bags: dict[str, list[np.ndarray]] = {}
    first = None  # (dimension, file) of the first bag: every other must match it
    for row in manifest.itertuples():
        bag = read_feature_bag(row.features, only=PROVENANCE)
        feats = bag.features
        first = first or (feats.shape[1], row.features)
        if feats.shape[1] != first[0]:
            raise InputError(f"{row.features}: {feats.shape[1]}-dimensional features where {first[1]} has {first[0]}; "
                             "embed every slide with one encoder")
        found = feature_source(bag.attrs)
        source = source or found
        check_feature_source(source, found, row.features)
        bags.setdefault(row.patient_id, []).append(feats)
    return bags, source


def bags(manifest: pd.DataFrame, max_patches: int, seed: int, source: dict | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """All usable slides of a patient concatenated, at most ``max_patches`` (seeded subsample), and
    the encoder that made them (``source`` if given)."""
    rng = np.random.default_rng(seed)
    per_slide, source = _read_bags(manifest, source)
    out = {}
    for pid in sorted(per_slide):
        feats = np.concatenate(per_slide[pid])
        if max_patches and len(feats) > max_patches:
            feats = feats[np.sort(rng.choice(len(feats), max_patches, replace=False))]
        out[pid] = feats
    return out, source or {}


def fit_bags(table: pd.DataFrame, train_set: set[str], opts: dict) -> ModalityTensors:
    """Per-dimension mean and standard deviation of the training patients' patch features."""
    per_patient, source = bags(table, opts["max_patches"], opts["seed"])
    train_bags = [b for pid, b in per_patient.items() if pid in train_set]
    if not train_bags:
        raise InputError(f"{opts['where']}: modality {opts['name']!r} has zero training patients in this fold")
    state = {**feature_scaling(np.concatenate(train_bags), len(train_bags), opts), "max_patches": opts["max_patches"],
             "features": source}
    return standardised_bags(opts["name"], opts["kind"], per_patient, state)


def feature_scaling(stacked: np.ndarray, n_patients: int, opts: dict, unit: tuple[str, str] = ("patch", "patches"),
                    fix: str = "the embedding step and its encoder checkpoint") -> dict[str, list]:
    """Per-dimension mean and standard deviation of the training patients' stacked tokens (a
    constant dimension keeps scale 1). As for tables, a modality that tells no patient from another
    is refused: every feature constant over all its tokens (``unit``: patches, an image's tiles)."""
    mean, std = stacked.mean(0), stacked.std(0)
    if not (std > 1e-8).any():
        raise InputError(f"{opts['where']}: modality {opts['name']!r}: every {unit[0]} feature is the same in all "
                         f"{len(stacked)} {unit[1]} of the {n_patients} training patients; the features carry no "
                         f"information (check {fix})")
    return {"mean": mean.tolist(), "std": np.where(std > 1e-8, std, 1.0).tolist()}


def apply_bags(name: str, kind: str, table: pd.DataFrame, state: dict, seed: int) -> ModalityTensors:
    """A saved standardisation applied to the manifest's bags (features of the recorded encoder only)."""
    per_patient, _ = bags(table, state["max_patches"], seed, state.get("features"))  # older models: not recorded
    return standardised_bags(name, kind, per_patient, state)


def standardised_bags(name: str, kind: str, per_patient: dict[str, np.ndarray], state: dict) -> ModalityTensors:
    mean, std = np.asarray(state["mean"], np.float32), np.asarray(state["std"], np.float32)
    for pid, b in per_patient.items():
        if b.shape[1] != len(mean):
            raise InputError(
                f"modality {name!r}: features of patient {pid} have {b.shape[1]} dimensions but the model was trained "
                f"on {len(mean)}; the block was trained on a different feature set"
            )
    per = {pid: torch.from_numpy(((b - mean) / std).astype(np.float32)) for pid, b in per_patient.items()}
    return ModalityTensors(name, kind, per, state, len(mean))


WSI = register(ModalityKind(
    name="wsi", family="slide", table="manifest", key="slide_id", usable=lambda df: df[df["status"] == "ok"],
    fit=fit_bags, apply=apply_bags, encoder="abmil",
))
