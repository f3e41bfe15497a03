"""Reference baselines on the same folds: a random survival forest (scikit-survival) on all
tabular modalities concatenated, each preprocessed by a TabularTransform fitted on the fold's
training patients only. Used to put the LegoBlock/Merge/Fuse numbers in context.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lego.data.fold_data import fold_ids
from lego.survival.metrics import c_index
from lego.tabular.transforms import TabularTransform


def rsf_reference(tables: dict[str, pd.DataFrame], labels: pd.DataFrame, folds: pd.DataFrame, n_estimators: int = 200,
                  min_samples_leaf: int = 15, max_features: str | float = "sqrt", seed: int = 0) -> pd.DataFrame:
    """Test (and validation) c-index per fold; patients need every modality (complete cases)."""
    from sksurv.ensemble import RandomSurvivalForest
    from sksurv.util import Surv

    complete = set(labels["patient_id"])
    for t in tables.values():
        complete &= set(t["patient_id"])
    lab = labels.set_index("patient_id")
    rows = []
    for fold in sorted(folds["fold"].unique()):
        ids = {k: [p for p in v if p in complete] for k, v in fold_ids(folds, fold).items()}
        parts = {s: [] for s in ids}
        for name, table in tables.items():
            t = table.set_index("patient_id")
            categorical = [c for c in t.columns if not pd.api.types.is_numeric_dtype(t[c])]
            tf = TabularTransform(categorical=categorical).fit(t.loc[ids["train"]].reset_index())
            for s in ids:
                parts[s].append(tf.transform(t.loc[ids[s]].reset_index()))
        x = {s: np.concatenate(parts[s], axis=1) for s in ids}
        y = Surv.from_arrays(lab.loc[ids["train"], "event"].astype(bool), lab.loc[ids["train"], "time"])
        rsf = RandomSurvivalForest(n_estimators=n_estimators, min_samples_leaf=min_samples_leaf,
                                   max_features=max_features, n_jobs=-1, random_state=seed).fit(x["train"], y)
        row = {"model": "rsf", "fold": int(fold)}
        for s in ("val", "test"):
            risk = rsf.predict(x[s])
            row[s] = c_index(lab.loc[ids[s], "time"], lab.loc[ids[s], "event"], risk)
            row[f"n_{s}"] = len(ids[s])
        rows.append(row)
    return pd.DataFrame(rows)
