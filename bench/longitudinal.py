"""The time-series kind on real longitudinal cohorts: what a series of the observation window adds
to the baseline covariates, for every model of the run.

Cohorts: config/longitudinal/<c>.yaml (AIDS: CD4 counts of months 0-6, landmark month 6; CSL:
prothrombin of year one, landmark one year; heart valve: echocardiography of year one, landmark one
year; epileptic: doses of days 0-180, landmark day 180; the last two were added after every choice
of the method and used for none), 5 folds, every patient tested once; each also as
<c>_neural.yaml, with the paper's neural blocks (an SNN for the baseline table). Per cohort the
test Harrell's C of each model (mean over folds, with the summary's 95 % interval), and the paired
per-fold differences (mean and 95 % t-interval over the 5 folds) that answer the question: the series' models minus the baseline covariates'
Coxnet, and MM-Lego minus its best block and minus the ensemble; and those two, with the paper's merge minus
the ensemble, pooled over the cohorts' folds (the Coxnet-wrapped runs apart from the neural ones).

Run the configs first (``snakemake --cores 2 --configfile <config>``; ``--run`` does it), then
``python bench/longitudinal.py``. Writes bench/results/longitudinal.{md,json} and the table of
docs/modalities.md (between its ``longitudinal results`` markers).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paper_table import fold_scores, paired, paired_pooled  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
COHORTS = ("aids", "csl", "heartvalve", "epileptic")
CONFIGS = {c + kind: f"config/longitudinal/{c}{kind}.yaml" for c in COHORTS for kind in ("", "_neural")}
# each cohort's series modality (the *_neural runs share it)
SERIES = {"aids": "cd4", "csl": "prothrombin", "heartvalve": "echo", "epileptic": "dose"}
POOLED = (("lego - best block (test)", "lego", "best"), ("lego - ensemble", "lego", "ensemble"),
          ("merge - ensemble", "merge", "ensemble"))
DOC = ROOT / "docs" / "modalities.md"
BEGIN, END = "<!-- longitudinal results: bench/longitudinal.py -->", "<!-- end of longitudinal results -->"


def cohort_rows(cohort: str) -> tuple[list[dict], list[dict], pd.DataFrame]:
    """(per-model rows, paired differences, per-fold scores with the best block as "best") of one cohort's run."""
    out = ROOT / "results" / f"longitudinal_{cohort}" / "summary"
    metrics = pd.read_csv(out / "metrics.tsv", sep="\t")
    metrics = metrics[metrics["metric"] == "c_index"]
    rows = [{"cohort": cohort, "model": r.model, "kind": r.kind, "test": r.test_mean, "ci_low": r.ci_low,
             "ci_high": r.ci_high, "n_test": r.n_test} for r in metrics.itertuples()]
    scores = fold_scores(out.parent)
    s = SERIES[cohort.split("_")[0]]
    blocks = [m for m in scores if m.startswith("block-")]
    best = max(blocks, key=lambda m: scores[m].mean())
    pairs = [(f"{m} - coxnet-baseline", m, "coxnet-baseline") for m in
             (f"coxnet-{s}", f"rsf-{s}", "coxnet-early", "rsf-early", f"abmil-{s}", f"block-{s}", "lego", "fuse")]
    pairs += [("lego - best block (test)", "lego", best), ("lego - ensemble", "lego", "ensemble"),
              ("merge - ensemble", "merge", "ensemble"), ("fuse - ensemble", "fuse", "ensemble"),
              ("lego - rsf-early", "lego", "rsf-early")]
    diffs = []
    for label, a, b in pairs:
        if a in scores and b in scores:
            d = paired(scores[a], scores[b])
            diffs.append({"cohort": cohort, "comparison": label, "mean": d["diff"], "ci_low": d["low"],
                          "ci_high": d["high"], "folds": d["n"]})
    return rows, diffs, scores.assign(best=scores[best])


def pooled(scores: dict[str, pd.DataFrame]) -> list[dict]:
    """lego and the paper's merge against the best block and the ensemble, over every fold of the cohorts."""
    out = []
    for group, names in (("Coxnet-wrapped table blocks", [c for c in scores if not c.endswith("_neural")]),
                         ("the paper's neural blocks", [c for c in scores if c.endswith("_neural")])):
        for label, a, b in POOLED:
            have = [c for c in names if a in scores[c] and b in scores[c]]
            if len(have) < 2:
                continue
            d = paired_pooled([scores[c] for c in have], a, b)
            out.append({"runs": group, "cohorts": ", ".join(have), "comparison": label, "mean": d["diff"],
                        "ci_low": d["low"], "ci_high": d["high"], "folds": d["n"]})
    return out


def markdown(rows: list[dict], diffs: list[dict], pool: list[dict]) -> str:
    lines = []
    for cohort in CONFIGS:
        own = [r for r in rows if r["cohort"] == cohort]
        if not own:
            continue
        blocks = "the paper's neural blocks (SNN table)" if cohort.endswith("_neural") else "Coxnet-wrapped table block"
        lines += [f"**{cohort.split('_')[0].upper()}, {blocks}** (`{CONFIGS[cohort]}`; test Harrell's C, 5 folds):", "",
                  "| model | kind | test C [95 % CI] | n_test |", "| --- | --- | --- | --- |"]
        lines += [f"| {r['model']} | {r['kind']} | {r['test']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}] | "
                  f"{r['n_test']:.0f} |" for r in own]
        lines += ["", "| paired per fold | mean [95 % CI] |", "| --- | --- |"]
        lines += [f"| {d['comparison']} | {d['mean']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] |"
                  for d in diffs if d["cohort"] == cohort]
        lines.append("")
    if pool:
        lines += ["**Pooled over the cohorts** (paired per fold, every fold of every cohort):", "",
                  "| blocks | cohorts | comparison | folds | mean [95 % CI] |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {p['runs']} | {p['cohorts']} | {p['comparison']} | {p['folds']} | "
                  f"{p['mean']:+.3f} [{p['ci_low']:+.3f}, {p['ci_high']:+.3f}] |" for p in pool]
        lines.append("")
    return "\n".join(lines)


def update_doc(table: str) -> None:
    text = DOC.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{BEGIN}\n\n{table}\n{END}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", action="store_true", help="run each cohort's workflow first")
    args = parser.parse_args()
    rows, diffs, scores = [], [], {}
    for cohort, config in CONFIGS.items():
        if args.run:
            subprocess.run(["snakemake", "--cores", "2", "--configfile", config], cwd=ROOT, check=True)
        if not (ROOT / "results" / f"longitudinal_{cohort}" / "summary" / "folds.tsv").exists():
            print(f"{cohort}: no finished run; snakemake --cores 2 --configfile {config}", file=sys.stderr)
            continue
        r, d, scores[cohort] = cohort_rows(cohort)
        rows += r
        diffs += d
    pool = pooled(scores)
    table = markdown(rows, diffs, pool)
    results = ROOT / "bench" / "results"
    (results / "longitudinal.json").write_text(json.dumps({"models": rows, "paired": diffs, "pooled": pool},
                                                          indent=1) + "\n")
    (results / "longitudinal.md").write_text(table)
    update_doc(table)
    print(table)


if __name__ == "__main__":
    main()
