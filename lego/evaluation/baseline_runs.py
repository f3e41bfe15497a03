"""The classical baselines of one input and fold, and the late-fusion ensemble of a fold's blocks,
each scored like every model (``predictions.parquet`` + ``metrics.json``)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lego.data.fold_data import fold_ids, make_targets
from lego.data.labels import require_outcomes
from lego.errors import InputError
from lego.evaluation.baselines import design_matrices, ensemble, fit_baseline
from lego.evaluation.names import ENSEMBLE, PREDICTIONS_FILE, baseline_name
from lego.evaluation.scoring import EvalOptions, fold_digest, write_evaluation
from lego.io import read_frame, read_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BaselineRun:
    """What ``run_baselines`` fits: the methods, the input's name (a modality or ``early``), the
    modalities it concatenates ({name: {"kind", "path", "categorical"?, "preprocess"?}})."""

    methods: list[str]
    source: str
    modalities: dict[str, dict]


def run_baselines(run: BaselineRun, *, labels: str, folds: str, fold: int, task: str, n_bins: int, opts: EvalOptions,
                  out_root: str, seed: int = 0) -> dict[str, dict]:
    """Fit baselines on one input (a modality, or ``early``: several) of one fold and evaluate each.

    The in-fold design matrices are built once and shared by the methods; each method writes
    ``<out_root>/<method>-<source>/fold<k>/{predictions.parquet,metrics.json}``.
    """
    lab, ids = read_frame(labels, "labels"), fold_ids(read_frame(folds, "folds"), fold)
    where = f"baselines on {run.source}, fold {fold}"
    require_outcomes(lab, task, f"{labels} ({where})", ids["train"] + ids["val"] + ids["test"])
    targets = make_targets(lab, ids["train"], task, n_bins, where)
    data = design_matrices(run.modalities, lab, ids, targets, seed, where)
    results = {}
    for method in run.methods:
        name = baseline_name(method, run.source)
        try:
            preds, chosen = fit_baseline(method, data, lab, targets, seed, f"{name}, fold {fold}")
        except (InputError, ArithmeticError) as e:
            # Documented fallback: a baseline that cannot be fitted on this fold (too few patients,
            # no event, a numerical failure) predicts nobody; every metric is missing with the reason.
            log.warning("%s", e)
            empty = pd.DataFrame({"patient_id": pd.Series([], dtype=str)})
            preds, chosen = {"test": empty, "val": empty}, {"method": method, "chosen": None, "failed": str(e)}
        extra = {"baseline": chosen, "modalities": sorted(run.modalities), "n_features": int(data["train"][1].shape[1])}
        results[name] = write_evaluation(preds, lab, ids, task=task, edges=targets.bins or None, opts=opts, name=name,
                                         fold=fold, out_dir=Path(out_root) / name / f"fold{fold}", extra=extra,
                                         not_fitted=chosen.get("failed"))
    return results


def _check_ensemble_rows(rows: list[dict]) -> None:
    if not rows:
        raise InputError("the ensemble needs at least one block's metrics.json")
    if len({r["fold"] for r in rows}) != 1:
        raise InputError(f"the ensemble's blocks come from different folds: {sorted({r['fold'] for r in rows})}")
    if len({json.dumps(r.get("bins")) for r in rows}) != 1:
        raise InputError("the ensemble's blocks use different survival bin edges "
                         f"({', '.join(r['model'] for r in rows)}); average blocks of one run and fold only")
    names = [r["model"] for r in rows]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:  # predictions are keyed by model name: a repeat would silently drop a block
        raise InputError(f"the ensemble is given model {repeated[0]!r} more than once ({len(rows)} metrics files); "
                         "give each block's metrics.json once, and evaluate different blocks under different names")


def run_ensemble(block_metrics: list[str], labels: str, folds: str, opts: EvalOptions, out_dir: str, name: str = ENSEMBLE) -> dict:
    """Late-fusion ensemble of one fold's evaluated blocks (their predictions.parquet files)."""
    rows = [read_json(f) for f in block_metrics]
    _check_ensemble_rows(rows)
    fold, task, edges = rows[0]["fold"], rows[0]["task"], rows[0].get("bins")
    preds = {r["model"]: pd.read_parquet(Path(f).with_name(PREDICTIONS_FILE)) for r, f in zip(rows, block_metrics)}
    label_cols = [c for c in ("time", "event", "label") if c in next(iter(preds.values())).columns]
    both = ensemble({m: p.drop(columns=label_cols) for m, p in preds.items()})
    lab, ids = read_frame(labels, "labels"), fold_ids(read_frame(folds, "folds"), fold)
    expected = fold_digest(ids)
    other = [f for r, f in zip(rows, block_metrics) if r.get("fold_digest") not in (None, expected)]
    if other:  # evaluated on another folds table (or cohort): its test patients are not this fold's
        raise InputError(f"{other[0]}: evaluated on other test/validation patients than fold {fold} of {folds}; "
                         "give the folds table the blocks were evaluated with")
    require_outcomes(lab, task, f"{labels} ({name}, fold {fold})", ids["test"] + ids["val"])
    per_subset = {s: both[both["subset"] == s].drop(columns="subset").reset_index(drop=True) for s in ("test", "val")}
    return write_evaluation(per_subset, lab, ids, task=task, edges=edges, opts=opts, name=name, fold=fold,
                            out_dir=out_dir, extra={"blocks": sorted(preds)})
