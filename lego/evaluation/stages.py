"""Evaluation stages: score predictions, fit baselines, build the ensemble, summarise all models.

Every model -- LegoBlock, LegoMerge, LegoFuse, baseline, ensemble -- ends as the same two files,
``predictions.parquet`` (per patient and subset, labels merged in) and ``metrics.json``, so the
summary, the bootstrap and the figures treat them all alike.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from lego.data.fold_data import fold_ids, make_targets
from lego.data.labels import require_outcomes
from lego.errors import ConfigError, InputError
from lego.evaluation.baselines import design_matrices, ensemble, fit_baseline
from lego.evaluation.metrics import score_subset
from lego.evaluation.names import baseline_name
from lego.io import read_frame, read_json, write_json, write_parquet

log = logging.getLogger(__name__)


@dataclass
class EvalOptions:
    """Metric settings shared by every model (config section ``evaluation``)."""

    horizons: list[float] = field(default_factory=lambda: [12.0, 36.0, 60.0])
    tau_quantile: float = 0.8
    n_boot: int = 1000
    ci: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        """Settings that would crash a metric deep in a job fail here, naming the key."""
        num = (int, float)
        horizons_ok = isinstance(self.horizons, list) and all(isinstance(h, num) and h > 0 for h in self.horizons)
        checks = {"horizons": horizons_ok,
                  "tau_quantile": isinstance(self.tau_quantile, num) and 0 < self.tau_quantile <= 1,
                  "n_boot": isinstance(self.n_boot, int) and not isinstance(self.n_boot, bool) and self.n_boot >= 10,
                  "ci": isinstance(self.ci, num) and 0 < self.ci < 1,
                  "seed": isinstance(self.seed, int) and not isinstance(self.seed, bool) and self.seed >= 0}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(f"evaluation setting {bad[0]}={getattr(self, bad[0])!r} is not valid (horizons: positive "
                              "times; tau_quantile in (0, 1]; n_boot >= 10 (the schema's minimum: fewer give no interval); ci in (0, 1); seed an integer >= 0)")

    @classmethod
    def from_json(cls, text: str | None) -> "EvalOptions":
        """Options from the ``--evaluation`` JSON; unknown keys are refused (a typo must not fall back)."""
        if not text:
            return cls()
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ConfigError(f"--evaluation must be a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"unknown evaluation setting(s) {unknown}; known: {', '.join(cls.__dataclass_fields__)}")
        return cls(**data)


def fold_digest(ids: dict[str, list[str]]) -> str:
    """Which test and validation patients a fold has (a digest): models evaluated on another folds
    table must not be summarised, paired or ensembled as one fold."""
    text = "|".join(",".join(sorted(map(str, ids[s]))) for s in ("test", "val"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_evaluation(pred: dict[str, pd.DataFrame], labels: pd.DataFrame, ids: dict[str, list[str]], task: str,
                     edges: list[float] | None, opts: EvalOptions, name: str, fold: int, out_dir: str | Path,
                     extra: dict | None = None, not_fitted: str | None = None) -> dict:
    """Score ``pred`` (subset -> predictions) on test and validation and write both files.

    ``not_fitted``: why the model has no predictions; it becomes every metric's missing reason.
    """
    train = labels[labels["patient_id"].isin(ids["train"])]
    results = {"model": name, "fold": int(fold), "task": task, "bins": list(edges) if edges else None,
               "fold_digest": fold_digest(ids), **(extra or {})}
    frames = []
    for subset in ("test", "val"):
        p = pred[subset].merge(labels, on="patient_id", how="left")
        results[subset] = score_subset(p, task, train, edges, opts.horizons, opts.tau_quantile)
        if not_fitted:
            results[subset]["missing"] = {k: f"not fitted: {not_fitted}" for k in results[subset]["missing"]}
        frames.append(p.assign(subset=subset))
    predictions = pd.concat(frames, ignore_index=True)
    predictions.insert(1, "subset", predictions.pop("subset"))
    write_parquet(predictions, Path(out_dir) / "predictions.parquet")
    write_json(results, Path(out_dir) / "metrics.json")
    return results


def run_baselines(methods: list[str], source: str, modalities: dict[str, dict], labels: str, folds: str, fold: int,
                  task: str, n_bins: int, opts: EvalOptions, out_root: str, seed: int = 0) -> dict[str, dict]:
    """Fit baselines on one input (a modality, or ``early``: several) of one fold and evaluate each.

    The in-fold design matrices are built once and shared by the methods; each method writes
    ``<out_root>/<method>-<source>/fold<k>/{predictions.parquet,metrics.json}``.
    """
    lab, ids = read_frame(labels, "labels"), fold_ids(read_frame(folds, "folds"), fold)
    where = f"baselines on {source}, fold {fold}"
    require_outcomes(lab, task, f"{labels} ({where})", ids["train"] + ids["val"] + ids["test"])
    targets = make_targets(lab, ids["train"], task, n_bins, where)
    data = design_matrices(modalities, lab, ids, targets, seed, where)
    results = {}
    for method in methods:
        name = baseline_name(method, source)
        try:
            preds, chosen = fit_baseline(method, data, lab, targets, seed, f"{name}, fold {fold}")
        except (InputError, ArithmeticError) as e:
            # Documented fallback: a baseline that cannot be fitted on this fold (too few patients,
            # no event, a numerical failure) predicts nobody; every metric is missing with the reason.
            log.warning("%s", e)
            empty = pd.DataFrame({"patient_id": pd.Series([], dtype=str)})
            preds, chosen = {"test": empty, "val": empty}, {"method": method, "chosen": None, "failed": str(e)}
        failed = chosen.get("failed")
        extra = {"baseline": chosen, "modalities": sorted(modalities), "n_features": int(data["train"][1].shape[1])}
        results[name] = write_evaluation(preds, lab, ids, task, targets.bins or None, opts, name, fold,
                                         Path(out_root) / name / f"fold{fold}", extra, failed)
    return results


def run_ensemble(block_metrics: list[str], labels: str, folds: str, opts: EvalOptions, out_dir: str, name: str = "ensemble") -> dict:
    """Late-fusion ensemble of one fold's evaluated blocks (their predictions.parquet files)."""
    rows = [read_json(f) for f in block_metrics]
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
    fold, task, edges = rows[0]["fold"], rows[0]["task"], rows[0].get("bins")
    preds = {r["model"]: pd.read_parquet(Path(f).with_name("predictions.parquet")) for r, f in zip(rows, block_metrics)}
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
    return write_evaluation(per_subset, lab, ids, task, edges, opts, name, fold, out_dir, {"blocks": sorted(preds)})

