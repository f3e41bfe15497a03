"""Select, validate and type one tabular modality (mutation, CNV, RNA, clinical ...).

Only validation and typing happen here: the output keeps raw values. Anything fitted (scaling,
clipping, imputation, variance filters, category vocabularies) is fitted inside each fold on its
training patients by :class:`lego.tabular.transforms.TabularTransform`.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from lego.errors import InputError
from lego.settings import default
from lego.tabular.tables import read_table, stripped_text

log = logging.getLogger(__name__)


def select_columns(
    columns: list[str], id_column: str, include: str = default("table_modality.include"), exclude: list[str] | None = None,
    names: list[str] | None = None,
) -> list[str]:
    """Feature columns of a modality: explicit ``names``, else ``include`` minus ``exclude`` regexes."""
    if names:
        twice = sorted({c for c in names if names.count(c) > 1})
        if twice:
            raise InputError(f"columns {twice} listed more than once; list each feature column once")
        return [c for c in names if c != id_column]
    inc = _regex(include, "include")
    exc = [_regex(p, "exclude") for p in (exclude or [])]
    return [c for c in columns if c != id_column and inc.search(c) and not any(p.search(c) for p in exc)]


def _regex(pattern: str, what: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise InputError(f"{what} pattern {pattern!r} is not a valid regular expression ({exc}); "
                         "escape special characters such as ( [ with a backslash") from None


def _without_outcomes(feats: list[str], outcomes: set[str], named: set[str], where: str) -> list[str]:
    """The feature columns less the cohort's outcome columns; naming one explicitly is an error."""
    asked = sorted(outcomes & named)
    if asked:
        raise InputError(f"{where}: column(s) {asked} hold the cohort's outcome (cohort.labels); a model must not "
                         "read its answer: drop them from columns/categorical")
    dropped = [c for c in feats if c in outcomes]
    if dropped:
        log.warning("%s: left out the outcome column(s) %s (cohort.labels): a feature must not be the answer", where, dropped)
    return [c for c in feats if c not in outcomes]


def _check_named_columns(df: pd.DataFrame, where: str, modality: str, id_column: str, columns: list[str] | None,
                         categorical: list[str]) -> None:
    """The ID column and every column the config names are in the table (and the ID is the only one)."""
    if id_column not in df.columns:
        raise InputError(f"{where}: no ID column {id_column!r}; set modalities.{modality}.id_column")
    if id_column != "patient_id" and "patient_id" in df.columns:
        raise InputError(f"{where}: a 'patient_id' column besides the ID column {id_column!r}; "
                         f"set modalities.{modality}.id_column: patient_id if it is the ID, else rename or drop it")
    if id_column in categorical:  # one-hot patient IDs: a feature that identifies, never generalises
        raise InputError(f"{where}: the ID column {id_column!r} is listed as categorical; remove it from "
                         f"modalities.{modality}.categorical")
    absent = [c for c in categorical if c not in df.columns]
    if absent:
        raise InputError(f"{where}: categorical columns {absent} not in the table")
    missing = [c for c in (columns or []) + categorical if c not in df.columns] if columns else []
    if missing:
        raise InputError(f"{where}: columns {missing} not in the table")


def prepare_modality(
    path: str | Path,
    modality: str,
    *,
    id_column: str = default("table_modality.id_column"),
    include: str = default("table_modality.include"),
    exclude: list[str] | None = None,
    columns: list[str] | None = None,
    categorical: list[str] | None = None,
    outcomes: list[str] | None = None,
) -> pd.DataFrame:
    """One row per patient with ``patient_id`` and the modality's typed feature columns.

    ``exclude``: regexes of columns to leave out (None: the config's default, MCAT's metadata
    columns; ``[]``: none). ``outcomes``: the cohort's outcome columns (time, event or censorship,
    class label). They are never features: a modality read from the labels' own table would
    otherwise learn the answer (measured: a clinical table holding ``OS_months``/``OS_event``
    scored test C 0.98)."""
    path = Path(path)
    exclude = default("table_modality.exclude") if exclude is None else exclude
    df = read_table(path, text_columns=(id_column,))
    categorical = list(categorical or [])
    _check_named_columns(df, f"{path}: modality {modality!r}", modality, id_column, columns, categorical)
    feats = select_columns(list(map(str, df.columns)), id_column, include, exclude, columns)
    feats += [c for c in categorical if c not in feats]
    feats = _without_outcomes(feats, set(outcomes or []) - {id_column}, set(columns or []) | set(categorical),
                              f"{path}: modality {modality!r}")
    if not feats:
        raise InputError(
            f"{path}: modality {modality!r} selects no column (include={include!r}, exclude={exclude}); "
            f"first columns are {list(df.columns[:8])}"
        )
    raw_ids, no_id = stripped_text(df[id_column])
    if no_id.any():
        lines = ", ".join(str(i + 2) for i in np.flatnonzero(no_id.to_numpy())[:5])
        raise InputError(f"{path}: modality {modality!r}: {int(no_id.sum())} row(s) without a patient ID in column "
                         f"{id_column!r} (line {lines}); fill the ID or drop the row")
    ids = raw_ids.astype(str)
    numeric = [c for c in feats if c not in categorical]
    raw = df[numeric].apply(lambda col: col.astype(int) if col.dtype == bool else col)
    values = raw.apply(pd.to_numeric, errors="coerce")
    bad = values.isna() & raw.notna()
    if bad.to_numpy().any():
        row, col = (int(a[0]) for a in np.nonzero(bad.to_numpy()))
        c = numeric[col]
        raise InputError(
            f"{path}: modality {modality!r}, column {c!r}: non-numeric value {raw.iat[row, col]!r} for patient "
            f"{ids.iloc[row]} (line {row + 2}); fix the value, or list the column under "
            f"modalities.{modality}.categorical if it is a category"
        )
    _refuse_infinite(values, ids, path, modality)
    parts = [ids.rename("patient_id"), values.astype(np.float32)]
    parts += [df[c].astype("string") for c in categorical]
    out = pd.concat(parts, axis=1)
    return _one_row_per_patient(out, path, modality)


def _refuse_infinite(values: pd.DataFrame, ids: pd.Series, path: Path, modality: str) -> None:
    """An infinite value is a broken export, not a measurement: name the cell instead of carrying it."""
    inf = np.isinf(values.to_numpy(dtype=np.float64, na_value=np.nan))
    if inf.any():
        row, col = (int(a[0]) for a in np.nonzero(inf))
        raise InputError(f"{path}: modality {modality!r}, column {values.columns[col]!r}: infinite value for patient "
                         f"{ids.iloc[row]} (line {row + 2}; {int(inf.sum())} cell(s) in all); replace it with a "
                         "number, or leave it empty to mark it missing")


def _one_row_per_patient(out: pd.DataFrame, path: Path, modality: str) -> pd.DataFrame:
    feats = [c for c in out.columns if c != "patient_id"]
    dup = out["patient_id"].duplicated(keep=False)
    if dup.any():
        per = out[dup].groupby("patient_id")[feats].nunique(dropna=False).max(axis=1)
        bad = per[per > 1]
        if len(bad):
            raise InputError(
                f"{path}: modality {modality!r}: patient {bad.index[0]} has rows with different values "
                f"({len(bad)} patient(s) affected); keep one row per patient"
            )
        out = out.drop_duplicates("patient_id")
    present = out[feats].notna().any(axis=1)  # a row of only missing values means "no data"
    if len(out) and not present.any():  # said here, not as "zero patients" steps later
        raise InputError(f"{path}: modality {modality!r}: every selected cell is empty ({len(out)} rows, "
                         f"{len(feats)} column(s)); no patient has this modality. Check the file and the column selection")
    return out[present].sort_values("patient_id").reset_index(drop=True)
