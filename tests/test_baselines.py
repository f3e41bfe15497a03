import numpy as np
import pandas as pd

from lego.baselines import rsf_reference
from lego.data.folds import make_folds


def test_rsf_reference_uses_the_same_folds_and_handles_categories():
    rng = np.random.default_rng(0)
    n = 150
    ids = [f"P{i}" for i in range(n)]
    x = rng.normal(size=n)
    time = rng.exponential(10 / np.exp(1.5 * x))
    labels = pd.DataFrame({"patient_id": ids, "time": time, "event": 1})
    omics = pd.DataFrame({"patient_id": ids, "g1": x, "g2": rng.normal(size=n)})
    clinical = pd.DataFrame({"patient_id": ids, "age": rng.normal(60, 5, n), "site": rng.choice(["A", "B"], n)})
    folds = make_folds(labels, n_folds=2)
    out = rsf_reference({"omics": omics, "clinical": clinical}, labels, folds, n_estimators=50)
    assert out["fold"].tolist() == [0, 1]
    assert (out["n_test"] == 22).all() and (out["test"] > 0.65).all()
