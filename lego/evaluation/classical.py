"""The classical baselines' registry: adding a baseline is one entry here (plus its test).

Every name the CLI, the config schema, the workflow and the summary know comes from
:data:`CLASSICAL`. Light at import (scikit-learn and scikit-survival load inside the fitters), so
the CLI's argument parser and the Snakefile read the names without paying for the models.

A fitter takes the fold's training matrix, its targets (a scikit-survival structured array for
survival, class indices for classification) and the seed, and returns one fitted model per
hyper-parameter value, as ``(label, fitted estimator, predict keyword arguments)``; the fitting
code chooses among them on the fold's validation patients. A survival estimator needs
``predict`` (a risk) and ``predict_survival_function``; a classifier ``predict_proba``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Options = list[tuple[str, Any, dict]]
Fitter = Callable[[Any, Any, int], Options]


@dataclass(frozen=True)
class Classical:
    """One classical baseline: its task, its fitter, and whether runs fit it unless
    ``evaluation.baselines`` names the ones wanted (a costly or experimental model: False)."""

    task: str
    fit: Fitter
    default: bool = True


def _coxnet(x, y, seed: int) -> Options:
    """One elastic-net path (l1 ratio 0.5, 30 penalties); each penalty is a candidate."""
    from sksurv.linear_model import CoxnetSurvivalAnalysis

    est = CoxnetSurvivalAnalysis(l1_ratio=0.5, alpha_min_ratio=0.01, n_alphas=30, fit_baseline_model=True).fit(x, y)
    return [(f"alpha={a:.4g}", est, {"alpha": a}) for a in est.alphas_]


def _rsf(x, y, seed: int) -> Options:
    from sksurv.ensemble import RandomSurvivalForest

    return [(f"min_samples_leaf={m}", RandomSurvivalForest(n_estimators=100, min_samples_leaf=m, max_features="sqrt",
                                                           n_jobs=1, random_state=seed).fit(x, y), {}) for m in (5, 15, 30)]


def _rf(x, y, seed: int) -> Options:
    from sklearn.ensemble import RandomForestClassifier

    return [(f"min_samples_leaf={m}", RandomForestClassifier(n_estimators=100, min_samples_leaf=m,
                                                             random_state=seed).fit(x, y), {}) for m in (1, 5, 15)]


def _logreg(x, y, seed: int) -> Options:
    from sklearn.linear_model import LogisticRegression

    return [(f"C={c}", LogisticRegression(C=c, penalty="elasticnet", l1_ratio=0.5, solver="saga", max_iter=5000,
                                          random_state=seed).fit(x, y), {}) for c in (0.01, 0.1, 1.0, 10.0)]


CLASSICAL: dict[str, Classical] = {
    "coxnet": Classical("survival", _coxnet),
    "rsf": Classical("survival", _rsf),
    "logreg": Classical("classification", _logreg),
    "rf": Classical("classification", _rf),
}
