"""Real-cohort device parity: retrain a finished run's block candidates on another device and compare.

Run by hand:  python bench/bench_gpu_parity.py results/paper_ucec_published --fold 0 [--device cuda]
Writes bench/results/gpu_parity.json (gpu_parity_gpu.json on a GPU).

For every block candidate of the fold (``blocks/<modality>/fold<k>/candidates/c<i>``), the spec is
rebuilt from the candidate's saved ``config.json`` and the block is retrained with
``lego.steps.block_training.train_block`` on the CPU and on ``--device``; the saved (pipeline-trained)
candidate and both retrained ones are evaluated with ``lego.steps.inference.evaluate`` on the fold's test
patients. The CPU retrain reproduces a candidate saved by the same code exactly (that checks the
rebuilt spec); a GPU retrain must learn the same thing: test C, best epoch and validation loss
side by side, with the Spearman correlation of the CPU and GPU models' test risks.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402


def rebuilt_spec(config: dict) -> dict:
    """The train-block spec that produced a saved candidate (architecture, training, bins)."""
    from lego.steps.block_training import ARCH_KEYS, TRAIN_KEYS

    spec = {k: config["block"][k] for k in ARCH_KEYS if k in config["block"]}
    spec.update({k: v for k, v in config["train"].items() if k in TRAIN_KEYS})
    if config["task"] == "survival":
        spec["n_bins"] = len(config["bins"]) - 1
    return spec


def categorical(config: dict) -> list[str]:
    return sorted((config.get("preprocess") or {}).get("transform", {}).get("categorical") or [])


def one_candidate(run: Path, cand: Path, device: str, tmp: Path) -> dict:
    """Retrain one candidate on the CPU and on ``device``; evaluate the saved and retrained models."""
    import pandas as pd
    from scipy.stats import spearmanr

    from lego.steps.block_training import train_block
    from lego.steps.inference import evaluate

    config = json.loads((cand / "config.json").read_text())
    m, fold = config["modality"], config["fold"]
    data = {m: str(run / "modalities" / f"{m}.parquet")}
    labels, folds = str(run / "cohort" / "labels.parquet"), str(run / "cohort" / "folds.parquet")
    dirs, hist, seconds = {"saved": cand}, {"saved": json.loads((cand / "history.json").read_text())}, {}
    for dev in dict.fromkeys(["cpu", device]):
        dirs[dev] = tmp / m / cand.name / dev
        t0 = time.perf_counter()
        hist[dev] = train_block(m, config["modality_kind"], data[m], labels=labels, folds=folds, fold=fold, task=config["task"],
                                spec=rebuilt_spec(config), out_dir=str(dirs[dev]), categorical=categorical(config) or None, device=dev)
        seconds[dev] = round(time.perf_counter() - t0, 2)
    row = {"modality": m, "candidate": cand.name, "encoder": config["block"]["encoder"], "train_seconds": seconds}
    risk = {}
    for tag, d in dirs.items():
        ev = tmp / "eval" / m / cand.name / tag
        row[f"test_c_{tag}"] = evaluate(str(d), data, labels=labels, folds=folds, out_dir=str(ev), name=tag)["test"]["c_index"]
        row[f"val_loss_{tag}"] = round(hist[tag]["best_val_loss"], 5)
        row[f"best_epoch_{tag}"] = hist[tag]["best_epoch"]
        risk[tag] = pd.read_parquet(ev / "predictions.parquet").query("subset == 'test'").set_index("patient_id")["risk"]
    if device != "cpu":
        rho = spearmanr(risk["cpu"], risk[device].loc[risk["cpu"].index]).statistic
        row[f"test_risk_spearman_cpu_vs_{device}"] = round(float(rho), 4)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a finished run's results folder (e.g. results/paper_ucec_published)")
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--device", default="auto", help="auto (CUDA when visible), cpu or cuda")
    ap.add_argument("--modalities", nargs="*", help="only these modalities (default: every block of the fold)")
    args = ap.parse_args()

    from lego.device import resolve_device

    cands = sorted(args.run.glob(f"blocks/*/fold{args.fold}/candidates/c*"))
    if args.modalities:
        cands = [c for c in cands if c.parts[-4] in args.modalities]
    if not cands:
        sys.exit(f"no block candidates under {args.run}/blocks/*/fold{args.fold}/candidates; run the workflow first")
    device = str(resolve_device(args.device))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for cand in cands:
            rows.append(one_candidate(args.run, cand, device, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
    summary = {"run": args.run.name, "fold": args.fold, "device": device, "candidates": rows}
    for tag in dict.fromkeys(["saved", device]):
        gaps = [abs(r[f"test_c_{tag}"] - r["test_c_cpu"]) for r in rows]
        summary[f"max_abs_test_c_gap_{tag}_vs_cpu"] = round(max(gaps), 4)
        summary[f"mean_abs_test_c_gap_{tag}_vs_cpu"] = round(sum(gaps) / len(gaps), 4)
    write_result("gpu_parity", summary)


if __name__ == "__main__":
    main()
