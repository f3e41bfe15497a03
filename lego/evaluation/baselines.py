"""Reference models on the same folds as the LegoBlocks, with the same in-fold preprocessing.

* the models of :mod:`lego.evaluation.classical` (Coxnet and RSF for survival, logistic
  regression and a random forest for classification) on one modality or on
  several concatenated (early fusion). Inputs come from :func:`lego.data.fold_data.fit_modality`,
  the very code the blocks use: fitted on the fold's training patients only (scaling, clipping,
  feature selection). Patch bags enter as the mean of their standardised patch features, a time
  series as its kind's per-variable summaries (last value, mean, slope; ``ModalityKind.rows``).
  Early fusion keeps every patient with at least one of the modalities: a missing modality is
  its training mean (zeros after standardisation) plus a 0/1 "has <modality>" column.
* Hyper-parameters (Coxnet's alpha, the forests' leaf size, the logistic penalty) are chosen on
  the fold's validation patients only; the test patients are only predicted.
* ``ensemble``: late fusion, the mean of the single blocks' survival curves and risks (or class
  probabilities) over the blocks a patient has -- the ensemble the MM-Lego paper compares against;
  each block's risk centred at its validation mean first (see :func:`ensemble`).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from lego.data.fold_data import Targets, fit_modality, load_modality_table
from lego.data.labels import refuse_outcome_features
from lego.errors import InputError
from lego.evaluation.classical import CLASSICAL
from lego.evaluation.metrics import headline, prediction_columns
from lego.evaluation.names import TASK_BASELINES
from lego.modality_kinds import modality_kind

log = logging.getLogger(__name__)


def design_matrices(modalities: dict[str, dict], labels: pd.DataFrame, ids: dict[str, list[str]], targets: Targets,
                    seed: int = 0, where: str = "") -> dict[str, tuple[list[str], np.ndarray]]:
    """Per subset: (patient ids, feature matrix) from in-fold preprocessed modalities.

    ``modalities``: name -> {"kind", "path", "categorical"?, "preprocess"?}.
    """
    known = set(labels["patient_id"])
    blocks = {}
    for name, spec in modalities.items():
        table = load_modality_table(spec["kind"], spec["path"])
        refuse_outcome_features(table, labels, f"{spec['path']} ({where})")
        mod = fit_modality(name, spec["kind"], table, ids["train"], categorical=spec.get("categorical"), seed=seed, where=where,
                           preprocess=spec.get("preprocess"), targets=targets)
        rows = {p: r for p, r in modality_kind(spec["kind"]).rows(mod).items() if p in known}
        blocks[name] = (rows, len(next(iter(rows.values()))) if rows else mod.dim)
    several = len(blocks) > 1
    out = {}
    for subset, subset_ids in ids.items():
        pids = [p for p in subset_ids if any(p in per for per, _ in blocks.values())]
        cols = []
        for per, dim in blocks.values():
            x = np.stack([per.get(p, np.zeros(dim, np.float32)) for p in pids]) if pids else np.zeros((0, dim))
            cols.append(x)
            if several:
                cols.append(np.array([[p in per] for p in pids], float).reshape(-1, 1))
        out[subset] = (pids, np.concatenate(cols, axis=1).astype(np.float64) if cols else np.zeros((len(pids), 0)))
    return out


def _step_at(fn, times: np.ndarray) -> np.ndarray:
    """A scikit-survival step function evaluated anywhere (1 before its first time, last value after)."""
    idx = np.searchsorted(fn.x, times, side="right") - 1
    return np.where(idx < 0, 1.0, fn.y[np.clip(idx, 0, len(fn.y) - 1)])


def _survival_frame(pids, risk, surv_fns, edges) -> pd.DataFrame:
    df = pd.DataFrame({"patient_id": pids, "risk": np.asarray(risk, float)})
    finite = np.asarray(edges[1:-1], float)
    for k, t in enumerate(finite):
        df[f"surv_{k}"] = [float(_step_at(fn, np.array([t]))[0]) for fn in surv_fns]
    df[f"surv_{len(finite)}"] = [float(fn.y[-1]) for fn in surv_fns]  # past the last finite edge
    return df


def _predict_survival(est, x: np.ndarray, pids: list[str], edges, kw: dict) -> pd.DataFrame:
    if not pids:  # e.g. no test patient of this fold has the modality
        return _survival_frame([], [], [], edges)
    return _survival_frame(pids, est.predict(x, **kw), est.predict_survival_function(x, **kw), edges)


def _predict_classes(est, x: np.ndarray, pids: list[str], classes: list[str]) -> pd.DataFrame:
    proba = np.zeros((len(pids), len(classes)))
    if len(pids):
        proba[:, est.classes_] = est.predict_proba(x)  # a class absent in training keeps probability 0
    return pd.DataFrame({"patient_id": pids, **{f"p_{c}": proba[:, k] for k, c in enumerate(classes)}})


def fit_baseline(method: str, data: dict[str, tuple[list[str], np.ndarray]], labels: pd.DataFrame, targets: Targets,
                 seed: int = 0, where: str = "") -> tuple[dict[str, pd.DataFrame], dict]:
    """Fit on train, choose the hyper-parameter on validation; predictions per subset and the choice."""
    lab = labels.set_index("patient_id")
    train_ids, x_train = data["train"]
    if len(train_ids) < 5:
        raise InputError(f"{where}: baseline {method!r} has {len(train_ids)} training patients; it needs at least 5")
    val_ids, x_val = data["val"]
    task = targets.task
    if method not in CLASSICAL or CLASSICAL[method].task != task:
        raise InputError(f"{where}: no {task} baseline {method!r}; choose from {', '.join(TASK_BASELINES[task])}")

    def with_labels(pred):
        return pred.merge(lab, left_on="patient_id", right_index=True, how="left")

    if task == "survival":
        from sksurv.util import Surv

        y = Surv.from_arrays(lab.loc[train_ids, "event"].astype(bool).to_numpy(), lab.loc[train_ids, "time"].to_numpy(float))
        if not y["event"].any():
            raise InputError(f"{where}: baseline {method!r}: no event among the fold's training patients")
        edges = targets.bins
        predict = lambda e, x, ids, kw: _predict_survival(e, x, ids, edges, kw)  # noqa: E731
    else:
        y = np.array([targets.per_patient[p][0] for p in train_ids])
        if len(np.unique(y)) < 2:
            raise InputError(f"{where}: baseline {method!r}: one class only among the fold's training patients")
        predict = lambda e, x, ids, kw: _predict_classes(e, x, ids, targets.classes)  # noqa: E731
    options = CLASSICAL[method].fit(x_train, y, seed)

    scores = []
    for _label, est, kw in options:
        s = headline(with_labels(predict(est, x_val, val_ids, kw)), task) if val_ids else np.nan
        scores.append(-np.inf if np.isnan(s) else s)
    best = int(np.argmax(scores)) if np.isfinite(scores).any() else len(options) // 2
    label, est, kw = options[best]
    chosen = {"method": method, "chosen": label, "val_score": None if not np.isfinite(scores[best]) else float(scores[best]),
              "candidates": [o[0] for o in options]}
    log.info("%s: %s chose %s on validation (%s)", where, method, label, chosen["val_score"])
    preds = {s: predict(est, data[s][1], data[s][0], kw) for s in ("test", "val")}
    return preds, chosen


def ensemble(block_predictions: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Late fusion: per patient and subset, the mean of the blocks' curves, risks or probabilities.

    Each block's risk (not its curves: each is a probability already) is first centred at its mean
    over the fold's validation patients. Why: a patient's mean runs over the blocks they have, and blocks fitted apart need not share a level
    (one trained on the patients with a follow-up series sat 0.85 below the other on the heart
    valve cohort, 8 of its standard deviations): uncentred, every patient missing that modality
    ranked above every patient with it, and the ensemble fell below both its blocks (test C 0.56
    against 0.75 and 0.58). Centring changes no ranking where every patient has every block."""
    frames = []
    for name, p in block_predictions.items():
        cols = prediction_columns(p)
        frames.append(p[["patient_id", "subset", *cols]].assign(_block=name))
    if not frames:
        raise InputError("the ensemble needs the predictions of at least one block")
    frames = _centred_risks(frames, list(block_predictions))
    both = pd.concat(frames, ignore_index=True)
    value_cols = [c for c in both.columns if c not in ("patient_id", "subset", "_block")]
    out = both.groupby(["patient_id", "subset"], sort=True)[value_cols].mean().reset_index()
    out["n_blocks"] = both.groupby(["patient_id", "subset"], sort=True)["_block"].nunique().to_numpy()
    if any(c.startswith("p_") for c in value_cols):  # renormalise (all blocks share the classes)
        p = [c for c in value_cols if c.startswith("p_")]
        out[p] = out[p].div(out[p].sum(axis=1), axis=0)
    return out


def _centred_risks(frames: list[pd.DataFrame], names: list[str]) -> list[pd.DataFrame]:
    """Each block's risk minus its mean over the validation patients (never the test patients).

    Left as they are, with a warning naming every such block, when one has no validation patient
    to centre on (a fold's blocks are centred all or none: half-centred, the levels would differ again)."""
    if not all("risk" in f for f in frames):
        return frames
    means = [f.loc[f["subset"] == "val", "risk"].mean() for f in frames]
    if any(pd.isna(m) for m in means):
        missing = [name for name, m in zip(names, means) if pd.isna(m)]
        log.warning("ensemble: %s have no validation patient; the blocks' risks are averaged uncentred",
                    ", ".join(missing))
        return frames
    return [f.assign(risk=f["risk"] - m) for f, m in zip(frames, means)]

