"""Discrete-time survival targets: bin edges fitted on a fold's training patients only.

Edges are the quartiles (``n_bins`` quantiles) of the *uncensored* training times, with the first
edge at 0 and the last at +inf so every time falls in a bin. When the training part of a fold
has no events, the documented fallback is the quantiles of all training times (a warning says so).
"""

from __future__ import annotations

import logging

import numpy as np

from lego.settings import default

log = logging.getLogger(__name__)


def fit_bins(time: np.ndarray, event: np.ndarray, n_bins: int = default("model.n_bins"), where: str = "") -> np.ndarray:
    """Bin edges (n_bins + 1 values, first 0, last inf) from training times and events."""
    time, event = np.asarray(time, float), np.asarray(event, int)
    source = time[event == 1]
    if len(source) < n_bins:
        log.warning("%s: only %d events among training patients; bin edges use all training times", where or "fold", len(source))
        source = time
    inner = np.quantile(source, np.linspace(0, 1, n_bins + 1)[1:-1])
    inner = np.maximum.accumulate(inner)  # ties keep edges non-decreasing
    return np.concatenate([[0.0], inner, [np.inf]])


def discretise(time: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index (0 .. n_bins-1) of each time: bin k holds edges[k] <= t < edges[k+1]."""
    idx = np.searchsorted(edges, np.asarray(time, float), side="right") - 1
    return np.clip(idx, 0, len(edges) - 2).astype(np.int64)


def baseline_hazard_logits(bins: np.ndarray, events: np.ndarray, n_bins: int) -> np.ndarray:
    """Logits of the per-bin hazards that fit these patients best with no features: the life table.

    Bin k's hazard is its events over the patients still at risk at its start (bin >= k), as the
    discrete loss counts them: a censored patient survives its own bin. Half an event and one
    patient are added so an empty bin gets a finite logit. What a survival head's bias starts at
    (``model.block.head_start``), so training spends its epochs on ranking patients, not on the
    baseline hazard."""
    bins, events = np.asarray(bins, int), np.asarray(events, int)
    events_in = np.array([((bins == k) & (events == 1)).sum() for k in range(n_bins)], float)
    at_risk = np.array([(bins >= k).sum() for k in range(n_bins)], float)
    hazard = np.clip((events_in + 0.5) / (at_risk + 1.0), 1e-4, 1 - 1e-4)
    return np.log(hazard / (1 - hazard))


def class_prior_logits(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Log class frequencies (half a patient added to each class): a classifier's bias with no features."""
    counts = np.bincount(np.asarray(labels, int), minlength=n_classes).astype(float) + 0.5
    return np.log(counts / counts.sum())

