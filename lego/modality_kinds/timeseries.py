"""The ``timeseries`` kind: repeated measurements per patient (vital signs, lab values, CD4 counts).

Input: a long table, one row per patient and measurement time (``time_column``) with one column
per variable, missing cells allowed -- the counting-process format of longitudinal cohorts is such
a table (the interval's start is when its covariates were measured). An **observation window**
``[window_from, window_to]`` (the table's time unit) is cut at preparation: a measurement after
``window_to`` never reaches the prepared file, so no model can read it. In a survival task the
window must end by the cohort's landmark (``cohort.labels.landmark``), after which the patients
still at risk are followed (landmarking).

Prepared file: ``patient_id, time`` (time from the window's end, so <= 0) and the variables.

Per fold (fitted on the training patients' measurements only): each variable's mean and standard
deviation, and the time scale. A patient becomes a bag of time steps, in time order; each step is
``[values, measured, time encoding]``:

* values: standardised; a variable not measured at a step carries its last measurement forward
  (0 -- the training mean -- before its first), so every step holds the latest known state;
* measured: 1 where the variable was measured at that step, 0 where carried (irregular sampling
  and missingness are visible to the model, not imputed away);
* time: tau = time / scale (scale: the training patients' longest look-back) with sin/cos of
  pi*tau and 2*pi*tau, so attention pooling (``abmil``, order-free) knows when a step was taken;
  ``gru`` reads the steps in order.

The classical models (Coxnet, RSF) read per-variable summaries of the same steps: last value,
mean of the measurements, least-squares slope over tau, and log(1 + number of measurements).
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from lego.cli.declare import Command, command, opt
from lego.errors import InputError
from lego.modality_kinds import ModalityKind, Preparation, register
from lego.settings import default
from lego.tabular.modality import _refuse_infinite, _without_outcomes, select_columns
from lego.tabular.tables import read_table, stripped_text

log = logging.getLogger(__name__)

TIME_FEATURES = 5  # tau, sin(pi tau), cos(pi tau), sin(2 pi tau), cos(2 pi tau)
SUMMARIES = ("last", "mean", "slope", "log_n")  # per variable, for the classical models

SETTINGS = {
    "time_column": {"type": "string", "default": "time",
                    "description": "Column holding each measurement's time (the table's time unit; in counting-process "
                                   "files the interval's start)."},
    "window_from": {"type": ["number", "null"], "default": None,
                    "description": "First time of the observation window (null: from the first measurement)."},
    "window_to": {"type": ["number", "null"], "default": None,
                  "description": "Last time of the observation window: measurements after it are dropped when the "
                                 "modality is prepared. Required; in a survival task at most cohort.labels.landmark."},
    # The table family's per-fold preprocessing and categories do not apply to a series: refused, not ignored.
    "preprocess": {"not": {}, "description": "not for a series (its variables are standardised in each fold)"},
    "categorical": {"not": {}, "description": "not for a series (categorical covariates go in a tabular modality)"},
}


# ---------------------------------------------------------------------------------- preparation


def _window(time: pd.Series, window_from: float | None, window_to: float) -> pd.Series:
    """Rows measured inside ``[window_from, window_to]``."""
    inside = time <= window_to
    return inside & (time >= window_from) if window_from is not None else inside


def _times(df: pd.DataFrame, column: str, ids: pd.Series, where: str) -> pd.Series:
    """The time column as numbers; a missing or non-numeric time names its row."""
    if column not in df.columns:
        raise InputError(f"{where}: no time column {column!r}; set the modality's time_column")
    time = pd.to_numeric(df[column], errors="coerce")
    bad = time.isna() | ~np.isfinite(time.astype(float))
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(f"{where}: time {df[column].iloc[i]!r} of patient {ids.iloc[i]} (line {i + 2}) is not a finite "
                         f"number; fix it or drop the row ({int(bad.sum())} row(s) affected)")
    return time.astype(float)


def _variables(df: pd.DataFrame, where: str, spec: dict) -> list[str]:
    """The numeric variable columns: ``columns``, else ``include`` minus ``exclude``, never the ID,
    the time or an outcome column."""
    if spec["categorical"]:
        raise InputError(f"{where}: a time series takes numeric variables; put categorical covariates "
                         f"{spec['categorical']} in a tabular modality")
    missing = [c for c in spec["columns"] or [] if c not in df.columns]
    if missing:
        raise InputError(f"{where}: columns {missing} not in the table")
    feats = select_columns(list(map(str, df.columns)), spec["id_column"], spec["include"], spec["exclude"], spec["columns"])
    if spec["time_column"] in (spec["columns"] or []):
        raise InputError(f"{where}: the time column {spec['time_column']!r} is listed under columns; it is when each row "
                         "was measured, not a variable: remove it from columns")
    feats = [c for c in feats if c != spec["time_column"]]
    feats = _without_outcomes(feats, set(spec["outcomes"]), set(spec["columns"] or []), where)
    if not feats:
        raise InputError(f"{where}: no variable column selected; list them under the modality's columns "
                         f"(first columns are {list(df.columns[:8])})")
    return feats


def _numeric(df: pd.DataFrame, feats: list[str], ids: pd.Series, path: Path, modality: str) -> pd.DataFrame:
    """The variables as float32; a non-numeric or infinite cell names its row."""
    where = f"{path}: modality {modality!r}"
    values = df[feats].apply(pd.to_numeric, errors="coerce")
    bad = values.isna() & df[feats].notna()
    if bad.to_numpy().any():
        row, col = (int(a[0]) for a in np.nonzero(bad.to_numpy()))
        raise InputError(f"{where}: column {feats[col]!r}: non-numeric value {df[feats[col]].iloc[row]!r} for patient "
                         f"{ids.iloc[row]} (line {row + 2}); a series variable is a number (categorical covariates go "
                         f"in a tabular modality), or leave the cell empty")
    _refuse_infinite(values, ids, path, modality)
    return values.astype(np.float32)


def _one_row_per_time(out: pd.DataFrame, where: str) -> pd.DataFrame:
    """Rows of one patient and time merged (long tables often put each variable on its own row);
    two different values of one variable at one time are an error."""
    feats = [c for c in out.columns if c not in ("patient_id", "time")]
    per = out.groupby(["patient_id", "time"], sort=True)[feats]
    distinct = per.nunique()
    clash = (distinct > 1).to_numpy()
    if clash.any():
        row, col = (int(a[0]) for a in np.nonzero(clash))
        pid, t = distinct.index[row]
        raise InputError(f"{where}: patient {pid} has two different values of {feats[col]!r} at time {t:g} (from the "
                         "window's end); keep one")
    return per.first().reset_index()


def prepare_series(path: str | Path, modality: str, *, window_to: float | None, window_from: float | None = None,
                   time_column: str = SETTINGS["time_column"]["default"], id_column: str = default("table_modality.id_column"),
                   include: str = default("table_modality.include"),
                   exclude: list[str] | None = None, columns: list[str] | None = None,
                   categorical: list[str] | None = None, outcomes: list[str] | None = None) -> pd.DataFrame:
    """The measurements inside the observation window: ``patient_id, time`` (from the window's end,
    <= 0) and the numeric variables, one row per patient and time, sorted."""
    where = f"{path}: modality {modality!r}"
    if window_to is None:
        raise InputError(f"{where}: a time series needs the end of its observation window; set "
                         f"modalities.{modality}.window_to")
    if window_from is not None and window_from > window_to:
        raise InputError(f"{where}: window_from {window_from:g} is after window_to {window_to:g}; swap them")
    df = read_table(Path(path), text_columns=(id_column,))
    if id_column not in df.columns:
        raise InputError(f"{where}: no ID column {id_column!r}; set modalities.{modality}.id_column")
    ids, no_id = stripped_text(df[id_column])
    if no_id.any():
        raise InputError(f"{where}: {int(no_id.sum())} row(s) without a patient ID (line "
                         f"{int(np.flatnonzero(no_id.to_numpy())[0]) + 2}); fill the ID or drop the row")
    spec = {"id_column": id_column, "time_column": time_column, "include": include, "exclude": exclude or [],
            "columns": columns, "categorical": list(categorical or []), "outcomes": [c for c in outcomes or [] if c != id_column]}
    feats = _variables(df, where, spec)
    time = _times(df, time_column, ids, where)
    values = _numeric(df, feats, ids, Path(path), modality)
    keep = _window(time, window_from, window_to) & values.notna().any(axis=1).to_numpy()
    out = pd.concat([ids.astype(str).rename("patient_id"), (time - window_to).rename("time"), values], axis=1)[keep]
    if out.empty:
        raise InputError(f"{where}: no measurement of {feats} inside the window [{window_from}, {window_to:g}] (times "
                         f"run from {time.min():g} to {time.max():g}, {int(values.notna().any(axis=1).sum())} row(s) "
                         "with a value); check window_from/window_to, time_column and columns")
    log.info("%s: %d of %d rows inside the window, %d patients, variables %s", where, len(out), len(df),
             out["patient_id"].nunique(), feats)
    return _one_row_per_time(out.reset_index(drop=True), where)


@command("prepare-timeseries", "Cut one time-series modality to its observation window; write a long parquet table.")
class PrepareTimeseries(Command):
    table: str = opt("long table (CSV, TSV or parquet): one row per patient and measurement time", required=True)
    modality: str = opt("modality name (as in the config)", required=True)
    id_column: str = opt("column holding the patient ID (read as text)", setting="table_modality.id_column")
    time_column: str = opt(SETTINGS["time_column"]["description"], default=SETTINGS["time_column"]["default"])
    window_from: float = opt(SETTINGS["window_from"]["description"], kind=float)
    window_to: float = opt(SETTINGS["window_to"]["description"], kind=float, required=True)
    include: str = opt(setting="table_modality.include")
    exclude: list = opt(setting="table_modality.exclude")
    columns: list = opt(setting="table_modality.columns", default=None)
    categorical: list = opt(setting="table_modality.categorical")
    outcome_columns: list = opt("the cohort's outcome columns (time, event/censorship, label): never variables",
                                many=True)
    out: str = opt("the modality's parquet to write", required=True, output=True)

    def run(self) -> None:
        from lego.io import write_parquet

        df = prepare_series(self.table, self.modality, window_to=self.window_to, window_from=self.window_from,
                            time_column=self.time_column, id_column=self.id_column, include=self.include,
                            exclude=self.exclude, columns=self.columns, categorical=self.categorical,
                            outcomes=self.outcome_columns)
        write_parquet(df, self.out, metadata={"modality": self.modality, "source": str(self.table),
                                               "window": [self.window_from, self.window_to]})


def check_window(name: str, spec: dict, config: dict) -> str | None:
    """A series needs a window end; in a survival task it must end by the cohort's landmark."""
    to = spec.get("window_to")
    if to is None:
        return f"config key 'modalities.{name}.window_to': a time series needs the end of its observation window"
    if config["cohort"]["task"] != "survival":
        return None
    landmark = config["cohort"]["labels"].get("landmark")
    if landmark is None:
        return (f"config key 'cohort.labels.landmark': modality {name!r} is a time series; set the landmark (e.g. "
                f"{to:g}, its window's end) so that survival is predicted for the patients at risk then, from then on")
    if to > landmark:
        return (f"config key 'modalities.{name}.window_to': {to:g} is after the landmark {landmark:g}; measurements "
                "after the landmark carry the outcome (set window_to <= landmark)")
    return None


# ---------------------------------------------------------------------------------- per fold


def _steps(group: pd.DataFrame, variables: list[str], mean: np.ndarray, std: np.ndarray, scale: float,
           max_steps: int) -> np.ndarray:
    """One patient's bag: (steps, 2V + TIME_FEATURES), the last ``max_steps`` steps."""
    raw = group[variables].to_numpy(np.float64)
    measured = ~np.isnan(raw)
    z = (raw - mean) / std
    carried = pd.DataFrame(np.where(measured, z, np.nan)).ffill().fillna(0.0).to_numpy()
    tau = group["time"].to_numpy(np.float64) / scale
    enc = [tau, np.sin(math.pi * tau), np.cos(math.pi * tau), np.sin(2 * math.pi * tau), np.cos(2 * math.pi * tau)]
    bag = np.concatenate([carried, measured.astype(np.float64), np.stack(enc, 1)], axis=1).astype(np.float32)
    return bag[-max_steps:] if max_steps else bag


def fit_series(table: pd.DataFrame, train_set: set[str], opts: dict):
    """Each variable's mean and standard deviation over the training patients' measurements, and
    their longest look-back as the time scale."""
    variables = [c for c in table.columns if c not in ("patient_id", "time")]
    train = table[table["patient_id"].isin(train_set)]
    if train.empty:
        raise InputError(f"{opts['where']}: modality {opts['name']!r} has zero training patients in this fold")
    values = train[variables].to_numpy(np.float64)
    with warnings.catch_warnings():  # a variable never measured in training: mean 0, scale 1 (always carried 0)
        warnings.simplefilter("ignore", RuntimeWarning)
        mean, std = np.nan_to_num(np.nanmean(values, 0)), np.nan_to_num(np.nanstd(values, 0))
    if not (std > 1e-8).any() and train["time"].nunique() < 2:  # as for tables and slides
        raise InputError(f"{opts['where']}: modality {opts['name']!r}: no variable varies among the training patients' "
                         "measurements, nor do their times; the series carries no information")
    std = np.where(std > 1e-8, std, 1.0)
    scale = float(max(-train["time"].min(), 1e-8)) if train["time"].min() < 0 else 1.0
    state = {"variables": variables, "mean": mean.tolist(), "std": std.tolist(), "time_scale": scale,
             "max_steps": opts["max_patches"]}
    return apply_series(opts["name"], opts["kind"], table, state, opts["seed"])


def apply_series(name: str, kind: str, table: pd.DataFrame, state: dict, seed: int):
    """A saved fit applied to the prepared table: one bag of time steps per patient."""
    import torch

    from lego.data.tensors import ModalityTensors

    variables = state["variables"]
    found = [c for c in table.columns if c not in ("patient_id", "time")]
    if found != variables:
        raise InputError(f"modality {name!r}: the series has variables {found} but the model was trained on {variables}; "
                         "prepare it with the same columns")
    mean, std = np.asarray(state["mean"]), np.asarray(state["std"])
    per = {}
    for pid, group in table.sort_values(["patient_id", "time"]).groupby("patient_id", sort=True):
        bag = _steps(group, variables, mean, std, state["time_scale"], state["max_steps"])
        per[str(pid)] = torch.from_numpy(bag)
    return ModalityTensors(name, kind, per, state, 2 * len(variables) + TIME_FEATURES)


def summaries(mod) -> dict[str, np.ndarray]:
    """Per patient and variable: last value, mean of the measurements, slope over tau, log(1 + n)."""
    n_vars = (mod.dim - TIME_FEATURES) // 2
    out = {}
    for pid, bag in mod.per_patient.items():
        b = bag.numpy().astype(np.float64)
        carried, measured, tau = b[:, :n_vars], b[:, n_vars:2 * n_vars] > 0.5, b[:, 2 * n_vars]
        row = []
        for v in range(n_vars):
            m = measured[:, v]
            x, y = tau[m], carried[m, v]
            slope = float(np.polyfit(x, y, 1)[0]) if m.sum() >= 2 and np.ptp(x) > 0 else 0.0
            row += [carried[-1, v], y.mean() if m.any() else 0.0, slope, math.log1p(m.sum())]
        out[pid] = np.asarray(row, np.float32)
    return out


TIMESERIES = register(ModalityKind(
    name="timeseries", family="table", table="modality", key=("patient_id", "time"), usable=lambda df: df,
    fit=fit_series, apply=apply_series, encoder="abmil", bag=True, summarise=summaries, check=check_window,
    prepare=Preparation("prepare-timeseries", ("id_column", "include", "exclude", "columns",
                                               "time_column", "window_from", "window_to")),
    settings=SETTINGS,
))
