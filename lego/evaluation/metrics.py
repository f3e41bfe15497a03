"""Every metric of one model on one set of patients, each either a value or a reason it is missing.

Survival (scikit-survival implementations):

* ``c_index``: Harrell's C from the risk score.
* ``uno_c``: Uno's IPCW C, truncated at τ = the ``tau_quantile`` of the fold's *training* times
  (default 0.8), with the censoring distribution estimated on the training patients.
* ``auc_<h>``: cumulative/dynamic AUC at each horizon h (label time unit) inside the test
  follow-up and below τ; ``mean_auc``: scikit-survival's weighted mean over those horizons.
* ``ibs``: integrated Brier score of the predicted survival curves on 50 times between the test
  set's first time and min(τ, the last finite bin edge). A discrete-time model gives
  S(e_{k+1}) = prod_{j<=k}(1 - h_j) at the bin edges e; S(t) is linear between edges with S(0) = 1.
  Beyond the last finite edge the model only says "eventually S_K", so the IBS stops there.

Classification: ``auc`` (binary, or macro one-vs-rest over the classes present), ``balanced_accuracy``
and ``brier`` (binary: of the positive class; multi-class: mean squared distance of the probability
vector to the one-hot label, sum over classes).

A metric that cannot be computed (no events, one class, a horizon outside follow-up) is ``None``
with its reason in ``missing`` -- never 0.5, never silently dropped.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from lego.settings import default
from lego.survival.discrimination import as_ties, auc, c_index

SURVIVAL_METRICS = ["c_index", "uno_c", "mean_auc", "ibs"]
CLASSIFICATION_METRICS = ["auc", "balanced_accuracy", "brier"]
HEADLINE = {"survival": "c_index", "classification": "auc"}
LOWER_IS_BETTER = {"ibs", "brier"}


def _surv(time, event):
    from sksurv.util import Surv

    return Surv.from_arrays(np.asarray(event).astype(bool), np.asarray(time, float))


def horizon_name(h: float) -> str:
    return f"auc_{h:g}"


def curve_at(surv_at_edges: np.ndarray, edges: np.ndarray, times: np.ndarray) -> np.ndarray:
    """S(t) per patient at ``times`` from per-bin survival (n, K) and bin edges (K + 1, last inf)."""
    knots_t = np.concatenate([[0.0], np.asarray(edges[1:-1], float)])  # 0, e_1 .. e_{K-1}
    out = np.empty((len(surv_at_edges), len(times)))
    for i, row in enumerate(np.asarray(surv_at_edges, float)):
        knots_s = np.concatenate([[1.0], row[: len(knots_t) - 1]])
        out[i] = np.interp(times, knots_t, knots_s)  # flat at S(e_{K-1}) beyond the last finite edge
    return out


def survival_metrics(pred: pd.DataFrame, train: pd.DataFrame, edges: list[float] | None, horizons: list[float],
                     tau_quantile: float = default("evaluation.tau_quantile")) -> tuple[dict, dict]:
    """Metrics from predictions (``time``, ``event``, ``risk``, optional ``surv_k``) and training labels.

    Returns (values, missing): a metric that cannot be computed is None with its reason."""
    names = ["c_index", "uno_c"] + [horizon_name(h) for h in horizons] + ["mean_auc", "ibs"]
    n, n_events = len(pred), int(pred["event"].sum()) if len(pred) else 0
    if n < 2 or n_events == 0:
        reason = f"{n_events} events among {n} patients"
        return {k: None for k in names}, {k: reason for k in names}
    time, event, risk = pred["time"].to_numpy(float), pred["event"].to_numpy(int), as_ties(pred["risk"].to_numpy(float))
    values: dict[str, float | None] = {}
    missing: dict[str, str] = {}
    values["c_index"] = c_index(time, event, risk)
    if np.isnan(values["c_index"]):
        values["c_index"], missing["c_index"] = None, f"no comparable pair among {n} patients ({n_events} events)"
    y_train, y_test = _surv(train["time"], train["event"]), _surv(time, event)
    tau = float(np.quantile(train["time"].to_numpy(float), tau_quantile))
    values["tau"] = tau
    _uno_c(values, missing, y_train, y_test, risk, tau)
    _time_dependent_auc(values, missing, y_train, y_test, risk, horizons, tau)
    _brier(values, missing, pred, edges, y_train, y_test, tau)
    return values, missing


def _uno_c(values: dict, missing: dict, y_train, y_test, risk: np.ndarray, tau: float) -> None:
    from sksurv.metrics import concordance_index_ipcw

    try:
        if not ((y_test["time"] < tau) & y_test["event"]).any():
            raise ValueError(f"no test event before tau={tau:.4g}")
        values["uno_c"] = float(concordance_index_ipcw(y_train, y_test, risk, tau=tau)[0])
    except ValueError as e:
        values["uno_c"], missing["uno_c"] = None, f"Uno's C: {e}"


def _time_dependent_auc(values: dict, missing: dict, y_train, y_test, risk: np.ndarray, horizons: list[float],
                        tau: float) -> None:
    """AUC at each horizon inside the test follow-up and before tau, and their mean."""
    from sksurv.metrics import cumulative_dynamic_auc

    time, event = y_test["time"], y_test["event"]
    lo, hi = time.min(), time.max()
    usable = []
    for h in horizons:
        name = horizon_name(h)
        if not lo <= h < hi:
            values[name], missing[name] = None, f"horizon {h:g} outside the test follow-up [{lo:.4g}, {hi:.4g})"
        elif h >= tau:
            values[name], missing[name] = None, f"horizon {h:g} beyond tau={tau:.4g} (censoring weights unreliable)"
        elif not ((time <= h) & event).any():
            values[name], missing[name] = None, f"no event by horizon {h:g}"
        else:
            usable.append(h)
    if not usable:
        values["mean_auc"], missing["mean_auc"] = None, "no horizon inside the test follow-up"
        return
    try:
        per, mean = cumulative_dynamic_auc(y_train, y_test, risk, usable)
    except ValueError as e:
        for key in [horizon_name(h) for h in usable] + ["mean_auc"]:
            values[key], missing[key] = None, f"time-dependent AUC: {e}"
        return
    values.update({horizon_name(h): float(a) for h, a in zip(usable, per)})
    values["mean_auc"] = float(mean)
    values["mean_auc_horizons"] = [float(h) for h in usable]


def _brier(values: dict, missing: dict, pred: pd.DataFrame, edges: list[float] | None, y_train, y_test,
           tau: float) -> None:
    """Integrated Brier score of the predicted survival curves up to tau (and the last finite bin edge)."""
    from sksurv.metrics import integrated_brier_score

    surv_cols = sorted((c for c in pred.columns if c.startswith("surv_")), key=lambda c: int(c.split("_")[1]))
    if not surv_cols or edges is None:
        values["ibs"], missing["ibs"] = None, "the model gives no survival curve"
        return
    lo, hi = y_test["time"].min(), y_test["time"].max()
    edges_a = np.asarray(edges, float)
    end = min(tau, edges_a[-2] if np.isfinite(edges_a[-2]) else tau, np.nextafter(hi, -np.inf))
    grid = np.linspace(lo, end, 50)
    try:
        if end <= lo:
            raise ValueError(f"empty time range [{lo:.4g}, {end:.4g}]")
        s = curve_at(pred[surv_cols].to_numpy(float), edges_a, grid)
        values["ibs"] = float(integrated_brier_score(y_train, y_test, s, grid))
    except ValueError as e:
        values["ibs"], missing["ibs"] = None, f"integrated Brier score: {e}"


def classification_metrics(labels: np.ndarray, scores: np.ndarray) -> tuple[dict, dict]:
    """AUC, balanced accuracy and Brier score from class indices (n,) and probabilities (n, C)."""
    from sklearn.metrics import balanced_accuracy_score

    labels, scores = np.asarray(labels), np.asarray(scores, float)
    values: dict[str, float | None] = {}
    missing: dict[str, str] = {}
    if len(labels) == 0:
        return {k: None for k in CLASSIFICATION_METRICS}, {k: "no patients" for k in CLASSIFICATION_METRICS}
    a = auc(labels, scores)
    if np.isnan(a):
        values["auc"], missing["auc"] = None, f"one class only among {len(labels)} patients"
    else:
        values["auc"] = a
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a predicted class absent from this set is fine
        values["balanced_accuracy"] = float(balanced_accuracy_score(labels, scores.argmax(1)))
    onehot = np.eye(scores.shape[1])[labels]
    if scores.shape[1] == 2:
        values["brier"] = float(np.mean((scores[:, 1] - onehot[:, 1]) ** 2))
    else:
        values["brier"] = float(np.mean(np.sum((scores - onehot) ** 2, axis=1)))
    return values, missing


def prediction_columns(pred: pd.DataFrame) -> list[str]:
    """A predictions table's model outputs (risk, S(t) per bin, class probabilities), not its IDs or labels."""
    return [c for c in pred.columns if c == "risk" or c.startswith(("surv_", "p_"))]


def class_scores(pred: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Class indices and (n, classes) scores; class order = the predictions' ``p_<class>`` columns."""
    classes = [c.removeprefix("p_") for c in pred.columns if c.startswith("p_")]
    y = pred["label"].astype(str).map({c: i for i, c in enumerate(classes)}).to_numpy()
    return y, pred[[f"p_{c}" for c in classes]].to_numpy()


def headline(pred: pd.DataFrame, task: str) -> float:
    """The task's headline metric (Harrell's C or AUC) from predictions with labels; NaN if undefined."""
    if task == "survival":
        return c_index(pred["time"], pred["event"], pred["risk"])
    return auc(*class_scores(pred))


def score_subset(pred: pd.DataFrame, task: str, train_labels: pd.DataFrame, edges: list[float] | None = None,
                 horizons: list[float] = (), tau_quantile: float = default("evaluation.tau_quantile")) -> dict:
    """``{"n", "events"?, <metric>: value or None, "missing": {metric: reason}}`` for one subset."""
    if task == "survival":
        values, missing = survival_metrics(pred, train_labels, edges, list(horizons), tau_quantile)
        out = {"n": len(pred), "events": int(pred["event"].sum())}
    else:
        values, missing = classification_metrics(*class_scores(pred)) if len(pred) else classification_metrics([], np.zeros((0, 2)))
        out = {"n": len(pred)}
    out.update({k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in values.items()})
    for k, v in out.items():
        if v is None and k not in missing:
            missing[k] = "undefined on this set"
    out["missing"] = missing
    return out
