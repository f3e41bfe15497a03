"""Per-fold model inputs: modality tensors per patient, fitted on the fold's training patients.

How each modality is fitted and re-applied is its kind's (:mod:`lego.modality_kinds`): a table goes through
a TabularTransform fitted on the fold's training patients, patch bags are standardised with the
training patients' per-feature means and standard deviations. The fitted state is stored with the
model and re-applied unchanged. Targets (bins, classes) are fitted here on the same patients.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lego.data.labels import refuse_outcome_features, require_outcomes
from lego.data.tensors import ModalityTensors
from lego.errors import InputError
from lego.io import TABLES, read_frame
from lego.modality_kinds import modality_kind
from lego.settings import default
from lego.survival.targets import discretise, fit_bins

__all__ = ["ModalityTensors", "Targets", "collate", "fold_ids", "load_fold_modality", "make_targets"]


# A block spec's defaults (the schema's model.n_bins and model.train.max_patches).
N_BINS = default("model.n_bins")  # survival bins at quantiles of the training patients' event times
MAX_PATCHES = default("model.train.max_patches")  # patches per patient bag; a seeded subsample above this


def load_modality_table(kind: str, path: str | Path) -> pd.DataFrame:
    """The rows a modality kind uses; a key repeated (two rows of one patient, or of one slide)
    would silently count twice, so it is refused."""
    k = modality_kind(kind)
    df = read_frame(path, k.table)
    key = [k.key] if isinstance(k.key, str) else list(k.key)
    dup = df.duplicated(key)
    if dup.any():
        first = df.loc[dup, key].iloc[0]
        shown = ", ".join(f"{c} {first[c]!r}" for c in key)
        raise InputError(f"{path}: {shown} has more than one row; one row per {' and '.join(c.split('_')[0] for c in key)} "
                         f"(remake it with `{TABLES[k.table][1]}`)")
    return k.usable(df)


def fit_modality(name: str, kind: str, table: pd.DataFrame, train_ids: list[str], *, categorical: list[str] | None = None,
                 max_patches: int = MAX_PATCHES, seed: int = 0, where: str = "", preprocess: dict | None = None,
                 targets: Targets | None = None) -> ModalityTensors:
    """Fit preprocessing on ``train_ids`` and build tensors for every patient with the modality.

    ``preprocess``: TabularTransform options (clipping, variance filter, ``select_k``);
    ``targets``: the fold's targets, of which only the training patients' are read (for ``select_k``).
    Fitting only produces the state; the tensors come from the same code that re-applies a saved
    state at evaluation, so training and evaluation inputs cannot drift apart.
    """
    opts = {"name": name, "kind": kind, "where": where, "categorical": categorical, "preprocess": preprocess, "targets": targets,
            "max_patches": max_patches, "seed": seed}
    return modality_kind(kind).fit(table, set(train_ids), opts)


def apply_modality(name: str, kind: str, table: pd.DataFrame, state: dict, seed: int = 0) -> ModalityTensors:
    """Apply a fitted state (from fitting, or from a saved model) to a modality table."""
    return modality_kind(kind).apply(name, kind, table, state, seed)


@dataclass
class Targets:
    """Per-patient training targets for one fold."""

    task: str
    per_patient: dict[str, tuple]  # survival: (bin, event, time); classification: (class index,)
    bins: list[float] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)

    @property
    def n_outputs(self) -> int:
        return len(self.bins) - 1 if self.task == "survival" else len(self.classes)

    def training_target(self, ids) -> dict:
        """Outcomes of ``ids`` (in that order) in the form feature selection takes."""
        rows = [self.per_patient[p] for p in ids]
        if self.task == "survival":
            return {"task": "survival", "time": np.array([r[2] for r in rows]), "event": np.array([r[1] for r in rows])}
        return {"task": "classification", "label": np.array([r[0] for r in rows])}


def make_targets(labels: pd.DataFrame, train_ids: list[str], task: str, n_bins: int = N_BINS, where: str = "",
                 bins: list[float] | None = None, classes: list[str] | None = None) -> Targets:
    """Bins fitted on the fold's training patients (all of them, so every block shares them)."""
    lab = labels.set_index("patient_id")
    if task == "survival":
        if bins is None:
            tr = lab.loc[lab.index.intersection(train_ids)]
            bins = fit_bins(tr["time"].to_numpy(), tr["event"].to_numpy(), n_bins, where).tolist()
        idx = discretise(lab["time"].to_numpy(), np.asarray(bins))
        per = {pid: (int(b), int(e), float(t)) for pid, b, e, t in zip(lab.index, idx, lab["event"], lab["time"])}
        return Targets(task, per, bins=list(bins))
    if classes is None:
        classes = sorted(lab["label"].astype(str).unique())
        seen = lab.loc[lab.index.intersection(train_ids), "label"].astype(str).unique()
        if len(seen) < 2:  # cross-entropy of one class is 0 from the first step: nothing would be learnt
            raise InputError(f"{where}: the training patients hold only class {list(seen)} of {classes}; "
                             "classification needs two or more classes in training (stratify the folds: folds.stratify)")
    index = {c: i for i, c in enumerate(classes)}
    per = {pid: (index.get(str(c), -1),) for pid, c in zip(lab.index, lab["label"])}
    return Targets(task, per, classes=list(classes))


def collate(ids: list[str], modalities: dict[str, ModalityTensors]) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Pad each modality to the longest bag in the batch; absent modalities get one zero token.

    Returns ``{modality: (x (B, T, D), mask (B, T) bool, present (B,) bool)}``.
    """
    out = {}
    for name, mod in modalities.items():
        if mod.dense is not None:
            out[name] = _collate_dense(ids, mod)
            continue
        tensors = [mod.per_patient.get(pid) for pid in ids]
        t_max = max((t.shape[0] for t in tensors if t is not None), default=1)
        x = torch.zeros(len(ids), t_max, mod.dim)
        mask = torch.zeros(len(ids), t_max, dtype=torch.bool)
        present = torch.zeros(len(ids), dtype=torch.bool)
        for i, t in enumerate(tensors):
            if t is None:
                mask[i, 0] = True  # a dummy token keeps attention finite; the output is discarded
                continue
            x[i, : t.shape[0]] = t
            mask[i, : t.shape[0]] = True
            present[i] = True
        out[name] = (x, mask, present)
    return out


def _collate_dense(ids: list[str], mod: ModalityTensors) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``collate`` for one-token modalities: absent patients get a zero token, masked as present."""
    rows = torch.tensor([mod.index.get(pid, -1) for pid in ids], dtype=torch.long)
    present = rows >= 0
    x = mod.dense.index_select(0, rows.clamp_min(0))
    if not bool(present.all()):
        x = x * present[:, None, None]
    return x, torch.ones(len(ids), 1, dtype=torch.bool), present


def target_tensors(ids: list[str], targets: Targets) -> dict[str, torch.Tensor]:
    rows = [targets.per_patient[pid] for pid in ids]
    if targets.task == "survival":
        return {
            "bin": torch.tensor([r[0] for r in rows]),
            "event": torch.tensor([r[1] for r in rows]),
            "time": torch.tensor([r[2] for r in rows], dtype=torch.float64),
        }
    return {"label": torch.tensor([r[0] for r in rows])}


def fold_ids(folds: pd.DataFrame, fold: int) -> dict[str, list[str]]:
    missing = {"patient_id", "fold", "subset"} - set(folds.columns)
    if missing:
        raise InputError(f"the folds table has no column(s) {sorted(missing)}; make it with `lego make-folds`")
    f = folds[folds["fold"] == fold]
    if f.empty:
        raise InputError(f"fold {fold} is not in the folds table (folds: {sorted(int(k) for k in folds['fold'].unique())}); "
                         "use the folds table the model was trained with")
    twice = f["patient_id"][f["patient_id"].duplicated()]
    if len(twice):  # in two subsets of one fold: a leak, never a valid split
        raise InputError(f"fold {fold}: patient {twice.iloc[0]} appears {int((f['patient_id'] == twice.iloc[0]).sum())} "
                         f"times ({len(set(twice))} patient(s) affected); a patient belongs to one subset per fold")
    unknown = sorted(set(f["subset"]) - {"train", "val", "test"})
    if unknown:
        raise InputError(f"fold {fold}: unknown subset name(s) {unknown}; use train, val and test")
    return {s: sorted(f.loc[f["subset"] == s, "patient_id"]) for s in ("train", "val", "test")}


@dataclass
class FoldModality:
    """One modality's training inputs for one fold: what a block and the ABMIL baseline share."""

    labels: pd.DataFrame
    ids: dict[str, list[str]]  # the fold's train / val / test patients (all of them)
    targets: Targets
    mod: ModalityTensors
    train_ids: list[str]  # training patients who have the modality
    val_ids: list[str]


@dataclass
class FoldInputs:
    """Several modalities' training inputs for one fold (a multimodal model's)."""

    labels: pd.DataFrame
    ids: dict[str, list[str]]
    targets: Targets
    mods: dict[str, ModalityTensors]
    train_ids: list[str]  # training patients who have at least one of the modalities
    val_ids: list[str]


def fold_outcomes(labels: str | Path, folds: str | Path, fold: int, task: str, spec: dict,
                  where: str) -> tuple[pd.DataFrame, dict[str, list[str]], Targets]:
    """The labels, the fold's patients and the targets fitted on its training patients."""
    lab, ids = read_frame(labels, "labels"), fold_ids(read_frame(folds, "folds"), fold)
    require_outcomes(lab, task, f"{labels} ({where})", ids["train"] + ids["val"])
    targets = make_targets(lab, ids["train"], task, spec.get("n_bins", N_BINS), where)
    if task == "classification" and min(t[0] for t in targets.per_patient.values()) < 0:
        raise InputError(f"{where}: unknown class label")
    return lab, ids, targets


def _fit_fold_modality(name: str, spec: dict, path: str | Path, lab: pd.DataFrame, ids: dict, targets: Targets,
                       where: str) -> ModalityTensors:
    """One modality (``spec``: its kind, categorical columns and in-fold preprocessing, and the
    model's ``max_patches``/``seed``) fitted on the fold's training patients."""
    table = load_modality_table(spec["kind"], path)
    refuse_outcome_features(table, lab, f"{path} ({where})")
    return fit_modality(name, spec["kind"], table, ids["train"], categorical=spec.get("categorical"),
                        max_patches=spec.get("max_patches", MAX_PATCHES), seed=int(spec.get("seed", 0)), where=where,
                        preprocess=spec.get("preprocess"), targets=targets)


def load_fold_modality(modality: str, kind: str, data: str | Path, *, labels: str | Path, folds: str | Path, fold: int,
                       task: str, spec: dict, where: str, categorical: list[str] | None = None) -> FoldModality:
    """Targets fitted on the fold's training patients and the modality's in-fold preprocessed tensors.

    ``spec``: the block's settings (``n_bins``, ``max_patches``, ``seed``, ``preprocess``).
    """
    modality_kind(kind)  # an unknown kind before any file is read
    lab, ids, targets = fold_outcomes(labels, folds, fold, task, spec, where)
    mod = _fit_fold_modality(modality, {**spec, "kind": kind, "categorical": categorical}, data, lab, ids, targets, where)
    train_ids = [p for p in ids["train"] if p in mod.per_patient]
    if not train_ids:
        raise InputError(f"{where}: zero training patients have this modality; it cannot be trained in this fold")
    return FoldModality(lab, ids, targets, mod, train_ids, [p for p in ids["val"] if p in mod.per_patient])


def load_fold_inputs(modalities: dict[str, dict], data: dict[str, str], *, labels: str | Path, folds: str | Path,
                     fold: int, task: str, spec: dict, where: str) -> FoldInputs:
    """Every modality of a multimodal model fitted on the fold's training patients.

    ``modalities``: name -> {"kind", "categorical"?, "preprocess"?}; ``data``: name -> prepared file.
    A patient with any of the modalities is a training (validation) patient: models that cannot
    take a missing modality say so themselves."""
    for m, s in modalities.items():
        modality_kind(s["kind"])
        if m not in data:
            raise InputError(f"{where}: no data given for modality {m!r}")
    lab, ids, targets = fold_outcomes(labels, folds, fold, task, spec, where)
    mods = {m: _fit_fold_modality(m, {**spec, **s}, data[m], lab, ids, targets, f"{where}, {m}")
            for m, s in modalities.items()}
    has = lambda p: any(p in t.per_patient for t in mods.values())  # noqa: E731
    train_ids = [p for p in ids["train"] if has(p)]
    if not train_ids:
        raise InputError(f"{where}: zero training patients have any of {sorted(mods)}; nothing to train in this fold")
    return FoldInputs(lab, ids, targets, mods, train_ids, [p for p in ids["val"] if has(p)])
