"""One table of the MM-Lego paper's cohorts, made from finished pipeline runs.

Per cohort and protocol: the paper's published numbers, each block, the MM-Lego variants
(paper merge, tuned merge, fuse, and "lego" = the variant chosen on validation per fold), the
late-fusion ensemble and the classical baselines on the same folds, then paired differences
over folds (mean and 95 % t-interval of the per-fold test C-index differences) and the same
differences pooled across cohorts, so a 0.02 difference can be told from noise.

Run each config first (``snakemake --cores 2 --configfile config/paper/<cohort>_<protocol>.yaml``),
then ``python bench/paper_table.py`` (default: every results/paper_* run). Writes
bench/results/paper_table.{md,json}.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

ROOT = Path(__file__).resolve().parent.parent
# The paper's omics-only rows ("Unimodal (Tabular)") and its multimodal rows (WSI + omics), from
# ../shared/notes/mm-lego-reference.md: test C-index means over 5 random 70/15/15 splits.
PAPER_COLUMNS = ("paper LegoBlock (tabular)", "paper SNN (tabular)", "paper Perceiver (tabular)",
                 "paper LegoMerge (WSI+omics)", "paper LegoFuse (WSI+omics)", "paper HEALNet (WSI+omics)",
                 "paper MCAT (WSI+omics)", "paper SNN+ABMIL cc (WSI+omics)", "paper SNN+ABMIL bl (WSI+omics)")
PAPER = {cohort: dict(zip(PAPER_COLUMNS, values, strict=True)) for cohort, values in {
    "blca": (0.681, 0.689, 0.686, 0.701, 0.734, 0.714, 0.702, 0.561, 0.622),
    "brca": (0.591, 0.544, 0.557, 0.601, 0.626, 0.618, 0.564, 0.541, 0.557),
    "kirp": (0.840, 0.798, 0.836, 0.825, 0.863, 0.842, 0.823, 0.841, 0.811),
    "ucec": (0.615, 0.589, 0.615, 0.625, 0.634, 0.594, 0.633, 0.601, 0.666),
}.items()}
# The end-to-end multimodal models that run on omics alone (MCAT and the SNN+ABMIL fusions need slides).
TRAINED = ["healnet", "perceiver", "multimodn", "late-fusion"]
VARIANTS = ["merge", "merge-tuned", "fuse", "lego", "ensemble"]


def fold_scores(run: Path) -> pd.DataFrame:
    """model x fold test C-index of one run."""
    f = pd.read_csv(run / "summary" / "folds.tsv", sep="\t")
    f = f[(f["subset"] == "test") & (f["metric"] == "c_index")]
    return f.pivot_table(index="fold", columns="model", values="value")


def paired(a: pd.Series, b: pd.Series) -> dict:
    d = (a - b).dropna()
    if len(d) < 2:
        return {"diff": float(d.mean()) if len(d) else np.nan, "low": np.nan, "high": np.nan, "n": len(d)}
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return {"diff": float(d.mean()), "low": float(d.mean() - half), "high": float(d.mean() + half), "n": len(d)}


def paired_pooled(runs: list[pd.DataFrame], a: str, b: str) -> dict:
    """:func:`paired` over every fold of several runs (each a model x fold score table holding a and b)."""
    return paired(pd.concat([s[a] for s in runs], ignore_index=True), pd.concat([s[b] for s in runs], ignore_index=True))


def references(scores: pd.DataFrame) -> dict[str, pd.Series]:
    blocks = [c for c in scores if c.startswith("block-")]
    best_block = max(blocks, key=lambda c: scores[c].mean())
    classical = [c for c in scores if c.split("-")[0] in ("coxnet", "rsf")]
    best_classical = max(classical, key=lambda c: scores[c].mean())
    return {f"best block ({best_block})": scores[best_block], f"best classical ({best_classical})": scores[best_classical],
            "rsf-early": scores.get("rsf-early", pd.Series(dtype=float)),
            **{t: scores[t] for t in TRAINED if t in scores}}


def cohort_rows(name: str, scores: pd.DataFrame) -> tuple[list[dict], list[dict], list[dict]]:
    cohort = name.split("_")[1]
    mean = lambda c: (f"{scores[c].mean():.3f} ± {scores[c].std(ddof=1):.3f}" if c in scores else "")  # noqa: E731
    row = {"run": name, **{k: f"{v:.3f}" for k, v in PAPER.get(cohort, {}).items()}}
    for c in [c for c in scores if c.startswith("block-")] + VARIANTS + ["coxnet-early", "rsf-early"] + TRAINED:
        row[c] = mean(c)
    diffs = []
    for ref_name, ref in references(scores).items():
        for v in ("lego", "merge", "merge-tuned", "fuse"):
            if v in scores and len(ref):
                diffs.append({"run": name, "model": v, "reference": ref_name, **paired(scores[v], ref)})
    per_mod = []
    for b in [c for c in scores if c.startswith("block-")]:
        m = b.removeprefix("block-")
        cls = [c for c in (f"coxnet-{m}", f"rsf-{m}") if c in scores]
        if cls:
            best = max(cls, key=lambda c: scores[c].mean())
            per_mod.append({"run": name, "modality": m, "block": scores[b].mean(), "classical": best,
                            "classical_mean": scores[best].mean(), "gap": scores[b].mean() - scores[best].mean()})
    return [row], diffs, per_mod


def pooled(diffs: list[dict], runs: dict[str, pd.DataFrame]) -> list[dict]:
    """Per-fold differences pooled across every run of a protocol (e.g. 4 cohorts x 5 folds = 20)."""
    out = []
    for proto in sorted({r.rsplit("_", 1)[1] for r in runs}):
        names = [r for r in runs if r.endswith(proto)]
        for v in ("lego", "merge", "merge-tuned", "fuse"):
            for ref in ("best block", "best classical", "rsf-early", *TRAINED):
                a, b = [], []
                for r in names:
                    s = runs[r]
                    refs = {k.split(" (")[0]: val for k, val in references(s).items()}
                    if v in s and len(refs.get(ref, ())):
                        a.append(s[v])
                        b.append(refs[ref])
                if a:
                    out.append({"protocol": proto, "model": v, "reference": ref, "runs": len(a),
                                **paired(pd.concat(a, ignore_index=True), pd.concat(b, ignore_index=True))})
    return out


def markdown(rows, diffs, per_mod, pool) -> str:
    fmt = lambda d: f"{d['diff']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"  # noqa: E731
    parts = ["## Test C-index, mean ± std over folds", pd.DataFrame(rows).fillna("").to_markdown(index=False),
             "\n## Paired differences per run (mean over folds, 95 % t-interval)",
             pd.DataFrame([{**{k: d[k] for k in ("run", "model", "reference")}, "difference": fmt(d)}
                           for d in diffs]).to_markdown(index=False),
             "\n## Pooled across cohorts (per-fold differences of every run of a protocol)",
             pd.DataFrame([{**{k: d[k] for k in ("protocol", "model", "reference", "runs", "n")}, "difference": fmt(d)}
                           for d in pool]).to_markdown(index=False),
             "\n## Each block against the better classical model on the same modality",
             pd.DataFrame(per_mod).round(3).to_markdown(index=False)]
    return "\n".join(parts) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="*", help="result folders (default: results/paper_*)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "paper_table"))
    a = ap.parse_args()
    runs = [Path(r) for r in a.runs] or sorted(p for p in (ROOT / "results").glob("paper_*") if (p / "summary" / "folds.tsv").is_file())
    scores = {r.name.removeprefix("paper_"): fold_scores(r) for r in runs}
    rows, diffs, per_mod = [], [], []
    for name, s in scores.items():
        r, d, p = cohort_rows("paper_" + name, s)
        rows += r
        diffs += d
        per_mod += p
    pool = pooled(diffs, {"paper_" + k: v for k, v in scores.items()})
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out + ".md").write_text(markdown(rows, diffs, per_mod, pool))
    Path(a.out + ".json").write_text(json.dumps({"rows": rows, "paired": diffs, "pooled": pool, "per_modality": per_mod},
                                                indent=2, default=float))
    print(Path(a.out + ".md").read_text())


if __name__ == "__main__":
    main()
