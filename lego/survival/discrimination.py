"""Metrics from scores (never from argmax labels): Harrell's C and (macro one-vs-rest) AUC."""

from __future__ import annotations

import numpy as np

TIE_RTOL = 5e-7  # ~4 float32 ulps of the largest score: below it, two scores differ by arithmetic only


def as_ties(scores: np.ndarray) -> np.ndarray:
    """Scores that differ by less than float32 arithmetic can tell apart made exactly equal.

    Why: models compute in float32, so identical inputs (every slide's patch features the same)
    give risks like -1.958392977715 and -1.958392858505; every metric would count that noise as
    an ordering (test C = 1.0 was measured). Sorted scores within ``TIE_RTOL`` of the largest
    magnitude *of the first score of their group* join it (no chaining: a run of small steps
    never merges scores further apart than the tolerance), and take that first value."""
    x = np.asarray(scores, float)
    if x.size < 2 or not np.isfinite(x).all():
        return x
    order = np.argsort(x, kind="stable")
    xs = x[order]
    tol = TIE_RTOL * float(np.abs(xs).max())
    close = np.flatnonzero(np.diff(xs) <= tol)  # only these neighbours can share a group
    if close.size == 0:
        return x
    out_sorted = xs.copy()
    start, last = 0.0, -1  # the open group's first value, and the index of its last member
    for i in close:  # ascending pairs (i, i + 1) of close neighbours
        if i != last:  # i opens a group
            start = xs[i]
        elif xs[i + 1] - start > tol:  # too far from the group's first value: i + 1 opens the next one
            start, last = xs[i + 1], i + 1
            continue
        out_sorted[i + 1], last = start, i + 1
    out = np.empty_like(x)
    out[order] = out_sorted
    return out


def c_index(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's C (scikit-survival); NaN when undefined (no event, no comparable pair)."""
    from sksurv.exceptions import NoComparablePairException
    from sksurv.metrics import concordance_index_censored

    event = np.asarray(event).astype(bool)
    if event.sum() == 0 or len(event) < 2:
        return float("nan")
    try:
        return float(concordance_index_censored(event, np.asarray(time, float), as_ties(risk))[0])
    except NoComparablePairException:
        return float("nan")


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Binary AUC from the positive-class score, or macro one-vs-rest AUC; NaN if one class only."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels)
    scores = np.apply_along_axis(as_ties, 0, np.asarray(scores, float)) if len(labels) else np.asarray(scores, float)
    n_classes = scores.shape[1]
    present = np.unique(labels)
    if len(present) < 2:
        return float("nan")
    if n_classes == 2:
        return float(roc_auc_score(labels, scores[:, 1]))
    # Macro OvR over the classes present in this set (sklearn needs all columns to match them).
    per_class = [roc_auc_score(labels == k, scores[:, k]) for k in present]
    return float(np.mean(per_class))
