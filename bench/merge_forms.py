"""Why the paper's merge trails the ensemble: the same saved blocks merged by every latent form.

LegoMerge's latent forms (``model.merge.method``) applied to a finished run's own blocks, fold by
fold, each scored on the fold's test patients and paired with the run's ensemble (the average of
the same blocks' predictions): the paper's ``harmonic`` merge (harmonic mean of the magnitudes,
circular mean of the phases), ``mean`` and ``sum`` of the complex latents, and ``readout`` (each
block's latent read by its own head, the logits averaged; uncentred, as the training-free merge
takes no data). Nothing is trained or chosen, so
the differences are the merge forms' alone. The replayed form of the run's own ``merge`` must
reproduce the run's scores (checked, fold by fold). Only Harrell's C is read.

Runs: the demos of bench/demo_seeds.py (``--demo-work``, one folder per demo holding its
config.yaml) and the longitudinal cohorts with Coxnet-wrapped table blocks
(config/longitudinal/<c>.yaml, results in results/). Run them first; then
``python bench/merge_forms.py``. Writes bench/results/merge_forms.{md,json}; the models and scores
go to a scratch folder (``--scratch``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paper_table import paired_pooled  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FORMS = ("harmonic", "mean", "sum", "readout")
LONGITUDINAL = ("aids", "csl", "heartvalve", "epileptic")


def runs(demo_work: Path) -> dict[str, tuple[Path, Path]]:
    """name -> (workflow directory, config) of every finished run to replay."""
    found = {f"demo {d.name}": (d, d / "config.yaml") for d in sorted(demo_work.glob("*"))
             if (d / "config.yaml").exists() and (d / "results" / "demo" / "summary").exists()}
    found |= {c: (ROOT, ROOT / "config" / "longitudinal" / f"{c}.yaml") for c in LONGITUDINAL
              if (ROOT / "results" / f"longitudinal_{c}" / "summary").exists()}
    return found


def replay(workdir: Path, config: Path, scratch: Path) -> dict[str, list[float]]:
    """Each form's test C per fold on the run's blocks, beside the run's ensemble."""
    from lego.config import load_config
    from lego.plan import Plan
    from lego.steps.inference import evaluate
    from lego.steps.merging import merge

    here = Path.cwd()
    os.chdir(workdir)  # the run's paths are relative to its workflow directory
    try:
        plan = Plan(load_config(str(config)))
        base, head, own = Path(plan.out), plan.config["model"]["merge"]["head"], plan.config["model"]["merge"]["method"]
        data = {m: plan.data_path(m) for m in plan.modalities}
        cohort = {"labels": str(base / "cohort/labels.parquet"), "folds": str(base / "cohort/folds.parquet")}
        scores: dict[str, list[float]] = {f: [] for f in (*FORMS, "ensemble")}
        for k in plan.folds:
            blocks = [str(base / f"blocks/{m}/fold{k}") for m in plan.modalities]
            for form in FORMS:
                d = scratch / form / f"fold{k}"
                merge(blocks, form, head, str(d / "model"))
                scores[form].append(evaluate(str(d / "model"), data, out_dir=str(d / "eval"), name=form,
                                             **cohort)["test"]["c_index"])
            saved = json.loads((base / f"eval/ensemble/fold{k}/metrics.json").read_text())
            scores["ensemble"].append(saved["test"]["c_index"])
            run_merge = json.loads((base / f"eval/merge/fold{k}/metrics.json").read_text())["test"]["c_index"]
            if own in FORMS and abs(run_merge - scores[own][-1]) > 1e-9:
                raise SystemExit(f"{workdir}: the replayed {own} merge of fold {k} scores {scores[own][-1]}, the run's "
                                 f"{run_merge}: the run's blocks or code changed since; rerun it")
        return scores
    finally:
        os.chdir(here)


def tables(results: dict[str, dict[str, list[float]]]) -> tuple[list[dict], list[dict]]:
    """(mean test C per run and form, paired differences per group of runs)."""
    means = [{"run": r, **{f: round(float(np.mean(v)), 4) for f, v in s.items()}} for r, s in results.items()]
    diffs = []
    groups = {"demos": [r for r in results if r.startswith("demo ")],
              "longitudinal": [r for r in results if not r.startswith("demo ")]}
    for group, names in groups.items():
        for a, b in [(f, "ensemble") for f in FORMS] + [("harmonic", "readout")]:
            if names:
                d = paired_pooled([pd.DataFrame(results[r]) for r in names], a, b)
                diffs.append({"runs": group, "comparison": f"{a} - {b}", **d})
    return means, diffs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo-work", default=str(ROOT / "results" / "demo_seeds"), help="bench/demo_seeds.py's --work")
    ap.add_argument("--scratch", default=None, help="where the merged models go (default: a temporary folder)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "merge_forms"))
    args = ap.parse_args()
    found = runs(Path(args.demo_work).resolve())  # replay() changes into each run's directory
    if not found:
        raise SystemExit("no finished run to replay; run bench/demo_seeds.py --run or a config/longitudinal config")
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(args.scratch or tmp).resolve()
        results = {name: replay(wd, cfg, scratch / name.replace(" ", "_")) for name, (wd, cfg) in found.items()}
    means, diffs = tables(results)
    fmt = lambda d: f"{d['diff']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"  # noqa: E731
    md = "\n".join(["## Test C-index, mean over folds", pd.DataFrame(means).to_markdown(index=False),
                    "\n## Paired per fold (mean, 95 % t-interval)",
                    pd.DataFrame([{"runs": d["runs"], "comparison": d["comparison"], "folds": d["n"],
                                   "difference": fmt(d)} for d in diffs]).to_markdown(index=False)]) + "\n"
    out = Path(args.out)
    out.with_suffix(".md").write_text(md)
    out.with_suffix(".json").write_text(json.dumps({"scores": results, "means": means, "paired": diffs}, indent=1))
    print(md)


if __name__ == "__main__":
    main()
