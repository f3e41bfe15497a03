"""Per-fold model inputs: modality tensors per patient, fitted on the fold's training patients.

Tabular modalities go through a TabularTransform fitted on the training patients of the fold;
patch bags are standardised with per-feature means and standard deviations of the training
patients' patches. Both fitted states are stored with the model and re-applied unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lego.data.labels import refuse_outcome_features, require_outcomes
from lego.errors import InputError
from lego.io import TABLES, read_frame
from lego.slides.features import read_feature_bag
from lego.survival.targets import discretise, fit_bins
from lego.tabular.transforms import TabularTransform


@dataclass
class ModalityTensors:
    """One modality of one fold: (T, D) float tensor per patient who has it."""

    name: str
    kind: str
    per_patient: dict[str, torch.Tensor]
    state: dict  # fitted preprocessing, JSON-serialisable
    dim: int

    def __post_init__(self) -> None:
        # Tables have one token per patient: keep them as one dense matrix too, so a batch is a
        # single index_select instead of a Python loop (most of a tabular epoch's time otherwise).
        self.index: dict[str, int] = {}
        self.dense: torch.Tensor | None = None
        if self.per_patient and all(t.shape[0] == 1 for t in self.per_patient.values()):
            self.index = {pid: i for i, pid in enumerate(self.per_patient)}
            self.dense = torch.cat([self.per_patient[p] for p in self.index]).unsqueeze(1)
            self.per_patient = {pid: self.dense[i] for pid, i in self.index.items()}  # views: one copy in memory


# A block spec's defaults (config/schema.yaml repeats them for the workflow; a test keeps them equal).
N_BINS = 4  # survival bins at quantiles of the training patients' event times
MAX_PATCHES = 4096  # patches per patient bag; a seeded subsample above this


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
        raise FeatureSourceError(f"{path}: features of encoder {found['encoder']!r} (weights {found['encoder_digest'][:12] or '?'}) "
                         f"where {expected['encoder']!r} (weights {expected['encoder_digest'][:12] or '?'}) was expected; "
                         "embed every slide of the modality with the encoder its model was trained on")


def _bags(manifest: pd.DataFrame, max_patches: int, seed: int, source: dict | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """All usable slides of a patient concatenated, at most ``max_patches`` (seeded subsample), and
    the encoder that made them (every file must name the same one, ``source`` if given)."""
    rng = np.random.default_rng(seed)
    bags: dict[str, list[np.ndarray]] = {}
    first = None  # (dimension, file) of the first bag: every other must match it
    for row in manifest.itertuples():
        bag = read_feature_bag(row.features)
        feats = bag.features
        first = first or (feats.shape[1], row.features)
        if feats.shape[1] != first[0]:
            raise InputError(f"{row.features}: {feats.shape[1]}-dimensional features where {first[1]} has {first[0]}; "
                             "embed every slide with one encoder")
        found = feature_source(bag.attrs)
        source = source or found
        check_feature_source(source, found, row.features)
        bags.setdefault(row.patient_id, []).append(feats)
    out = {}
    for pid in sorted(bags):
        feats = np.concatenate(bags[pid])
        if max_patches and len(feats) > max_patches:
            feats = feats[np.sort(rng.choice(len(feats), max_patches, replace=False))]
        out[pid] = feats
    return out, source or {}


def _fit_tabular(table: pd.DataFrame, train_set: set[str], opts: dict) -> ModalityTensors:
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
    return _apply_tabular(opts["name"], opts["kind"], table, {"transform": tf.to_dict()}, opts["seed"])


def _apply_tabular(name: str, kind: str, table: pd.DataFrame, state: dict, seed: int) -> ModalityTensors:
    tf = TabularTransform.from_dict(state["transform"])
    x = tf.transform(table)
    per = {pid: torch.from_numpy(x[i : i + 1]) for i, pid in enumerate(table["patient_id"])}
    return ModalityTensors(name, kind, per, state, x.shape[1])


def _fit_bags(table: pd.DataFrame, train_set: set[str], opts: dict) -> ModalityTensors:
    """Per-dimension mean and standard deviation of the training patients' patch features."""
    bags, source = _bags(table, opts["max_patches"], opts["seed"])
    train_bags = [b for pid, b in bags.items() if pid in train_set]
    if not train_bags:
        raise InputError(f"{opts['where']}: modality {opts['name']!r} has zero training patients in this fold")
    stacked = np.concatenate(train_bags)
    mean, std = stacked.mean(0), stacked.std(0)
    std = np.where(std > 1e-8, std, 1.0)
    state = {"mean": mean.tolist(), "std": std.tolist(), "max_patches": opts["max_patches"], "features": source}
    return _standardised_bags(opts["name"], opts["kind"], bags, state)


def _apply_bags(name: str, kind: str, table: pd.DataFrame, state: dict, seed: int) -> ModalityTensors:
    bags, _ = _bags(table, state["max_patches"], seed, state.get("features"))  # older models: not recorded
    return _standardised_bags(name, kind, bags, state)


@dataclass(frozen=True)
class ModalityKind:
    """What a modality kind is, in one place: the table it reads (a ``lego.io.TABLES`` kind), the
    rows it uses, how its preprocessing is fitted on a fold's training patients (returning the
    tensors, whose ``state`` is what a model saves), and how a saved state turns the table into
    per-patient tensors. Adding a kind = one entry here."""

    table: str  # "modality": prepared from the user's table; "manifest": slide features (the slide settings)
    key: str  # the column naming one row (a repeated key would count twice)
    usable: Callable[[pd.DataFrame], pd.DataFrame]
    fit: Callable[[pd.DataFrame, set, dict], "ModalityTensors"]
    apply: Callable[[str, str, pd.DataFrame, dict, int], "ModalityTensors"]
    encoder: str  # the block encoder when the config names none

    @property
    def slides(self) -> bool:
        """Read from slides (patch features, attention heatmaps, the ABMIL baseline), not from a table."""
        return self.table == "manifest"


def _rows_with_data(df: pd.DataFrame) -> pd.DataFrame:
    """A table's patients with at least one value: a row of only missing cells means "no data" (as
    prepare-modality decides), not a patient to score from imputed medians."""
    feats = [c for c in df.columns if c != "patient_id"]
    return df[df[feats].notna().any(axis=1)] if feats else df


KINDS: dict[str, ModalityKind] = {
    "tabular": ModalityKind("modality", "patient_id", _rows_with_data, _fit_tabular, _apply_tabular, "snn"),
    "wsi": ModalityKind("manifest", "slide_id", lambda df: df[df["status"] == "ok"], _fit_bags, _apply_bags, "abmil"),
}


def is_slide_kind(kind: str | None) -> bool:
    """Whether a (known) modality kind reads slides."""
    return kind in KINDS and KINDS[kind].slides


def modality_kind(kind: str) -> ModalityKind:
    if kind not in KINDS:
        raise InputError(f"unknown modality kind {kind!r}; use one of {', '.join(sorted(KINDS))}")
    return KINDS[kind]


def load_modality_table(kind: str, path: str | Path) -> pd.DataFrame:
    """The rows a modality kind uses; a key repeated (two rows of one patient, or of one slide)
    would silently count twice, so it is refused."""
    k = modality_kind(kind)
    df = read_frame(path, k.table)
    dup = df[k.key].duplicated()
    if dup.any():
        raise InputError(f"{path}: {k.key} {df.loc[dup, k.key].iloc[0]!r} has more than one row; one row per "
                         f"{k.key.split('_')[0]} (remake it with `{TABLES[k.table][1]}`)")
    return k.usable(df)


def fit_modality(name: str, kind: str, table: pd.DataFrame, train_ids: list[str], categorical: list[str] | None = None,
                 max_patches: int = MAX_PATCHES, seed: int = 0, where: str = "", preprocess: dict | None = None,
                 targets: "Targets | None" = None) -> ModalityTensors:
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


def _standardised_bags(name: str, kind: str, bags: dict[str, np.ndarray], state: dict) -> ModalityTensors:
    mean, std = np.asarray(state["mean"], np.float32), np.asarray(state["std"], np.float32)
    for pid, b in bags.items():
        if b.shape[1] != len(mean):
            raise InputError(
                f"modality {name!r}: features of patient {pid} have {b.shape[1]} dimensions but the model was trained "
                f"on {len(mean)}; the block was trained on a different feature set"
            )
    per = {pid: torch.from_numpy(((b - mean) / std).astype(np.float32)) for pid, b in bags.items()}
    return ModalityTensors(name, kind, per, state, len(mean))


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


def load_fold_modality(modality: str, kind: str, data: str | Path, labels: str | Path, folds: str | Path, fold: int,
                       task: str, spec: dict, where: str, categorical: list[str] | None = None) -> FoldModality:
    """Targets fitted on the fold's training patients and the modality's in-fold preprocessed tensors.

    ``spec``: the block's settings (``n_bins``, ``max_patches``, ``seed``, ``preprocess``).
    """
    modality_kind(kind)  # an unknown kind before any file is read
    lab, ids = read_frame(labels, "labels"), fold_ids(read_frame(folds, "folds"), fold)
    require_outcomes(lab, task, f"{labels} ({where})", ids["train"] + ids["val"])
    targets = make_targets(lab, ids["train"], task, spec.get("n_bins", N_BINS), where)
    if task == "classification" and min(t[0] for t in targets.per_patient.values()) < 0:
        raise InputError(f"{where}: unknown class label")
    table = load_modality_table(kind, data)
    refuse_outcome_features(table, lab, f"{data} ({where})")
    mod = fit_modality(modality, kind, table, ids["train"], categorical,
                       spec.get("max_patches", MAX_PATCHES), int(spec.get("seed", 0)), where,
                       preprocess=spec.get("preprocess"), targets=targets)
    train_ids = [p for p in ids["train"] if p in mod.per_patient]
    if not train_ids:
        raise InputError(f"{where}: zero training patients have this modality; it cannot be trained in this fold")
    return FoldModality(lab, ids, targets, mod, train_ids, [p for p in ids["val"] if p in mod.per_patient])
