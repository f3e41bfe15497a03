"""Patient-level folds (the split unit is the patient, so a patient's slides never straddle subsets).

Default: the MM-Lego/MCAT protocol of 5 repeated random 70/15/15 train/val/test splits with seeds
1..5. Alternatives: ``kfold`` (each patient is tested exactly once per repeat; ``repeats`` > 1
gives repeated cross-validation, fold ``r * n_folds + k`` being fold k of repeat r), and ``file``:
published splits read from disk (MCAT/PORPOISE/CLAM ``splits_{k}.csv`` or a long
``patient_id, fold, subset`` table). Validation is always carved from the training part when a
split does not name it (seeded, stratified on the event or label when asked).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from lego.errors import InputError
from lego.settings import default, setting

log = logging.getLogger(__name__)

SUBSETS = ("train", "val", "test")
SPLIT_FILE = re.compile(r"^splits_(\d+)\.csv$")


def _random_split(ids: np.ndarray, strata: np.ndarray, fractions, seed: int) -> dict[str, str]:
    rng = np.random.default_rng(seed)
    assign: dict[str, str] = {}
    for s in np.unique(strata):
        members = rng.permutation(ids[strata == s])
        n = len(members)
        n_test = int(round(n * fractions[2]))
        n_val = int(round(n * fractions[1]))
        for i, pid in enumerate(members):
            assign[pid] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return assign


def _strata(patients: pd.DataFrame, stratify: bool) -> np.ndarray:
    col = "event" if "event" in patients.columns else "label" if "label" in patients.columns else None
    if stratify and col:
        return patients[col].astype(str).to_numpy()
    return np.zeros(len(patients), dtype=str)


def carve_validation(rest: np.ndarray, strata: np.ndarray, val_share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``rest`` (ids) into (train, val), stratified where every stratum has two members."""
    from sklearn.model_selection import train_test_split

    counts = np.unique(strata, return_counts=True)[1]
    strat = strata if len(counts) > 1 and counts.min() > 1 else None
    train, val = train_test_split(rest, test_size=val_share, random_state=seed, stratify=strat)
    return np.asarray(train), np.asarray(val)


def _kfold_rows(ids: np.ndarray, strata: np.ndarray, n_folds: int, seed: int, val_share: float, stratify: bool,
                offset: int) -> list[tuple]:
    from sklearn.model_selection import KFold, StratifiedKFold

    splitter = StratifiedKFold(n_folds, shuffle=True, random_state=seed) if stratify else KFold(n_folds, shuffle=True, random_state=seed)
    rows = []
    for k, (rest, test) in enumerate(splitter.split(ids, strata)):
        fold = offset + k
        train, val = carve_validation(ids[rest], strata[rest], val_share, seed + k)
        rows += [(p, fold, "train") for p in train] + [(p, fold, "val") for p in val] + [(p, fold, "test") for p in ids[test]]
    return rows


def make_folds(
    patients: pd.DataFrame,
    method: str = default("folds.method"),
    *,
    n_folds: int | None = None,
    seeds: list[int] | None = None,
    fractions: tuple[float, float, float] = tuple(default("folds.fractions")),
    stratify: bool = default("folds.stratify"),
    repeats: int = default("folds.repeats"),
    path: str | Path | None = None,
) -> pd.DataFrame:
    """Long table ``patient_id, fold, subset`` with every patient once per fold.

    ``n_folds`` defaults to one fold per seed (random_split with ``seeds``), else the config's
    default; given both, they must agree (a silent override ran a different number of folds than asked)."""
    n_folds = _fold_count(method, n_folds, seeds)
    _check_fractions(fractions)
    ids = patients["patient_id"].astype(str).to_numpy()
    _check_request(ids, method, n_folds, seeds, repeats, path)
    strata = _strata(patients, stratify)
    val_share = fractions[1] / (fractions[0] + fractions[1])
    if method == "random_split":
        seeds = list(seeds) if seeds is not None else list(range(1, n_folds + 1))
        rows = []
        for fold, seed in enumerate(seeds):
            assign = _random_split(ids, strata, fractions, seed)
            rows += [(pid, fold, assign[pid]) for pid in ids]
    elif method == "kfold":
        seed = seeds[0] if seeds else 1
        rows = []
        for r in range(repeats):
            rows += _kfold_rows(ids, strata, n_folds, seed + 1000 * r, val_share, stratify, r * n_folds)
    elif method == "file":
        if path is None:
            raise InputError("folds.method 'file' needs folds.path (a splits_{k}.csv folder or a fold table)")
        return read_fold_file(path, patients, val_share, (seeds or [1])[0], stratify)
    else:
        raise InputError(f"unknown fold method {method!r}; use {', '.join(setting('folds.method').choices)}")
    return _checked(pd.DataFrame(rows, columns=["patient_id", "fold", "subset"]),
                    f"{len(ids)} patients are too few for fractions {list(fractions)}")


def _check_request(ids: np.ndarray, method: str, n_folds: int, seeds: list[int] | None, repeats: int,
                   path: str | Path | None) -> None:
    """The combinations of settings that cannot make folds, each one line."""
    if len(set(ids)) != len(ids):
        raise InputError("make_folds needs one row per patient; the labels table has duplicate patient IDs")
    if len(ids) < 3:
        raise InputError(f"need at least 3 patients to make train/val/test folds, got {len(ids)}")
    if method == "kfold" and n_folds < 2:
        raise InputError(f"kfold needs n_folds >= 2 (got {n_folds}); for one split use random_split")
    if method == "kfold" and n_folds > len(ids):
        raise InputError(f"kfold with {n_folds} folds needs at least {n_folds} patients; the labels hold {len(ids)}")
    if method == "random_split" and n_folds < 1:
        raise InputError(f"n_folds must be at least 1 (got {n_folds})")
    if seeds is not None and len(seeds) == 0:
        raise InputError("seeds is empty: give one seed per fold")
    if seeds is not None and method == "random_split" and len(set(seeds)) != len(seeds):
        raise InputError(f"seeds {list(seeds)} repeat a value: two folds would be the same split")
    if repeats < 1:
        raise InputError(f"repeats must be at least 1 (got {repeats})")
    if path is not None and method != "file":
        raise InputError(f"a split path ({path}) is only read by method 'file' (method is {method!r}); "
                         "set the method or drop the path")
    if method == "kfold" and seeds is not None and len(seeds) > 1:
        raise InputError(f"kfold takes one seed (got {list(seeds)}); repeats gives further shuffles")
    if seeds and min(seeds) < 0:
        raise InputError(f"seeds {list(seeds)} hold a negative value; seeds are non-negative integers")


def _fold_count(method: str, n_folds: int | None, seeds: list[int] | None) -> int:
    """The number of folds asked for: ``n_folds``, or one per random_split seed, or 5."""
    if method == "random_split" and seeds:
        if n_folds is not None and n_folds != len(seeds):
            raise InputError(f"{len(seeds)} seeds make {len(seeds)} folds but n_folds is {n_folds}; "
                             "give one seed per fold or leave n_folds out")
        return len(seeds)
    return default("folds.n_folds") if n_folds is None else n_folds


def _check_fractions(fractions: tuple[float, float, float]) -> None:
    """Train, validation and test shares: each above 0, summing to 1."""
    if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-6:
        raise InputError(f"fractions {list(fractions)}: need three shares (train, validation, test), "
                         "each above 0, summing to 1 (e.g. 0.7 0.15 0.15)")


def _checked(folds: pd.DataFrame, why: str) -> pd.DataFrame:
    """Every fold has train, val and test patients (``why`` says what to change otherwise)."""
    counts = folds.groupby(["fold", "subset"]).size().unstack(fill_value=0).reindex(columns=list(SUBSETS), fill_value=0)
    empty = counts[(counts == 0).any(axis=1)]
    if len(empty):
        raise InputError(
            f"fold {empty.index[0]} has an empty subset ({empty.iloc[0].to_dict()}); {why}"
        )
    return folds.sort_values(["fold", "patient_id"]).reset_index(drop=True)


def n_folds_in(path: str | Path) -> int:
    """How many folds a fold file or folder holds (read when the workflow is built)."""
    path = Path(path)
    if path.is_dir():
        found = sorted(int(m.group(1)) for f in path.iterdir() if (m := SPLIT_FILE.match(f.name)))
        if not found:
            raise InputError(f"{path}: no splits_<k>.csv file; point folds.path at a folder of MCAT/CLAM split files or a fold table")
        if found != list(range(len(found))):
            raise InputError(f"{path}: split files are numbered {found}; expected splits_0.csv .. splits_{len(found) - 1}.csv")
        return len(found)
    return int(_read_long_table(path)["fold"].nunique())


def fold_files(path: str | Path) -> list[str]:
    """The files a fold source consists of (the make_folds rule's inputs)."""
    path = Path(path)
    return [str(path / f"splits_{k}.csv") for k in range(n_folds_in(path))] if path.is_dir() else [str(path)]


def _read_long_table(path: Path) -> pd.DataFrame:
    from lego.tabular.tables import read_table, stripped_text

    df = read_table(path, text_columns=("patient_id",))  # "0011" must stay "0011"
    missing = {"patient_id", "fold", "subset"} - set(df.columns)
    if missing:
        raise InputError(f"{path}: a fold table needs columns patient_id, fold, subset; {sorted(missing)} missing")
    bad = ~df["subset"].isin(SUBSETS)
    if bad.any():
        raise InputError(f"{path}: line {int(np.flatnonzero(bad)[0]) + 2}: subset {df['subset'][bad].iloc[0]!r}; use train, val or test")
    fold = pd.to_numeric(df["fold"], errors="coerce")
    bad = fold.isna() | (fold != fold.round()) | (fold < 0)
    if bad.any():
        raise InputError(f"{path}: line {int(np.flatnonzero(bad)[0]) + 2}: fold {df['fold'][bad].iloc[0]!r} is not a "
                         "fold number (0, 1, 2, ...)")
    pid, bad = stripped_text(df["patient_id"])
    if bad.any():
        raise InputError(f"{path}: line {int(np.flatnonzero(bad)[0]) + 2}: empty patient_id; every row names a patient")
    df = df.assign(patient_id=pid.astype(str), fold=fold.astype(int))
    found = sorted(int(k) for k in df["fold"].unique())
    if found != list(range(len(found))):
        raise InputError(f"{path}: folds are numbered {found}; expected 0 .. {len(found) - 1}")
    return df[["patient_id", "fold", "subset"]]


def _read_split_csv(file: Path, fold: int) -> pd.DataFrame:
    """One MCAT/PORPOISE/CLAM split file: columns train, val[, test] of case IDs (ragged, NaN-padded)."""
    from lego.tabular.tables import check_header, stripped_text

    try:
        df = pd.read_csv(file, dtype=str)
    except pd.errors.EmptyDataError:
        raise InputError(f"{file}: the split file is empty; it needs columns 'train' and 'val'") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(f"{file}: not a readable CSV split file ({' '.join(str(exc).split())[:160]})") from None
    check_header(file, ",")  # a second `train` column would be renamed `train.1` and dropped
    cols = [c for c in ("train", "val", "test") if c in df.columns]
    if "train" not in cols or "val" not in cols:
        raise InputError(f"{file}: a split file needs columns 'train' and 'val' (and optionally 'test'); has {list(df.columns)}")
    rows = []
    # Without a test column the file's `val` is the held-out fold (MCAT/PORPOISE): it becomes test.
    names = {"train": "train", "val": "val" if "test" in cols else "test", "test": "test"}
    for c in cols:
        ids, empty = stripped_text(df[c])  # invisible characters too: "P1\u200b" is P1, as in the labels
        rows += [(p, fold, names[c]) for p in ids[~empty]]
    return pd.DataFrame(rows, columns=["patient_id", "fold", "subset"])


def read_fold_file(path: str | Path, patients: pd.DataFrame, val_share: float, seed: int, stratify: bool) -> pd.DataFrame:
    """Folds from published split files, restricted to the labelled patients (differences are logged)."""
    path = Path(path)
    if path.is_dir():
        raw = pd.concat([_read_split_csv(Path(f), k) for k, f in enumerate(fold_files(path))], ignore_index=True)
    else:
        raw = _read_long_table(path)
    dup = raw.duplicated(["patient_id", "fold"], keep=False)
    if dup.any():
        p, f = raw[dup].iloc[0][["patient_id", "fold"]]
        raise InputError(f"{path}: patient {p} appears in more than one subset of fold {f}; a patient belongs to one subset per fold")
    report_mismatch(path, set(raw["patient_id"]), set(patients["patient_id"].astype(str)))
    known = patients.assign(patient_id=patients["patient_id"].astype(str)).set_index("patient_id")
    raw = raw[raw["patient_id"].isin(known.index)]
    if raw.empty:
        raise InputError(f"{path}: none of its patient IDs is in the labels table; check that both use the same "
                         "IDs (e.g. TCGA case IDs, 12 characters) and cohort.labels.id_column")
    strata = _strata(known.reset_index(), stratify)
    strata_of = dict(zip(known.index, strata))
    out = []
    in_file = set(raw["patient_id"])
    for fold, f in raw.groupby("fold", sort=True):
        _warn_fold_gap(path, int(fold), in_file - set(f["patient_id"]))
        if not (f["subset"] == "val").any():
            rest = np.sort(f.loc[f["subset"] == "train", "patient_id"].to_numpy())
            if len(rest) < 2:
                raise InputError(f"{path}: fold {fold} has {len(rest)} labelled training patient(s) and no validation "
                                 "column; validation is carved from training, which needs at least 2 patients")
            train, val = carve_validation(rest, np.array([strata_of[p] for p in rest]), val_share, seed + int(fold))
            f = pd.concat([f[f["subset"] == "test"], pd.DataFrame({"patient_id": train, "fold": fold, "subset": "train"}),
                           pd.DataFrame({"patient_id": val, "fold": fold, "subset": "val"})])
        out.append(f)
    return _checked(pd.concat(out, ignore_index=True),
                    f"the split file {path} leaves it empty among the {len(known)} labelled patients")


def _warn_fold_gap(path: Path, fold: int, absent: set[str]) -> None:
    """A patient the file uses in some folds but leaves out of this one (a truncated or hand-edited
    split) is never tested there: say so per fold, since the union check cannot see it."""
    if absent:
        log.warning("%s: fold %d leaves out %d labelled patient(s) that other folds use (e.g. %s); "
                    "they are in no subset of this fold", path, fold, len(absent), ", ".join(sorted(absent)[:3]))


def report_mismatch(path: Path, in_file: set[str], labelled: set[str]) -> dict[str, list[str]]:
    """Log patients in the split file without labels, and labelled patients no split names."""
    only_file, only_labels = sorted(in_file - labelled), sorted(labelled - in_file)
    if only_file:
        log.warning("%s: %d patient(s) in the split file have no labels and are left out (e.g. %s)",
                    path, len(only_file), ", ".join(only_file[:3]))
    if only_labels:
        log.warning("%s: %d labelled patient(s) are in no split and are never used (e.g. %s)",
                    path, len(only_labels), ", ".join(only_labels[:3]))
    return {"split_only": only_file, "labels_only": only_labels}
