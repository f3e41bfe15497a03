"""The whole demo pipeline on this machine: wall time and peak memory, cold and fully cached.

Run by hand:  .venv/bin/python bench/bench_demo.py [--cold] [--cores 2]
Writes bench/results/demo_pipeline.json.

``--cold`` runs the demo from nothing in a temporary working directory (about 9 minutes on 2
cores); without it, the repository's finished demo run (`snakemake --cores 2` done before) is
used. Either way it then times `snakemake --cores N` with nothing to do and `snakemake -n`: a
finished run must answer in seconds. Each timing also records the CPU seconds of Snakemake's own
process (its scheduling, apart from its jobs). Peak memory is GNU time's maximum resident set
size, which covers Snakemake and the largest of its jobs.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


def timed(workdir: Path, *args: str) -> dict:
    cmd = ["/usr/bin/time", "-f", "MAXRSS_KB %M", SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory",
           str(workdir), "--configfile", str(REPO / "config" / "config.yaml"), *args]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=workdir)
    with ThreadPoolExecutor(1) as pool:  # reads the pipes while the run goes on (a full pipe would stall it)
        streams = pool.submit(proc.communicate)
        own_cpu = snakemake_own_cpu(proc)
        stdout, stderr = streams.result()
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"snakemake {' '.join(args)} failed:\n{stderr[-3000:]}")
    peak = int(stderr.rsplit("MAXRSS_KB", 1)[1].split()[0]) / 1024
    return {"wall_s": round(wall, 2), "peak_rss_mb": round(peak), "snakemake_own_cpu_s": own_cpu,
            "nothing_to_do": "Nothing to be done" in stdout + stderr}


def snakemake_own_cpu(proc: subprocess.Popen, every_s: float = 0.5) -> float | None:
    """CPU seconds of the Snakemake process itself, not of its jobs (the last reading before it
    exits, so up to ``every_s`` short). Why: on 2 cores its scheduling competes with the jobs; GNU
    time's totals cannot tell it apart from them. None where psutil cannot see it."""
    import psutil

    seen = None
    try:
        runner = psutil.Process(proc.pid)  # GNU time; Snakemake is its child
        while proc.poll() is None:
            children = runner.children()
            if children:
                times = children[0].cpu_times()
                seen = round(times.user + times.system, 1)
            time.sleep(every_s)
    except psutil.Error:
        pass
    return seen


def job_seconds(workdir: Path) -> dict[str, dict]:
    """Per rule: jobs, wall and CPU seconds of its jobs (their `benchmark:` files). Why: on 2 cores
    the run is CPU-bound, so where job seconds go is where the wall time goes."""
    import csv

    out: dict[str, dict] = {}
    for f in sorted((workdir / "results" / "demo" / "benchmarks").rglob("*.tsv")):
        rule = f.relative_to(workdir / "results" / "demo" / "benchmarks").parts[0].removesuffix(".tsv")
        row = next(csv.DictReader(f.open(), delimiter="\t"))
        r = out.setdefault(rule, {"jobs": 0, "wall_s": 0.0, "cpu_s": 0.0})
        r["jobs"] += 1
        r["wall_s"] = round(r["wall_s"] + float(row["s"]), 1)
        r["cpu_s"] = round(r["cpu_s"] + float(row["cpu_time"]), 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cold", action="store_true", help="run the demo from nothing first (about 9 minutes)")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--keep", type=Path, default=None,
                    help="with --cold: run in this (new) folder and keep it, e.g. to compare its summary with another run's")
    args = ap.parse_args()
    result = {"cores": args.cores}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = (args.keep or Path(tmp)) if args.cold else REPO
        workdir.mkdir(parents=True, exist_ok=True)
        if args.cold:
            result["cold"] = timed(workdir, "--cores", str(args.cores))
            result["cold"]["job_seconds_by_rule"] = job_seconds(workdir)
        result["cached_run"] = timed(workdir, "--cores", str(args.cores))
        result["cached_dry_run"] = timed(workdir, "-n")
    if not result["cached_run"]["nothing_to_do"]:
        raise SystemExit("the finished demo still had work to do; run `snakemake --cores 2` first")
    write_result("demo_pipeline", result)


if __name__ == "__main__":
    main()
