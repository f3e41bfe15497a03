"""Metrics from scores (never from argmax labels): Harrell's C and (macro one-vs-rest) AUC."""

from __future__ import annotations

import numpy as np


def c_index(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's C (scikit-survival); NaN when undefined (no event, no comparable pair)."""
    from sksurv.exceptions import NoComparablePairException
    from sksurv.metrics import concordance_index_censored

    event = np.asarray(event).astype(bool)
    if event.sum() == 0 or len(event) < 2:
        return float("nan")
    try:
        return float(concordance_index_censored(event, np.asarray(time, float), np.asarray(risk, float))[0])
    except NoComparablePairException:
        return float("nan")


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Binary AUC from the positive-class score, or macro one-vs-rest AUC; NaN if one class only."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels)
    scores = np.asarray(scores, float)
    n_classes = scores.shape[1]
    present = np.unique(labels)
    if len(present) < 2:
        return float("nan")
    if n_classes == 2:
        return float(roc_auc_score(labels, scores[:, 1]))
    # Macro OvR over the classes present in this set (sklearn needs all columns to match them).
    per_class = [roc_auc_score(labels == k, scores[:, k]) for k in present]
    return float(np.mean(per_class))
