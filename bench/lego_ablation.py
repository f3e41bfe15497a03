"""MM-Lego's blocks, merges and fuse on a finished run's prepared inputs, one setting changed at a
time: the measurements behind docs/lego_method.md (section 1).

It calls the pipeline's own steps (``train_block``, ``evaluate``, ``merge``, ``merge_tuned``,
``fuse``, the ensemble and the plain ABMIL baseline) for every fold, on the run's modality tables,
labels and folds, and prints each model's mean test and validation C over the folds. With no
override it reproduces the run's own blocks and variants to the last digit.

    snakemake --cores 2                                   # the demo, once
    python bench/lego_ablation.py --out /tmp/abl --neural # the paper's neural blocks, heads trained apart
    python bench/lego_ablation.py --out /tmp/s1 --neural --spec '{"seed": 1}' --what blocks,abmil
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from lego.config import load_config
from lego.evaluation.baseline_runs import run_ensemble
from lego.evaluation.scoring import EvalOptions
from lego.plan import Plan
from lego.steps.block_training import train_block
from lego.steps.fusing import fuse
from lego.steps.inference import evaluate
from lego.steps.merging import merge, merge_tuned
from lego.steps.model_training import train_model
from lego.steps.variants import select_variant

STEPS = ("blocks", "abmil", "merge", "tuned", "fuse", "ensemble", "lego")


def block_spec(plan: Plan, modality: str, args) -> dict:
    spec = {**plan.candidate_spec(modality, 0), **json.loads(args.spec)}
    if args.neural:  # the modality kind's own encoder (SNN for tables, ABMIL for slides), heads trained apart
        spec.update(encoder=plan.kind(modality).encoder, tied_head=False)
    return spec


def run_fold(plan: Plan, fold: int, out: Path, args) -> None:
    base = Path(plan.out)
    data = {m: plan.data_path(m) for m in plan.modalities}
    common = {"labels": str(base / "cohort/labels.parquet"), "folds": str(base / "cohort/folds.parquet")}
    ev = lambda d, name, dat: evaluate(str(d), dat, out_dir=str(out / f"eval/{name}/fold{fold}"), name=name, **common)  # noqa: E731
    dirs = []
    for m in plan.modalities:
        spec, d = block_spec(plan, m, args), out / f"blocks/{m}/fold{fold}"
        if "blocks" in args.what:
            train_block(m, plan.modalities[m]["kind"], data[m], fold=fold, task=plan.task, spec=spec, out_dir=str(d),
                        categorical=plan.modalities[m].get("categorical"), **common)
        dirs.append(str(d))
        ev(d, f"block-{m}", {m: data[m]})
        if plan.modalities[m]["kind"] == "wsi" and "abmil" in args.what:
            train_model("abmil", plan.modality_specs([m]), {m: data[m]}, fold=fold, task=plan.task, spec=spec,
                        out_dir=str(out / f"abmil-{m}/fold{fold}"), **common)
            ev(out / f"abmil-{m}/fold{fold}", f"abmil-{m}", {m: data[m]})
    model = plan.config["model"]
    if "merge" in args.what:
        merge(dirs, model["merge"]["method"], model["merge"]["head"], str(out / f"merge/fold{fold}"))
        ev(out / f"merge/fold{fold}", "merge", data)
    if "tuned" in args.what:
        merge_tuned(dirs, data, out_dir=str(out / f"merge-tuned/fold{fold}"), **common)
        ev(out / f"merge-tuned/fold{fold}", "merge-tuned", data)
    if "fuse" in args.what:
        spec = {"batch_size": model["train"]["batch_size"], **model["fuse"], **json.loads(args.fuse)}
        fuse(dirs, data, spec=spec, out_dir=str(out / f"fuse/fold{fold}"), **common)
        ev(out / f"fuse/fold{fold}", "fuse", data)
    if "ensemble" in args.what:
        run_ensemble([str(out / f"eval/block-{m}/fold{fold}/metrics.json") for m in plan.modalities], common["labels"],
                     common["folds"], EvalOptions(), str(out / f"eval/ensemble/fold{fold}"))
    if "lego" in args.what:
        select_variant([str(out / f"eval/{v}/fold{fold}/metrics.json") for v in ("merge-tuned", "merge", "fuse")],
                       str(out / f"eval/lego/fold{fold}"))


def report(out: Path) -> None:
    for model in sorted(p.name for p in (out / "eval").iterdir()):
        rows = [json.loads(f.read_text()) for f in sorted((out / "eval" / model).glob("fold*/metrics.json"))]
        test = [r["test"]["c_index"] for r in rows if r["test"].get("c_index") is not None]
        val = [r["val"]["c_index"] for r in rows if r["val"].get("c_index") is not None]
        print(f"{model:24s} test {np.mean(test):.3f}  val {np.mean(val):.3f}  folds " + " ".join(f"{t:.3f}" for t in test))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="config/config.yaml", help="the finished run's config")
    ap.add_argument("--out", required=True, help="a scratch folder for this try's models and metrics")
    ap.add_argument("--spec", default="{}", help="block settings to override, as JSON (e.g. '{\"seed\": 1}')")
    ap.add_argument("--neural", action="store_true", help="the paper's blocks: the kind's encoder, heads trained apart")
    ap.add_argument("--fuse", default="{}", help="fuse settings to override, as JSON")
    ap.add_argument("--what", default=",".join(STEPS), help=f"comma-separated steps among {', '.join(STEPS)}")
    ap.add_argument("--folds", default="0,1,2,3,4")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    plan = Plan(load_config(args.config))
    out = Path(args.out)
    for fold in (int(f) for f in args.folds.split(",")):
        run_fold(plan, fold, out, args)
    report(out)


if __name__ == "__main__":
    main()
