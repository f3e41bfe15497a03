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
