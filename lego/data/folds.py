"""Patient-level folds (the split unit is the patient, so a patient's slides never straddle subsets).

Default: the MM-Lego/MCAT protocol of 5 repeated random 70/15/15 train/val/test splits with seeds
1..5. Alternative: k-fold (each patient is tested exactly once), validation carved from the rest.
Either can be stratified on the event indicator (survival) or the class label.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lego.errors import InputError

SUBSETS = ("train", "val", "test")


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


def make_folds(
    patients: pd.DataFrame,
    method: str = "random_split",
    n_folds: int = 5,
    seeds: list[int] | None = None,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    stratify: bool = False,
) -> pd.DataFrame:
    """Long table ``patient_id, fold, subset`` with every patient once per fold."""
    ids = patients["patient_id"].astype(str).to_numpy()
    if len(set(ids)) != len(ids):
        raise InputError("make_folds needs one row per patient; the labels table has duplicate patient IDs")
    if len(ids) < 3:
        raise InputError(f"need at least 3 patients to make train/val/test folds, got {len(ids)}")
    strat_col = "event" if "event" in patients.columns else "label" if "label" in patients.columns else None
    strata = patients[strat_col].astype(str).to_numpy() if (stratify and strat_col) else np.zeros(len(ids), dtype=str)
    seeds = list(seeds) if seeds is not None else list(range(1, n_folds + 1))
    rows = []
    if method == "random_split":
        for fold, seed in enumerate(seeds):
            assign = _random_split(ids, strata, fractions, seed)
            rows += [(pid, fold, assign[pid]) for pid in ids]
    elif method == "kfold":
        from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

        seed = seeds[0]
        splitter = StratifiedKFold(n_folds, shuffle=True, random_state=seed) if stratify else KFold(n_folds, shuffle=True, random_state=seed)
        val_share = fractions[1] / (fractions[0] + fractions[1])
        for fold, (rest, test) in enumerate(splitter.split(ids, strata)):
            strat_rest = strata[rest] if stratify and min(np.unique(strata[rest], return_counts=True)[1]) > 1 else None
            train, val = train_test_split(rest, test_size=val_share, random_state=seed + fold, stratify=strat_rest)
            rows += [(ids[i], fold, "train") for i in train] + [(ids[i], fold, "val") for i in val]
            rows += [(ids[i], fold, "test") for i in test]
    else:
        raise InputError(f"unknown fold method {method!r}; use random_split or kfold")
    folds = pd.DataFrame(rows, columns=["patient_id", "fold", "subset"])
    counts = folds.groupby(["fold", "subset"]).size().unstack(fill_value=0).reindex(columns=list(SUBSETS), fill_value=0)
    empty = counts[(counts == 0).any(axis=1)]
    if len(empty):
        raise InputError(
            f"fold {empty.index[0]} has an empty subset ({empty.iloc[0].to_dict()}); "
            f"{len(ids)} patients are too few for fractions {list(fractions)}"
        )
    return folds.sort_values(["fold", "patient_id"]).reset_index(drop=True)
