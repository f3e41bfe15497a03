"""The demo's heatmaps stage, before and after a change: every heatmap of a finished demo redrawn.

Run by hand, after the demo (`snakemake --cores 2`) has finished in each working directory:

    .venv/bin/python bench/bench_heatmaps.py --rounds 2 \\
        --run before=/work/old_checkout:/work/old_checkout /work/main:/work/main

Each ``--run`` is ``[LABEL=]CODE:WORKDIR``: a checkout of the code (its Snakefile and config, and
its ``lego`` package through PYTHONPATH, so an older commit runs its own code) and a working
directory holding a finished demo under ``results/demo`` (each code needs its own: the rule's
outputs and Snakemake's records differ between versions). The runs take turns, round by round, so
a drift in the machine's speed reaches each alike. Writes bench/results/heatmaps_stage.json.

Why a stage benchmark: the heatmaps rule was the demo's third-costliest by CPU (15 jobs, one per
model and fold, before it drew a model's folds in one job); its before/after is measured here in
minutes, where a cold demo takes 13-28 and moves by more than the change between hours.
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


def parse_run(text: str) -> tuple[str, Path, Path]:
    label, _, rest = text.rpartition("=")
    code, sep, work = rest.partition(":")
    if not sep:
        raise SystemExit(f"--run {text!r}: give [LABEL=]CODE:WORKDIR")
    return label or Path(code).name, Path(code).resolve(), Path(work).resolve()


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def redraw(code: Path, work: Path, cores: int) -> dict:
    """Force every heatmap folder of the finished demo in ``work`` to be drawn again, timed."""
    targets = sorted(str(p.relative_to(work)) for p in (work / "results" / "demo" / "heatmaps").glob("*/fold*"))
    if not targets:
        raise SystemExit(f"{work}: no results/demo/heatmaps/<model>/fold<k>; run the demo there first")
    cmd = [SNAKEMAKE, "--snakefile", str(code / "Snakefile"), "--directory", str(work), "--configfile",
           str(code / "config" / "config.yaml"), "--cores", str(cores), "--forcerun", "heatmaps", *targets]
    env = {**os.environ, "PYTHONPATH": str(code)}
    started, cpu0, t0 = time.time(), children_cpu(), time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=work, env=env)
    wall, cpu = time.perf_counter() - t0, children_cpu() - cpu0
    if proc.returncode:
        raise SystemExit(f"{code}: snakemake failed:\n{proc.stderr[-3000:]}")
    bench = sorted((work / "results" / "demo" / "benchmarks" / "heatmaps").rglob("*.tsv"))
    fresh = [f for f in bench if f.stat().st_mtime >= started - 1]  # this run's jobs, not older layouts' files
    return {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "jobs": len(fresh),
            "benchmark_files_cpu_s": round(sum(map(benchmark_cpu, fresh)), 1), "folders": len(targets)}


def benchmark_cpu(path: Path) -> float:
    """A job's CPU seconds as its Snakemake ``benchmark:`` file says: an undercount for longer jobs
    (a 5-fold heatmaps job: 15 s there, 28 s by GNU time), so ``cpu_s`` (the children's rusage:
    Snakemake and every job) is the figure to quote."""
    with path.open() as f:
        return float(next(csv.DictReader(f, delimiter="\t"))["cpu_time"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", nargs="+", required=True, metavar="[LABEL=]CODE:WORKDIR")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--out", default="heatmaps_stage")
    args = ap.parse_args()
    runs = [parse_run(r) for r in args.run]
    got: dict[str, list[dict]] = {label: [] for label, _, _ in runs}
    for _ in range(args.rounds):
        for label, code, work in runs:
            got[label].append(redraw(code, work, args.cores))
            print(label, got[label][-1], flush=True)
    summary = {label: {k: statistics.median(r[k] for r in rs) for k in ("wall_s", "cpu_s", "jobs")}
               for label, rs in got.items()}
    commits = {label: subprocess.run(["git", "-C", str(code), "rev-parse", "--short", "HEAD"], capture_output=True,
                                     text=True).stdout.strip() for label, code, _ in runs}
    write_result(args.out, {"what": "the demo's heatmaps redrawn (snakemake --forcerun heatmaps), runs in turns",
                            "cores": args.cores, "rounds": args.rounds, "commits": commits, "runs": got,
                            "median": summary})


if __name__ == "__main__":
    main()
