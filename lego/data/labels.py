"""Patient outcomes (survival time and event, or a class label) from a cohort table.

MCAT-style tables have one row per slide, so a patient can appear several times: identical rows
collapse to one; rows that disagree are an error naming the patient and the lines.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from lego.errors import InputError
from lego.settings import default
from lego.tabular.tables import read_table, stripped_text

log = logging.getLogger(__name__)


def _require(df: pd.DataFrame, path: Path, column: str, what: str) -> None:
    if column not in df.columns:
        shown = ", ".join(map(str, df.columns[:12])) + (" ..." if len(df.columns) > 12 else "")
        raise InputError(f"{path}: no {what} column {column!r} (columns: {shown}); fix cohort.labels in the config")


def _show(value) -> str:
    """repr of a cell value without numpy's type wrapper (2, not np.int64(2))."""
    return repr(value.item() if hasattr(value, "item") else value)


def _lines(df: pd.DataFrame, mask: pd.Series) -> str:
    pos = np.flatnonzero(mask.to_numpy())
    return ", ".join(str(p + 2) for p in pos[:8]) + (" ..." if len(pos) > 8 else "")


def _numeric(df: pd.DataFrame, path: Path, column: str, ids: pd.Series) -> pd.Series:
    if pd.api.types.is_timedelta64_dtype(df[column]) or pd.api.types.is_datetime64_any_dtype(df[column]):
        raise InputError(f"{path}: column {column!r} holds {df[column].dtype} values, not numbers; store the "
                         "follow-up as a number in one unit (e.g. months)")
    values = pd.to_numeric(df[column], errors="coerce")
    bad = values.isna() & df[column].notna()
    if bad.any():
        i = bad.idxmax()
        raise InputError(
            f"{path}: column {column!r} has non-numeric value {_show(df.at[i, column])} for patient {ids[i]} "
            f"(line {_lines(df, bad)}); correct or remove it"
        )
    return values


def ingest_labels(
    path: str | Path,
    task: str = default("cohort.task"),
    id_column: str = default("cohort.labels.id_column"),
    time_column: str = default("cohort.labels.time_column"),
    censorship_column: str | None = "censorship",
    event_column: str | None = None,
    label_column: str | None = None,
    *,
    intervals: bool = default("cohort.labels.intervals"),
    landmark: float | None = default("cohort.labels.landmark"),
) -> pd.DataFrame:
    """One row per patient: ``patient_id, time, event`` (survival) or ``patient_id, label``.

    ``event`` is 1 for an observed event, 0 for censored (converted from MCAT's censorship).
    ``intervals``: counting-process rows, the outcome from each patient's last interval.
    ``landmark``: only patients at risk after it, their time counted from it (see :func:`at_landmark`).
    """
    for key, value in (("landmark", landmark is not None), ("intervals", intervals)):
        if value and task != "survival":
            raise InputError(f"{path}: {key} is a survival setting; remove cohort.labels.{key} for a {task} task")
    path = Path(path)
    df = read_table(path, text_columns=(id_column,))
    _require(df, path, id_column, "patient ID")
    ids, no_id = stripped_text(df[id_column])
    if no_id.any():
        raise InputError(f"{path}: empty patient ID in column {id_column!r} at line {_lines(df, no_id)}")
    out = pd.DataFrame({"patient_id": ids.astype(str)})
    if task == "survival":
        _require(df, path, time_column, "survival time")
        time = _numeric(df, path, time_column, ids)
        bad = time.isna() | (time < 0) | ~np.isfinite(time.astype(float))
        if bad.any():
            i = bad.idxmax()
            raise InputError(
                f"{path}: survival time {time_column!r} is missing, negative or infinite for patient {ids[i]} "
                f"(value {_show(df.at[i, time_column])}, line {_lines(df, bad)}); correct the follow-up or drop the patient"
            )
        if censorship_column and event_column:
            raise InputError(f"{path}: both a censorship column ({censorship_column!r}) and an event column "
                             f"({event_column!r}) given; give one (censorship: 1 = censored; event: 1 = event)")
        status_col = censorship_column or event_column
        _require(df, path, status_col, "censorship" if censorship_column else "event")
        status = _numeric(df, path, status_col, ids)
        bad = ~status.isin([0, 1])
        if bad.any():
            i = bad.idxmax()
            raise InputError(
                f"{path}: column {status_col!r} must be 0 or 1 but is {_show(df.at[i, status_col])} for patient {ids[i]} "
                f"(line {_lines(df, bad)}); {'1 = censored, 0 = event' if censorship_column else '1 = event, 0 = censored'}"
            )
        out["time"] = time.astype(float).to_numpy()
        out["event"] = (1 - status if censorship_column else status).astype(int).to_numpy()
        if intervals:  # the last interval holds the outcome; earlier ones end alive and event-free
            out = out.sort_values(["patient_id", "time", "event"], kind="stable").drop_duplicates("patient_id", keep="last")
    else:
        _require(df, path, label_column, "class label")
        label, empty = stripped_text(df[label_column])  # "LumA " and "LumA" are one class
        if empty.any():
            raise InputError(f"{path}: class label {label_column!r} is empty at line {_lines(df, empty)}")
        if label.nunique() < 2:  # training refuses it (make_targets); a cohort only scored may be one subtype
            log.warning("%s: class label %r has one class (%r) in all %d rows: such a cohort can be scored by a "
                        "trained model, but not trained on (check cohort.labels.label_column)",
                        path, label_column, label.iloc[0], len(df))
        out["label"] = label.astype(str).to_numpy()
    out = _collapse(out, path)
    return at_landmark(out, landmark, path) if landmark is not None else out


def at_landmark(labels: pd.DataFrame, landmark: float, path: Path) -> pd.DataFrame:
    """The patients still at risk after ``landmark`` (time > landmark), their time counted from it.

    Why: a prediction made from what is known at the landmark (a series measured until then) is
    only meaningful for patients alive and event-free then; keeping earlier deaths, or counting
    time from the start, would score what the model could not have known."""
    at_risk = labels["time"] > landmark
    gone = labels[~at_risk]
    log.info("%s: landmark %g: %d of %d patients at risk after it (%d with an event and %d censored by then left out)",
             path, landmark, int(at_risk.sum()), len(labels), int(gone["event"].sum()), int((gone["event"] == 0).sum()))
    if not at_risk.any():
        raise InputError(f"{path}: no patient is at risk after the landmark {landmark:g} (the longest follow-up is "
                         f"{labels['time'].max():g}); set cohort.labels.landmark below it")
    out = labels[at_risk].copy()
    out["time"] = out["time"] - landmark
    return out.reset_index(drop=True)


def _collapse(out: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Merge repeated rows of a patient (MCAT: one row per slide); conflicting rows are an error."""
    value_cols = [c for c in out.columns if c != "patient_id"]
    n_distinct = out.groupby("patient_id", sort=False)[value_cols].nunique(dropna=False).max(axis=1)
    conflicting = n_distinct[n_distinct > 1]
    if len(conflicting):
        pid = conflicting.index[0]
        rows = out.index[out["patient_id"] == pid]
        raise InputError(
            f"{path}: patient {pid} has {len(rows)} rows with different outcomes (lines "
            f"{', '.join(str(r + 2) for r in rows)}); {len(conflicting)} patient(s) affected. Keep one row per patient"
        )
    return out.drop_duplicates("patient_id").sort_values("patient_id").reset_index(drop=True)


OUTCOME_COLUMNS = {"survival": ("time", "event"), "classification": ("label",)}


def censorship_column_of(censorship_column: str | None, event_column: str | None) -> str | None:
    """The censorship column to read: the one named, else MCAT's ``censorship`` unless an event column is named."""
    return censorship_column or (None if event_column else "censorship")


def source_outcome_columns(labels: dict) -> list[str]:
    """The columns of the user's labels table that hold outcomes (time, event or censorship, class
    label), from a ``cohort.labels`` config section: never a feature of any modality."""
    names = [labels.get(k) for k in ("time_column", "event_column", "label_column")]
    names.append(censorship_column_of(labels.get("censorship_column"), labels.get("event_column")))
    return [n for n in names if n]


def require_known_classes(labels: pd.DataFrame, classes: list[str], where: str) -> None:
    """Class labels a classifier was not trained on cannot be scored: one error naming them (an
    AUC over classes spelled differently, "1.0" for "1", failed deep in scikit-learn)."""
    given = labels["label"].dropna().astype(str)
    unknown = sorted(set(given) - set(map(str, classes)))
    if unknown:
        raise InputError(f"{where}: class label(s) {unknown[:3]} are not among the model's classes {list(classes)[:6]}; "
                         "write the labels as in training")


def require_outcomes(labels: pd.DataFrame, task: str, where: str, ids: list[str] | None = None) -> None:
    """The labels fit the model's task and cover every patient to be scored.

    Why: a classification table under a survival model failed as a KeyError, and test patients
    missing from the labels were scored as if they had no event (n counted, 0 events). The values
    themselves were checked when the table was read (``lego.io.read_frame`` -> check_labels_table)."""
    need = OUTCOME_COLUMNS.get(task, ())
    missing = [c for c in need if c not in labels.columns]
    if missing:
        held = next((t for t, cols in OUTCOME_COLUMNS.items() if all(c in labels.columns for c in cols)), None)
        raise InputError(f"{where}: a {task} model needs outcome column(s) {missing}; the labels hold "
                         f"{held + ' outcomes' if held else list(labels.columns)[:6]}. Give labels made for a {task} task")
    unlabelled = sorted(set(ids or ()) - set(labels["patient_id"].astype(str)))
    if unlabelled:
        raise InputError(f"{where}: {len(unlabelled)} of the {len(set(ids))} patients to score have no label "
                         f"(e.g. {', '.join(unlabelled[:3])}); use the labels table the folds were made from")


def check_labels_table(labels: pd.DataFrame, where: str) -> None:
    """Every labels table read back (``lego.io.read_frame``): one row per patient and valid outcome
    values for the outcome columns it holds (survival or class label)."""
    task = "survival" if {"time", "event"} <= set(labels.columns) else "classification"
    if task == "classification" and "label" in labels.columns:
        empty = labels["label"].isna() | (labels["label"].astype(str).str.strip() == "")
        if empty.any():
            raise InputError(f"{where}: patient {labels['patient_id'][empty].iloc[0]} has no class label; "
                             "make the table with `lego ingest-labels`")
    _require_valid_values(labels, task, where)


def _require_valid_values(labels: pd.DataFrame, task: str, where: str) -> None:
    """The outcome values a hand-made labels table could get wrong: one row per patient, finite
    non-negative times, events of 0 or 1. (``ingest-labels`` guarantees them; a table from elsewhere
    otherwise gave impossible metrics, e.g. 34 events among 30 patients.)"""
    dup = labels["patient_id"].astype(str).duplicated()
    if dup.any():
        raise InputError(f"{where}: patient {labels['patient_id'][dup].iloc[0]} has more than one row; "
                         "one row per patient (make the table with `lego ingest-labels`)")
    if task != "survival":
        return
    time = pd.to_numeric(labels["time"], errors="coerce")
    event = pd.to_numeric(labels["event"], errors="coerce")
    for bad, what in ((~np.isfinite(time) | (time < 0), "time must be a finite number >= 0"),
                      (~event.isin([0, 1]), "event must be 0 or 1")):
        if bad.any():
            column = "time" if what.startswith("time") else "event"
            raise InputError(f"{where}: {what}, but patient {labels['patient_id'][bad].iloc[0]} has "
                             f"{_show(labels[column][bad].iloc[0])}; make the table with `lego ingest-labels`")


def refuse_outcome_features(table: pd.DataFrame, labels: pd.DataFrame, where: str) -> None:
    """A model's input holding the outcome itself (the labels file given as ``--data``, or a table
    with the labels' time/event/label columns) trains on the answer: test C = 1.0, exit 0."""
    shared = [c for c in ("time", "event", "label") if c in table.columns and c in labels.columns]
    if not shared or "patient_id" not in table.columns:
        return
    both = table[["patient_id", *shared]].merge(labels[["patient_id", *shared]], on="patient_id", suffixes=("", "_y"))
    same = [c for c in shared if len(both) and (both[c].astype(str) == both[f"{c}_y"].astype(str)).all()]
    if same:
        raise InputError(f"{where}: column(s) {same} are the labels' outcome; a model must not read them "
                         "(is --data the labels file?). Give a modality table without the outcome")
