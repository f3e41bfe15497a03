"""DAG scale: how long `snakemake -n` takes, and how much memory it needs, as a cohort grows.

Run by hand:  .venv/bin/python bench/bench_dag.py [--slides 100 1000 5000]
Writes bench/results/dag_scale.json.

For each size a synthetic cohort is written to a temporary folder: N slides as empty placeholder
files (one per patient, TCGA-style names), an outcome table, three tabular modalities and one WSI
modality, 5 folds. The slide index (a checkpoint) is built first -- it lists files, it never opens
them -- and then `snakemake -n` is timed with its peak memory (GNU time's maximum resident set size).
SLURM submissions are counted from the dry run's job table: one per job without grouping; with the
profile's grouping (segment/extract/embed of 25 slides per job) the per-slide jobs collapse into
ceil(N / 25) group jobs.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
PER_SLIDE = ("segment_tissue", "extract_patches", "embed_patches")
GROUP_SIZE = 25  # slurm/config.yaml: group-components slide=25


def make_cohort(root: Path, n: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    ids = [f"TCGA-{i // 10000:02d}-{i % 10000:04d}" for i in range(n)]
    slides = root / "slides"
    slides.mkdir(parents=True)
    for pid in ids:
        (slides / f"{pid}-01Z-00-DX1.svs").touch()
    labels = pd.DataFrame({"case_id": ids, "survival_months": rng.uniform(1, 100, n), "censorship": rng.integers(0, 2, n)})
    labels.to_csv(root / "clinical.csv", index=False)
    modalities = {"wsi": {"kind": "wsi", "encoder": "stain_texture"}}
    for m in ("rna", "cnv", "clin"):
        table = pd.DataFrame(rng.normal(size=(n, 8)), columns=[f"{m}{k}" for k in range(8)])
        table.insert(0, "case_id", ids)
        table.to_csv(root / f"{m}.csv", index=False)
        modalities[m] = {"kind": "tabular", "path": str(root / f"{m}.csv")}
    config = {
        "results_dir": str(root / "results"),
        "cohort": {"name": "scale", "task": "survival",
                   "labels": {"path": str(root / "clinical.csv"), "id_column": "case_id",
                              "time_column": "survival_months", "censorship_column": "censorship"}},
        "slides": {"dir": str(slides)},
        "modalities": modalities,
        "folds": {"n_folds": 5},
    }
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    return root / "config.yaml"


def run(root: Path, *args: str) -> tuple[subprocess.CompletedProcess, float, float]:
    """(process, wall seconds, peak RSS of the snakemake process in MB, from GNU time)."""
    cmd = ["/usr/bin/time", "-f", "MAXRSS_KB %M", SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory",
           str(root), "--configfile", str(root / "config.yaml"), *args]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"snakemake {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    peak_kb = int(proc.stderr.rsplit("MAXRSS_KB", 1)[1].split()[0])
    return proc, wall, peak_kb / 1024


def job_counts(text: str) -> dict[str, int]:
    table = text.split("Job stats:", 1)[1].splitlines()[3:]
    counts = {}
    for line in table:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--slides", type=int, nargs="+", default=[100, 1000, 5000])
    args = ap.parse_args()
    rows = []
    for n in args.slides:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            make_cohort(root, n)
            _, index_wall, _ = run(root, "--cores", "1", str(root / "results" / "scale" / "cohort" / "slides.parquet"))
            proc, wall, peak = run(root, "-n", "--quiet", "rules")
            jobs = job_counts(proc.stdout + proc.stderr)
            total = jobs.pop("total")
            per_slide = sum(jobs.get(r, 0) for r in PER_SLIDE)
            local = jobs.get("all", 0)
            row = {"slides": n, "modalities": 4, "folds": 5, "jobs": total, "dry_run_s": round(wall, 2),
                   "dry_run_peak_mb": round(peak), "index_slides_s": round(index_wall, 2),
                   "submissions_ungrouped": total - local,
                   "submissions_grouped": total - local - per_slide + math.ceil(n / GROUP_SIZE), "jobs_by_rule": jobs}
            print(row)
            rows.append(row)
    write_result("dag_scale", {"group_size": GROUP_SIZE, "rows": rows})


if __name__ == "__main__":
    main()
