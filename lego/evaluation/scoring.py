"""Scoring a model's predictions: the evaluation settings and the two files every model ends as.

Every model -- LegoBlock, LegoMerge, LegoFuse, baseline, ensemble -- ends as the same two files,
``predictions.parquet`` (per patient and subset, labels merged in) and ``metrics.json``, so the
summary, the bootstrap and the figures treat them all alike.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from lego.errors import ConfigError
from lego.evaluation.metrics import score_subset
from lego.evaluation.names import METRICS_FILE, PREDICTIONS_FILE
from lego.io import write_json, write_parquet
from lego.settings import default, require


@dataclass
class EvalOptions:
    """Metric settings shared by every model (config section ``evaluation``: its defaults and ranges)."""

    horizons: list[float] = field(default_factory=lambda: default("evaluation.horizons"))
    tau_quantile: float = default("evaluation.tau_quantile")
    n_boot: int = default("evaluation.n_boot")
    ci: float = default("evaluation.ci")
    seed: int = default("evaluation.seed")

    def __post_init__(self) -> None:
        """Settings that would crash a metric deep in a job fail here, naming the key."""
        require("evaluation", asdict(self), "evaluation setting", ConfigError)

    @classmethod
    def from_json(cls, text: str | None) -> EvalOptions:
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


def write_evaluation(pred: dict[str, pd.DataFrame], labels: pd.DataFrame, ids: dict[str, list[str]], *, task: str,
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
    write_parquet(predictions, Path(out_dir) / PREDICTIONS_FILE)
    write_json(results, Path(out_dir) / METRICS_FILE)
    return results
