"""How far the training patients' out-of-fold scores understate a fitted block, and whether more
cross-fitting folds close the gap (issue 26, docs/lego_method.md section 3).

The tuned merge chooses its weights on out-of-sample patients: the fold's training patients
through their cross-fitted scores, plus validation. If the cross-fitted scores of one block are
weaker than its full model on test patients, the weights under-rate that block. Per cohort,
fold and modality this fits the Coxnet of ``lego.models.fitted.fit_coxnet`` (elastic net 0.5,
30 penalties, the penalty chosen on validation; features z-scored on training patients and
clipped at 5 -- simpler than the block's preprocessing) and reports Harrell's C of:
the pooled out-of-fold scores (``oof``), the same with each part standardised by its own model's
training scores (``oof_std``: is pooling five models' scales the cause?), the mean C within each
held-out part (``within``), validation (``val``, the penalty was chosen there) and test (``test``),
with 5 and with 10 cross-fitting folds.

Needs the runs of bench/lego_cohorts.py (results/<run>/cohort and modalities).
``python bench/oof_bias.py [--modality rna]`` writes bench/results/oof_bias.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lego_cohorts import CONFIGS, ROOT, run_name  # noqa: E402


def c_index(y, risk) -> float:
    from sksurv.metrics import concordance_index_censored

    return float(concordance_index_censored(y["event"], y["time"], risk)[0]) if np.ptp(risk) > 0 else 0.5


def fold_parts(run: Path, modality: str, fold: int) -> tuple[dict, dict]:
    """The fold's z-scored features and survival outcomes, per subset (train/val/test)."""
    from sksurv.util import Surv

    lab = pd.read_parquet(run / "cohort/labels.parquet").set_index("patient_id")
    x = pd.read_parquet(run / f"modalities/{modality}.parquet").set_index("patient_id").select_dtypes("number")
    folds = pd.read_parquet(run / "cohort/folds.parquet")
    sub = folds[folds.fold == fold].set_index("patient_id").subset
    ids = {s: [p for p in sub.index[sub == s] if p in x.index and p in lab.index] for s in ("train", "val", "test")}
    mu, sd = x.loc[ids["train"]].mean(), x.loc[ids["train"]].std().replace(0, 1)
    z = {s: ((x.loc[i] - mu) / sd).fillna(0).clip(-5, 5).to_numpy() for s, i in ids.items()}
    y = {s: Surv.from_arrays(lab.loc[i, "event"].astype(bool).to_numpy(), lab.loc[i, "time"].to_numpy()) for s, i in ids.items()}
    return z, y


def one_fold(z: dict, y: dict, n_splits: int) -> dict:
    from sklearn.model_selection import StratifiedKFold
    from sksurv.linear_model import CoxnetSurvivalAnalysis

    est = CoxnetSurvivalAnalysis(l1_ratio=0.5, alpha_min_ratio=0.01, n_alphas=30, max_iter=100000).fit(z["train"], y["train"])
    val = [c_index(y["val"], z["val"] @ est.coef_[:, j]) for j in range(est.coef_.shape[1])]
    best = int(np.argmax(val))
    raw, std, within = np.zeros(len(z["train"])), np.zeros(len(z["train"])), []
    yt = y["train"]
    for fit, held in StratifiedKFold(n_splits, shuffle=True, random_state=0).split(z["train"], yt["event"]):
        part = CoxnetSurvivalAnalysis(l1_ratio=0.5, alphas=est.alphas_[: best + 1], max_iter=100000).fit(z["train"][fit], yt[fit])
        coef, own = part.coef_[:, -1], z["train"][fit] @ part.coef_[:, -1]
        raw[held] = z["train"][held] @ coef
        std[held] = (raw[held] - own.mean()) / (own.std() or 1.0)
        within.append(c_index(yt[held], raw[held]))
    return {"oof": c_index(yt, raw), "oof_std": c_index(yt, std), "within": float(np.mean(within)),
            "val": val[best], "test": c_index(y["test"], z["test"] @ est.coef_[:, best])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--modality", default="rna")
    ap.add_argument("--splits", type=int, nargs="+", default=[5, 10])
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    rows = []
    for cohort, config in CONFIGS.items():
        run = ROOT / "results" / run_name(config)
        if not (run / f"modalities/{args.modality}.parquet").is_file():
            continue
        for fold in range(5):
            z, y = fold_parts(run, args.modality, fold)
            for k in args.splits:
                rows.append({"cohort": cohort, "fold": fold, "cross_fit_folds": k, **one_fold(z, y, k)})
                print(rows[-1], flush=True)
    d = pd.DataFrame(rows)
    cols = ["oof", "oof_std", "within", "val", "test"]
    per = d.groupby(["cohort", "cross_fit_folds"])[cols].mean().round(3).reset_index()
    pooled = d.groupby("cross_fit_folds")[cols].mean().round(3).reset_index()
    gap = d.assign(gap=d.test - d.oof).groupby("cross_fit_folds").gap.agg(["mean", "sem"]).round(3).reset_index()
    out = ROOT / "bench/results/oof_bias"
    out.with_suffix(".md").write_text(
        f"## Coxnet on `{args.modality}`: out-of-fold against validation and test C (mean over folds)\n"
        + per.to_markdown(index=False) + "\n\n## Pooled over cohorts and folds\n" + pooled.to_markdown(index=False)
        + "\n\n## test − oof (mean, standard error over cohort-folds)\n" + gap.to_markdown(index=False) + "\n")
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
