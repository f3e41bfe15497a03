"""Issue 26's demo targets on the default demo and on demos it was never tuned on, with their noise.

The targets (docs/lego_method.md): each LegoBlock within 0.02 of the Coxnet model of its modality
and the slide block within 0.02 of plain ABMIL; the paper's merge, the tuned merge, the fuse and
``lego`` at or above the ensemble of the same blocks; ``lego`` at or above ``rsf-early``. They are
checked on the default demo (seed 7, 250 patients) and on three demos no setting was chosen on:
seeds 11 and 23, and 400 patients. Each is the default config (config/config.yaml) with the
per-modality classical models added (``evaluation.baseline_inputs: [each, early]``); the extra
demos leave out the end-to-end models and heatmaps, which no target reads, to stay short.

Per demo, pooled over all four demos' folds, and pooled over the three the method was never tuned
on: the paired per-fold difference of test C (mean and 95 % t-interval). A target is *met* when
the mean difference clears its threshold (the issue's criterion), *missed within noise* when it
does not but the interval reaches the threshold, and *missed* when the whole interval is below it.
The 400-patient demo keeps seed 7, as the issue asks ("two other seeds and 400 patients"): its
cohort is a new draw of 400 patients, but it is not independent of the default demo's generator.

``python bench/demo_seeds.py --run`` writes each demo's config under --work and runs it
(``snakemake --cores 2``; about 10-15 minutes each on 2 cores); without ``--run`` it reads finished
runs there. Writes bench/results/demo_seeds.{md,json}.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paper_table import fold_scores, paired_pooled  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "config" / "config.yaml"
EACH = {"baseline_inputs": ["each", "early"]}  # the per-modality classical models, for the block targets
SHORT = {**EACH, "baselines": ["coxnet", "rsf", "abmil", "ensemble"], "heatmaps": False}  # what no target reads, left out
# name -> overrides of config/config.yaml. seed7 is the default demo (a newcomer's first run).
DEMOS = {
    "seed7": {"evaluation": EACH},
    "seed11": {"demo": {"seed": 11}, "evaluation": SHORT},
    "seed23": {"demo": {"seed": 23}, "evaluation": SHORT},
    "n400": {"demo": {"n_patients": 400}, "evaluation": SHORT},
}
TOLERANCE = 0.02  # "within 0.02 of" the Coxnet model of a block's modality, and of plain ABMIL
TUNED = "seed7"  # the demo the defaults were chosen on; the others were not used for any choice
EPS = 1e-9  # a difference equal to its threshold up to float rounding clears it


def targets(modalities: list[str]) -> list[tuple[str, str, float]]:
    """(model, reference, threshold on model - reference) of every demo target."""
    out = [(f"block-{m}", f"coxnet-{m}", -TOLERANCE) for m in modalities]
    out.append(("block-wsi", "abmil-wsi", -TOLERANCE))
    out += [(v, "ensemble", 0.0) for v in ("merge", "merge-tuned", "fuse", "lego")]
    out.append(("lego", "rsf-early", 0.0))
    return out


def merged(base: dict, over: dict) -> dict:
    """base with over's keys replaced, nested dictionaries merged."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def run_demo(work: Path, overrides: dict) -> None:
    work.mkdir(parents=True, exist_ok=True)
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump(merged(yaml.safe_load(BASE.read_text()), overrides), sort_keys=False))
    snakemake = Path(sys.executable).parent / "snakemake"  # the venv's, beside this interpreter
    subprocess.run([str(snakemake) if snakemake.exists() else "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory",
                    str(work), "--configfile", str(config), "--cores", "2"], check=True)


def verdict(d: dict, threshold: float) -> str:
    """met / missed within noise / missed (see the module's docstring); n/a without two paired folds."""
    if d["n"] < 2:
        return "n/a"
    if d["diff"] >= threshold - EPS:
        return "met"
    return "missed within noise" if d["high"] >= threshold - EPS else "missed"


def compare(scores: dict[str, pd.DataFrame]) -> list[dict]:
    """Every target per demo, pooled over all demos' folds and over the untuned demos' folds."""
    rows = []
    modalities = sorted({c.removeprefix("block-") for s in scores.values() for c in s if c.startswith("block-")})
    for model, ref, threshold in targets(modalities):
        have = {n: s for n, s in scores.items() if model in s and ref in s}
        groups = {**{n: [n] for n in have}, "pooled": list(have), "pooled, untuned": [n for n in have if n != TUNED]}
        for name, members in groups.items():
            if name.startswith("pooled") and len(members) < 2:
                continue
            d = paired_pooled([have[n] for n in members], model, ref)
            rows.append({"model": model, "reference": ref, "demo": name, "threshold": threshold, **d,
                         "verdict": verdict(d, threshold)})
    return rows


def markdown(rows: list[dict], means: pd.DataFrame, runs: dict[str, dict]) -> str:
    fmt = lambda d: f"{d['diff']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"  # noqa: E731
    table = pd.DataFrame(rows)
    table["cell"] = [f"{fmt(r)} {r['verdict']}" for r in rows]
    wide = table.pivot_table(index=["model", "reference", "threshold"], columns="demo", values="cell", aggfunc="first",
                             sort=False)
    wide = wide[[c for c in [*runs, "pooled", "pooled, untuned"] if c in wide]].reset_index()
    parts = ["## Demos", pd.DataFrame([{"demo": n, **r} for n, r in runs.items()]).to_markdown(index=False),
             "\n## Test C-index, mean over the folds", means.to_markdown(),
             "\n## Targets: model - reference, paired over folds (mean, 95 % t-interval)",
             f"*met*: the mean clears the threshold; *missed within noise*: it does not, but the interval reaches "
             f"it; *missed*: the whole interval is below it. *pooled, untuned*: every demo but {TUNED}.\n",
             wide.to_markdown(index=False)]
    return "\n".join(parts) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="store_true", help="write each demo's config under --work and run it first")
    ap.add_argument("--work", default=str(ROOT / "results" / "demo_seeds"),
                    help="one folder per demo (seed7, seed11, seed23, n400), each a workflow directory")
    ap.add_argument("--demos", nargs="*", default=list(DEMOS), choices=list(DEMOS))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "demo_seeds"))
    args = ap.parse_args()
    scores, runs = {}, {}
    for name in args.demos:
        work = Path(args.work) / name
        if args.run:
            run_demo(work, DEMOS[name])
        run = work / "results" / "demo"
        if not (run / "summary" / "folds.tsv").exists():
            print(f"{name}: no finished run at {run}; use --run", file=sys.stderr)
            continue
        info = json.loads((run / "provenance" / "run.json").read_text())
        runs[name] = {"seed": info["config"]["demo"]["seed"], "patients": info["config"]["demo"]["n_patients"],
                      "commit": (info["git"].get("commit") or "?")[:7] + ("+" if info["git"].get("dirty") else ""),
                      "written": info["written"][:16]}
        scores[name] = fold_scores(run)
    if not scores:
        raise SystemExit("no finished demo run; use --run")
    rows = compare(scores)
    cols = sorted({c for s in scores.values() for c in s if c.startswith(("block-", "coxnet-", "rsf-", "abmil-"))}
                  | {"merge", "merge-tuned", "fuse", "lego", "ensemble"})
    means = pd.DataFrame({n: s.reindex(columns=cols).mean().round(3) for n, s in scores.items()})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(markdown(rows, means, runs))
    rows = [{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()} for r in rows]  # NaN: null
    out.with_suffix(".json").write_text(json.dumps({"demos": runs, "targets": rows,
                                                    "means": json.loads(means.to_json())}, indent=1))
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
