"""MM-Lego against its own blocks and the ensemble on every TCGA cohort of ../shared (published splits).

The nine cohorts: the paper's four (config/paper/<c>_published.yaml: BLCA, BRCA, KIRP, UCEC)
and five development cohorts (GBMLGG in config/paper, COADREAD, KIRC, SKCM and STAD in
config/tcga). A method change to the blocks, the merge or the fuse must hold on all of them.
Per cohort: the mean test C of each block, of the MM-Lego variants and of the ensemble, and the
paired per-fold differences of ``lego`` (and each variant) minus its best block (the block with
the best *test* mean: the hardest reference, chosen with hindsight) and minus the ensemble;
then the same differences pooled over every cohort's folds (mean and 95 % t-interval).

Run the configs first (``snakemake --cores 2 --configfile <config>``; ``--run`` does it), then
``python bench/lego_cohorts.py``. Writes bench/results/lego_cohorts.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paper_table import fold_scores, paired  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = {**{c: f"config/paper/{c}_published.yaml" for c in ("blca", "brca", "kirp", "ucec", "gbmlgg")},
           **{c: f"config/tcga/{c}_published.yaml" for c in ("coadread", "kirc", "skcm", "stad")}}
PAPER = ("blca", "brca", "kirp", "ucec")
# The paper's own LegoBlocks (SNN on all features, no fitted encoder) on its four cohorts: --neural
NEURAL = {c: f"config/paper/neural/{c}_published.yaml" for c in PAPER}
VARIANTS = ("lego", "merge-tuned", "fuse", "merge")
TOLERANCE = 0.005  # the most lego may fall below its best block in any one cohort


def run_name(config: str) -> str:
    import yaml

    return yaml.safe_load((ROOT / config).read_text())["cohort"]["name"]


def cohort_result(cohort: str, scores: pd.DataFrame) -> tuple[dict, list[dict]]:
    blocks = [c for c in scores if c.startswith("block-")]
    best = max(blocks, key=lambda c: scores[c].mean())
    row = {"cohort": cohort, "paper": cohort in PAPER, "best block": best,
           **{c: round(float(scores[c].mean()), 4) for c in [*blocks, *VARIANTS, "ensemble"] if c in scores}}
    diffs = [{"cohort": cohort, "model": v, "reference": ref, **paired(scores[v], scores[col])}
             for v in VARIANTS if v in scores for ref, col in (("best block", best), ("ensemble", "ensemble"))]
    return row, diffs


def pooled(per_fold: dict[str, pd.DataFrame], rows: dict[str, dict]) -> list[dict]:
    out = []
    for group, names in ((f"all {len(per_fold)}", list(per_fold)), ("paper's four", [c for c in per_fold if c in PAPER]),
                         ("five development", [c for c in per_fold if c not in PAPER])):
        for v in VARIANTS:
            for ref in ("best block", "ensemble"):
                a = [per_fold[c][v] for c in names if v in per_fold[c]]
                b = [per_fold[c][rows[c]["best block"] if ref == "best block" else "ensemble"] for c in names if v in per_fold[c]]
                if a:
                    out.append({"cohorts": group, "model": v, "reference": ref, "runs": len(a),
                                **paired(pd.concat(a, ignore_index=True), pd.concat(b, ignore_index=True))})
    return out


def markdown(rows: list[dict], diffs: list[dict], pool: list[dict]) -> str:
    fmt = lambda d: f"{d['diff']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"  # noqa: E731
    lego = [d for d in diffs if d["model"] == "lego" and d["reference"] == "best block"]
    below = [d["cohort"] for d in lego if d["diff"] < -TOLERANCE]
    parts = ["## Test C-index, mean over the 5 published folds", pd.DataFrame(rows).astype(object).fillna("").to_markdown(index=False),
             "\n## Paired differences per cohort (mean over folds, 95 % t-interval)",
             pd.DataFrame([{"cohort": d["cohort"], "model": d["model"], "reference": d["reference"], "difference": fmt(d)}
                           for d in diffs]).to_markdown(index=False),
             "\n## Pooled over cohorts (every fold of every cohort)",
             pd.DataFrame([{**{k: d[k] for k in ("cohorts", "model", "reference", "runs", "n")}, "difference": fmt(d)}
                           for d in pool]).to_markdown(index=False),
             f"\nCohorts where lego is below its best block by more than {TOLERANCE}: {', '.join(below) or 'none'}."]
    return "\n".join(parts) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="store_true", help="run each cohort's workflow first (snakemake --cores 2)")
    ap.add_argument("--cohorts", nargs="*", default=None, choices=list(CONFIGS))
    ap.add_argument("--neural", action="store_true", help="the paper's neural blocks (config/paper/neural) on its four cohorts")
    ap.add_argument("--out", default=None, help="default bench/results/lego_cohorts[_neural]")
    args = ap.parse_args()
    configs = NEURAL if args.neural else CONFIGS
    args.cohorts = args.cohorts or list(configs)
    args.out = args.out or str(ROOT / "bench" / "results" / ("lego_cohorts_neural" if args.neural else "lego_cohorts"))
    per_fold, rows, diffs = {}, {}, []
    for c in args.cohorts:
        if args.run:
            subprocess.run(["snakemake", "--cores", "2", "--configfile", configs[c]], cwd=ROOT, check=True)
        run = ROOT / "results" / run_name(configs[c])
        if not (run / "summary" / "folds.tsv").exists():
            print(f"{c}: no finished run at {run}; run snakemake --cores 2 --configfile {configs[c]}", file=sys.stderr)
            continue
        per_fold[c] = fold_scores(run)
        rows[c], d = cohort_result(c, per_fold[c])
        diffs += d
    pool = pooled(per_fold, rows)
    Path(args.out).with_suffix(".md").write_text(markdown(list(rows.values()), diffs, pool))
    Path(args.out).with_suffix(".json").write_text(json.dumps({"cohorts": list(rows.values()), "differences": diffs,
                                                               "pooled": pool}, indent=1))
    print(Path(args.out).with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
