"""Per-fold fitted preprocessing for tabular modalities (no leakage by construction).

``TabularTransform.fit`` sees only a fold's training patients; everything it learns (clip bounds,
medians, kept features, means, standard deviations, category vocabularies) is stored as plain JSON
next to the model and re-applied unchanged to validation and test patients.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from lego.errors import InputError
from lego.settings import default
from lego.tabular.feature_selection import univariate_scores

log = logging.getLogger(__name__)


def _preprocess(key: str):
    """A table's preprocessing default (config ``modalities.<name>.preprocess``)."""
    return default(f"table_modality.preprocess.{key}")


@dataclass
class TabularTransform:
    """Clip outliers -> impute -> variance filter -> standardise; one-hot for categoricals.

    ``clip_quantiles``: per-feature bounds at these training quantiles; ``clip_mad``: tighten them
    to median +- k robust standard deviations (1.4826 MAD) where the MAD is not zero -- quantiles
    alone cannot tame outliers such as BLCA's RNA values above 14000 when a few hundred training
    patients hold two of them (the 0.999 quantile then *is* an outlier, and standardising by an
    outlier-inflated deviation flattens the real signal); ``clip_abs``: an absolute bound applied
    after that; ``min_variance``: drop features (nearly) constant on train; ``max_features``: keep
    the most variable ones (unsupervised); ``select_k``: then keep the ``k`` features most
    associated with the outcome of the training patients (univariate Cox score or ANOVA F; see
    :mod:`lego.tabular.feature_selection`), which needs ``target`` in :meth:`fit`; ``binary_as_is``: 0/1
    features (mutations) are not standardised -- z-scoring a gene mutated in 1 of 300 patients
    turns its 1 into 17, so hypermutated tumours get huge, meaningless inputs.
    """

    clip_quantiles: tuple[float, float] | None = tuple(_preprocess("clip_quantiles"))
    clip_mad: float | None = _preprocess("clip_mad")
    clip_abs: float | None = _preprocess("clip_abs")
    min_variance: float = _preprocess("min_variance")
    max_features: int | None = _preprocess("max_features")
    select_k: int | None = _preprocess("select_k")
    standardise: bool = True
    binary_as_is: bool = _preprocess("binary_as_is")
    categorical: list[str] = field(default_factory=list)
    state: dict = field(default_factory=dict)

    @property
    def fitted(self) -> bool:
        return bool(self.state)

    def _categories(self) -> list[tuple[str, list[str]]]:
        """(column, vocabulary) in the order of ``categorical`` (a list, kept as written).

        Why not the state's dict order: a saved model's JSON is written with sorted keys, so a
        dict comes back alphabetical, and a model trained with its one-hot blocks in the listed
        order was evaluated with them permuted (measured: AIDS's four baseline categories, listed
        drug, gender, prevOI, AZT, gave a block 0.539 test C where Coxnet on the same table gave
        0.618; each model's own coefficients were right, its evaluation inputs were not)."""
        cats = self.state["categories"]
        return [(c, cats[c]) for c in self.categorical if c in cats] + [(c, v) for c, v in cats.items()
                                                                        if c not in self.categorical]

    @property
    def feature_names(self) -> list[str]:
        return list(self.state["numeric"]) + [f"{c}={v}" for c, vocab in self._categories() for v in vocab]

    def fit(self, df: pd.DataFrame, target: dict | None = None) -> TabularTransform:
        """Learn everything from ``df`` (training rows only); ``target`` holds their outcomes, row-aligned.

        ``target``: ``{"task": "survival", "time": ..., "event": ...}`` or
        ``{"task": "classification", "label": ...}``; needed only when ``select_k`` is set.
        """
        numeric = [c for c in df.columns if c != "patient_id" and c not in self.categorical]
        x = df[numeric].to_numpy(dtype=np.float64)
        if len(x) == 0:
            raise InputError("cannot fit a tabular transform on zero training patients")
        lo, hi = self._clip_bounds(x)
        x = self._clip(x, lo, hi)
        median = np.nan_to_num(np.nanmedian(x, axis=0), nan=0.0) if len(numeric) else np.zeros(0)
        x = np.where(np.isnan(x), median, x)
        keep, scores = self._selected(x, target)
        mean = x.mean(axis=0)
        std = np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0)
        if self.binary_as_is and len(numeric):
            binary = np.all((x == 0) | (x == 1), axis=0)
            mean, std = np.where(binary, 0.0, mean), np.where(binary, 1.0, std)
        idx = np.flatnonzero(keep)
        if not len(idx) and not self.categorical:
            raise InputError(f"no feature varies among the {len(x)} training patients (all {len(numeric)} column(s) "
                             f"constant or below preprocess.min_variance={self.min_variance}); check the table "
                             "or lower preprocess.min_variance")
        self.state = {
            "numeric": [numeric[i] for i in idx],
            "lo": lo[idx].tolist(),
            "hi": hi[idx].tolist(),
            "median": median[idx].tolist(),
            "mean": mean[idx].tolist() if self.standardise else [0.0] * len(idx),
            "std": std[idx].tolist() if self.standardise else [1.0] * len(idx),
            "categories": {c: sorted(df[c].dropna().astype(str).unique().tolist()) for c in self.categorical},
        }
        if scores is not None:
            self.state["selection_score"] = scores[idx].round(4).tolist()
        return self

    def _clip_bounds(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-column clipping bounds: the quantile range, narrowed to median +- clip_mad robust SDs."""
        n = x.shape[1]
        if self.clip_quantiles is not None and n:
            lo = np.nanquantile(x, self.clip_quantiles[0], axis=0)
            hi = np.nanquantile(x, self.clip_quantiles[1], axis=0)
        else:
            lo, hi = np.full(n, -np.inf), np.full(n, np.inf)
        lo, hi = np.nan_to_num(lo, nan=-np.inf), np.nan_to_num(hi, nan=np.inf)
        if self.clip_mad is not None and n:
            med = np.nanmedian(x, axis=0)
            scale = 1.4826 * np.nanmedian(np.abs(x - med), axis=0)
            robust = np.isfinite(scale) & (scale > 0)
            lo = np.where(robust, np.maximum(lo, med - self.clip_mad * scale), lo)
            hi = np.where(robust, np.minimum(hi, med + self.clip_mad * scale), hi)
        return lo, hi

    def _selected(self, x: np.ndarray, target: dict | None) -> tuple[np.ndarray, np.ndarray | None]:
        """Columns kept: variance above min_variance, the max_features most variable, then the
        select_k best by a univariate outcome score (training rows only); and those scores."""
        var = x.var(axis=0)
        keep = var > self.min_variance
        if self.max_features is not None and keep.sum() > self.max_features:
            order = np.argsort(-np.where(keep, var, -1), kind="stable")
            keep = np.zeros_like(keep)
            keep[order[: self.max_features]] = True
        if self.select_k is None or keep.sum() <= self.select_k:
            return keep, None
        if target is None:
            raise InputError("select_k needs the training patients' outcomes (target) to rank features")
        scores = univariate_scores(x, target)  # scale-free statistics: no need to standardise first
        order = np.argsort(-np.where(keep, scores, -1), kind="stable")
        keep = np.zeros_like(keep)
        keep[order[: self.select_k]] = True
        return keep, scores

    def _clip(self, x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        x = np.clip(x, lo, hi)
        if self.clip_abs is not None:
            x = np.clip(x, -self.clip_abs, self.clip_abs)
        return x

    def transform(self, df: pd.DataFrame) -> np.ndarray:
        """(n_patients, n_features) float32 in the fitted feature order."""
        if not self.fitted:
            raise RuntimeError("TabularTransform.transform called before fit")
        s = self.state
        missing = [c for c in s["numeric"] + list(s["categories"]) if c not in df.columns]
        if missing:
            raise InputError(
                f"table lacks {len(missing)} feature(s) the transform was fitted on (e.g. {missing[:3]}); "
                "the model was trained on a different feature set"
            )
        x = df[s["numeric"]].to_numpy(dtype=np.float64)
        _check_not_empty(x, s["numeric"])
        x = self._clip(x, np.asarray(s["lo"]), np.asarray(s["hi"]))
        x = np.where(np.isnan(x), np.asarray(s["median"]), x)
        x = (x - np.asarray(s["mean"])) / np.asarray(s["std"])
        parts = [x]
        for c, vocab in self._categories():
            values = df[c].astype("string").fillna("").to_numpy(dtype=object)  # a missing value: no category
            _check_known(c, values, vocab)
            parts.append(np.stack([(values == v) for v in vocab], axis=1).astype(np.float64) if vocab else np.zeros((len(df), 0)))
        return np.concatenate(parts, axis=1).astype(np.float32)

    def fit_transform(self, df: pd.DataFrame, target: dict | None = None) -> np.ndarray:
        return self.fit(df, target).transform(df)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["clip_quantiles"] = list(self.clip_quantiles) if self.clip_quantiles else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TabularTransform:
        d = dict(d)
        if d.get("clip_quantiles") is not None:
            d["clip_quantiles"] = tuple(d["clip_quantiles"])
        return cls(**d)


def _check_not_empty(x: np.ndarray, columns: list[str]) -> None:
    """A trained feature empty in every row of a table (of more than one patient) is an error, not
    a column of training medians: the model would predict without it and say nothing."""
    if len(x) < 2:
        return  # one patient's missing value is imputed, as at training
    empty = [c for c, e in zip(columns, np.isnan(x).all(axis=0)) if e]
    if empty:
        raise InputError(f"feature column(s) {empty[:3]}{' ...' if len(empty) > 3 else ''} are empty in all {len(x)} "
                         "rows; the model was trained with them: fill them in (or train without them)")


def _check_known(column: str, values: np.ndarray, vocab: list[str]) -> None:
    """Values of a categorical column the model never saw get no category; when no row has a known
    one, the table spells the categories differently (``1`` vs ``1.0``, ``007`` vs ``7``): an error."""
    given = values[values != ""]
    unknown = ~np.isin(given, vocab)
    if len(given) > 1 and unknown.all() and vocab:
        raise InputError(f"categorical column {column!r}: no value ({sorted(set(given))[:3]}) is one the model was "
                         f"trained on ({vocab[:5]}); write the categories as in training")
    if unknown.any():
        log.warning("categorical column %r: %d of %d values (e.g. %r) unseen in training get no category",
                    column, int(unknown.sum()), len(given), str(given[unknown][0]))
