"""bench/paper_table.py: the cohort table and its paired, pooled differences from summary/folds.tsv."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.helpers import load_bench


def load():
    return load_bench("paper_table")


def fake_run(root: Path, name: str, scores: dict[str, list[float]]) -> Path:
    rows = [{"model": m, "fold": f, "subset": s, "metric": "c_index", "value": v + (0.1 if s == "val" else 0), "n": 50, "missing": ""}
            for m, vals in scores.items() for f, v in enumerate(vals) for s in ("test", "val")]
    run = root / name
    (run / "summary").mkdir(parents=True)
    pd.DataFrame(rows).to_csv(run / "summary" / "folds.tsv", sep="\t", index=False)
    return run


def test_table_pairs_by_fold_and_pools_runs_of_a_protocol(tmp_path):
    pt = load()
    a = fake_run(tmp_path, "paper_ucec_published", {"block-rna": [0.6, 0.7, 0.65], "block-cnv": [0.5, 0.55, 0.5],
                                                    "lego": [0.65, 0.72, 0.7], "coxnet-rna": [0.62, 0.71, 0.66],
                                                    "rsf-early": [0.61, 0.69, 0.66]})
    b = fake_run(tmp_path, "paper_blca_published", {"block-rna": [0.6, 0.6], "block-cnv": [0.5, 0.5], "lego": [0.62, 0.64],
                                                    "rsf-early": [0.6, 0.61], "coxnet-rna": [0.59, 0.6]})
    scores = pt.fold_scores(a)
    rows, diffs, per_mod = pt.cohort_rows("paper_ucec_published", scores)
    assert rows[0]["paper LegoBlock (tabular)"] == "0.615" and rows[0]["lego"].startswith("0.690")
    d = next(x for x in diffs if x["model"] == "lego" and x["reference"].startswith("best block"))
    assert d["diff"] == pytest.approx(np.mean([0.05, 0.02, 0.05])) and d["low"] < d["diff"] < d["high"] and d["n"] == 3
    assert next(r for r in per_mod if r["modality"] == "rna")["gap"] == pytest.approx(0.65 - 0.663333, abs=1e-5)
    pool = pt.pooled(diffs, {"paper_ucec_published": scores, "paper_blca_published": pt.fold_scores(b)})
    lego_rsf = next(p for p in pool if p["model"] == "lego" and p["reference"] == "rsf-early")
    assert lego_rsf["runs"] == 2 and lego_rsf["n"] == 5
    assert lego_rsf["diff"] == pytest.approx(np.mean([0.04, 0.03, 0.04, 0.02, 0.03]))
