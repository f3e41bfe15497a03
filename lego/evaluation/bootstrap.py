"""Bootstrap intervals for the mean-over-folds of a headline metric, and for paired differences.

Each replicate resamples every fold's test patients with replacement (stratified by fold, so a
replicate has the same fold structure as the real run), scores each fold and averages the folds.
The percentile interval of those replicate means is the CI of the headline number in the table.
For a paired comparison both models are scored on the *same* resampled patients (those both
predict), so the interval is on the difference itself, not on two overlapping marginal intervals.

Harrell's C and (one-vs-rest) AUC are both ratios of sums over patient pairs, so a resample is a
vector of multiplicities ``w`` and its score is ``w' N w / w' D w`` for per-fold pair matrices N
(concordant, ties 1/2) and D (comparable). All replicates of a fold are then one matrix product;
with ``w = 1`` the pair formulas equal scikit-survival's and scikit-learn's (tested).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from lego.settings import default

TIED_TOL = 1e-8  # scikit-survival's tolerance for tied risks


def pair_matrices(frame: pd.DataFrame, task: str, prefix: str = "") -> list[tuple[np.ndarray, np.ndarray]]:
    """(N, D) pair matrices of one model's predictions: one pair for C, one per class for AUC."""
    if len(frame) == 0:
        return []  # a model that predicts nobody on this fold (e.g. a baseline that could not be fitted)
    if task == "survival":
        t, e = frame["time"].to_numpy(float), frame["event"].to_numpy(bool)
        r = frame[f"{prefix}risk"].to_numpy(float)
        comparable = e[:, None] & ((t[None, :] > t[:, None]) | ((t[None, :] == t[:, None]) & ~e[None, :]))
        diff = r[:, None] - r[None, :]
        concordant = np.where(np.abs(diff) <= TIED_TOL, 0.5, (diff > 0).astype(float))
        return [(comparable * concordant, comparable.astype(float))]
    cols = [c for c in frame.columns if c.startswith(f"{prefix}p_")]
    classes = [c.removeprefix(f"{prefix}p_") for c in cols]
    y = frame["label"].astype(str).to_numpy()
    scores = frame[cols].to_numpy(float)
    if len(classes) == 2:  # binary AUC: the positive (second) class only
        pos = y == classes[1]
        pairs = [(pos, scores[:, 1])]
    else:
        pairs = [(y == c, scores[:, k]) for k, c in enumerate(classes)]
    out = []
    for pos, s in pairs:
        den = (pos[:, None] & ~pos[None, :]).astype(float)
        diff = s[:, None] - s[None, :]
        out.append((den * np.where(diff == 0, 0.5, (diff > 0).astype(float)), den))
    return out


def _nanmean(a: np.ndarray, n: int) -> np.ndarray:
    """Mean over axis 0 ignoring NaN; NaN (no warning) where every entry is NaN."""
    if len(a) == 0:
        return np.full(n, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(a, axis=0)


def pair_score(mats: list[tuple[np.ndarray, np.ndarray]], w: np.ndarray) -> np.ndarray:
    """Scores for weight rows ``w`` (B, n): mean over the pair sets with a non-zero denominator."""
    w = np.atleast_2d(w)
    vals = []
    for num, den in mats:
        n = ((w @ num) * w).sum(axis=1)
        d = ((w @ den) * w).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            vals.append(np.where(d > 0, n / d, np.nan))
    return _nanmean(np.array(vals), len(w))


def _replicate_means(folds: list[list[list[tuple[np.ndarray, np.ndarray]]]], sizes: list[int], n_boot: int,
                     seed: int) -> np.ndarray:
    """(n_boot, n_models) mean over folds of each model's score; the same resample for all models."""
    rng = np.random.default_rng(seed)
    per_fold = []
    for mats_of_models, n in zip(folds, sizes):
        if n == 0:
            continue
        w = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)
        per_fold.append(np.stack([pair_score(m, w) for m in mats_of_models], axis=1))
    if not per_fold:
        return np.full((n_boot, len(folds[0]) if folds else 0), np.nan)
    return _nanmean(np.stack(per_fold), n_boot)  # over folds of (folds, B, models)


def _interval(reps: np.ndarray, level: float) -> tuple[float, float]:
    reps = reps[~np.isnan(reps)]
    if len(reps) < 10:
        return float("nan"), float("nan")
    lo, hi = np.quantile(reps, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def mean_ci(per_fold: list[pd.DataFrame], task: str, n_boot: int = default("evaluation.n_boot"),
            level: float = default("evaluation.ci"), seed: int = 0) -> tuple[float, float]:
    """Percentile CI of the mean-over-folds headline metric (one test-predictions frame per fold)."""
    mats = [[pair_matrices(f, task)] for f in per_fold]
    return _interval(_replicate_means(mats, [len(f) for f in per_fold], n_boot, seed)[:, 0], level)


def paired_difference(per_fold: list[pd.DataFrame], task: str, n_boot: int = default("evaluation.n_boot"),
                      level: float = default("evaluation.ci"), seed: int = 0) -> dict:
    """Model ``a_`` minus model ``b_`` (column prefixes) on shared patients: mean over folds, CI, P(a <= b).

    Each frame holds the shared test patients of one fold with labels and both models'
    predictions (``a_risk``/``b_risk`` or ``a_p_<class>``/``b_p_<class>``).
    """
    mats = [[pair_matrices(f, task, "a_"), pair_matrices(f, task, "b_")] for f in per_fold]
    sizes = [len(f) for f in per_fold]
    point = [pair_score(m[0], np.ones(n))[0] - pair_score(m[1], np.ones(n))[0] for m, n in zip(mats, sizes) if n]
    reps = _replicate_means(mats, sizes, n_boot, seed)
    d = reps[:, 0] - reps[:, 1] if reps.size else np.array([])
    lo, hi = _interval(d, level)
    d = d[~np.isnan(d)]
    point = np.array(point, float)
    return {
        "difference": float(np.nanmean(point)) if len(point) and not np.isnan(point).all() else float("nan"),
        "ci_low": lo,
        "ci_high": hi,
        "p_not_better": float(np.mean(d <= 0)) if len(d) >= 10 else float("nan"),  # as the interval: too few is no answer
    }
