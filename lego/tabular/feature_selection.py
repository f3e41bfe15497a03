"""Supervised univariate feature scores, for in-fold feature selection.

Small cohorts (a few hundred patients) with many noisy features (RNA, mutations) overfit any
network; keeping the ``k`` features most associated with the outcome *on the fold's training
patients* is the classic remedy. Scores are computed for all features at once (O(n * p)), so
20 000 genes cost well under a second:

* survival: the Cox partial-likelihood score test per feature, z^2 = U^2 / I (Breslow ties);
* classification: the one-way ANOVA F statistic (scikit-learn's ``f_classif``).
"""

from __future__ import annotations

import numpy as np

from lego.errors import InputError


def cox_score_z2(x: np.ndarray, time: np.ndarray, event: np.ndarray) -> np.ndarray:
    """Univariate Cox score statistic per column of ``x`` (n, p), evaluated at beta = 0."""
    time, event = np.asarray(time, float), np.asarray(event, bool)
    order = np.argsort(-time, kind="stable")  # descending: cumulative sums give risk sets
    x, time, event = x[order], time[order], event[order]
    n_risk = np.arange(1, len(time) + 1, dtype=float)
    s1 = np.cumsum(x, axis=0)
    s2 = np.cumsum(x * x, axis=0)
    # Tied times share the risk set of the earliest of them: use the last index of each tie block.
    last = np.searchsorted(-time, -time, side="right") - 1
    n_risk, s1, s2 = n_risk[last], s1[last], s2[last]
    mean = s1 / n_risk[:, None]
    var = s2 / n_risk[:, None] - mean * mean
    u = (x[event] - mean[event]).sum(axis=0)
    info = var[event].sum(axis=0)
    return np.where(info > 1e-12, u * u / np.maximum(info, 1e-12), 0.0)


def univariate_scores(x: np.ndarray, target: dict) -> np.ndarray:
    """Association of each column with the outcome; larger = more associated."""
    if target["task"] == "survival":
        if not np.asarray(target["event"]).any():
            raise InputError("feature selection needs at least one event among the training patients")
        return cox_score_z2(x, target["time"], target["event"])
    from sklearn.feature_selection import f_classif

    labels = np.asarray(target["label"])
    if len(np.unique(labels)) < 2:
        raise InputError("feature selection needs at least two classes among the training patients")
    with np.errstate(divide="ignore", invalid="ignore"):
        f, _ = f_classif(x, labels)
    return np.nan_to_num(f, nan=0.0, posinf=np.finfo(float).max)
